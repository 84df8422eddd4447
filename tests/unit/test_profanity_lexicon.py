"""The packaged agent-profanity lexicon: the mild swears of the fifth tuning fire, their look-alikes do not.

Through the real detection engine with the packaged rules (lexicon only: the profanity rule has
no semantic examples, so no model is loaded). The look-alikes are the reason each phrase is
written the way it is: "he'll" tokenises as "hell", "assess" contains "ass".
"""

from __future__ import annotations

import pytest

from streamproc.detect.engine import CallInfo, DetectionEngine
from tests.unit.test_detection_quality import _segment
from tests.unit.test_intents_quality import lexicon_only_rules


@pytest.fixture(scope="module")
def engine():
    rules = lexicon_only_rules()
    return DetectionEngine(lambda: rules)


def _fired(engine, text: str, speaker: str = "agent") -> bool:
    # one call per line: the rule's cooldown would hide a second alert in the same call
    alerts = engine.on_transcript(_segment(f"call-{text}", speaker, 0, text), CallInfo(), now=0.0).alerts
    return any(a.rule_id == "agent-profanity" for a in alerts)


@pytest.mark.parametrize("text", [
    "hell no we don't charge for that",
    "dammit the call keeps dropping",
    "damn it the system's down again",
    "goddammit not this again",
    "well that's a right balls up isn't it",
    "someone's ballsed up your order",
    "that's a load of balls and you know it",
    "what a load of old shite",
    "i can't be arsed with this today",
    "you're taking the piss now",
    "i'm getting pissed off with this line",
    "he's a right tosser that engineer",
    "jesus christ how long is this going to take",
    "for christ's sake just read the screen",
    "it took a hell of a long time",
    "bloody hell that's a big bill",
    "cover your ass and read the terms",
    "the effing system crashed again",
    # eighth tuning: mild swears and the recogniser's spellings of them
    "oh balls the payment bounced",
    "balls to it i'll do it by hand",
    "the delivery driver's a total dick",
    "what a knob that courier is",
    "dam it the screen froze",
    "ah sh it wrong customer",
    "holy shid look at that balance",
    "this feckin system",
    "the friggin page won't load",
    # fourteenth tuning
    "sod that i'll ring the depot myself",
    "ah hell it's logged me out",
    "oh frig the screen's frozen",
    "frig it i'll key it in manually",
    "the rota's a total clusterfuck this week",
    "ag kak the system is slow today",
    "the kak system dropped your call",
    "some bast ards nicked the parcel off the van",
    "bull shit that's what the form says",
    # fifteenth tuning
    "the booking system's gone tits up again",
    "what a cock up with the invoices",
    "god dam this headset",
    "bleeding hell the line's dropped",
    "oh for fox sake it's frozen",
    # sixteenth tuning: the recogniser's splits of one listed word (joined_pieces: 3)
    "that's a load of bull sh it",
    "oh sh ite the line's gone",
    "the courier was a right ass hole about it",
    "what a dick head that driver is",
    "this screen's an absolute bawbag",
    # seventeenth tuning: other Englishes' and languages' swears, and "frig in" joined
    "tabarnak the app froze",
    "fok the line is bad today",
    "ah bollix it's crashed",
    "this chutiya printer again",
    "bumbaclot this computer is slow",
    "the frig in system logged me out",
    "this knob end of a scanner",
    # eighteenth tuning
    "merde the form has cleared",
    "kurwa this headset again",
    "verdomme the login timed out",
    "puta madre what a queue",
    "puta ng ina the system crashed",
    # twenty-fifth tuning: Nordic, Finnish, Icelandic, Romanian, Hungarian, Balkan, Indonesian and East Asian swears
    "helvete, the booking screen is blank",
    "perkele this laptop",
    "the fjandinn card reader won't connect",
    "la naiba, the form reset itself",
    "bazmeg the queue is huge",
    "jebiga the headset died on me",
    "bangsat the app froze again",
    "cao ni ma this keyboard",
    "dracului printer",
    # twenty-sixth tuning: Estonian, Bulgarian, Thai, Haitian Creole, Basque, Persian, Swahili and "sod" as an insult
    "kuradi printer, sorry",
    "mamka ti, the portal logged me out",
    "ai kwai, the screen froze",
    "tonnè kraze, the card reader again",
    "kaka zaharra this app",
    "koskesh keyboard",
    "msenge scanner won't read it",
    "sit down you silly sod",
])
def test_mild_swears_fire(engine, text):
    assert _fired(engine, text)


@pytest.mark.parametrize("text", [
    "he'll be with you between eight and one",
    "oh he'll be right with you",
    "he'll know by tomorrow",
    "we'll assess the damage on monday",
    "the class assessment is attached",
    "your assets are protected",
    "i'll pass it to the billing team",
    "the ball is in your court now",
    "he plays for the local club on sundays",
    "we're based in scunthorpe",
    "the dam on the river burst",
    "i'm watching a show about christmas",
    "hello is anyone there",
    "the shell of the router is cracked",
    "that's a cocktail of issues",
    "we sell tennis balls and rackets",
    "your order from dick's sporting goods has shipped",
    "the knob on the boiler is stiff",
    "sod's law it rained on the install day",
    "the fridge is covered by the warranty",
    "the cluster of outages is in the north",
    "we'll bug fix that in the next release",
    "the bass guitar ships on friday",
    "the bull was in the field so the engineer couldn't reach the pole",
    "your khaki trousers are back in stock",
    "the cock of the tap is stiff so turn it slowly",
    "the dam project got approval from god knows who",
    "the bleeding stopped after the first aid so the claim is closed",
    "the fox got into the chicken run",
    "we'll as sess the claim tomorrow",
    "the cock tail menu is on the website",
    "i'll pass it on to the team",
    "she said it's fine. it was the shipping",
    # seventeenth tuning's words: whole words only
    "the tabernacle choir tickets are in the post",
    "the fokker model plane kit shipped monday",
    "the door knob on the end unit is loose",
    "the fridge is in the back",
    "the merdeka day sale ends sunday",
    "the putt on the ninth green was short",
    # twenty-first tuning's Afrikaans words: exactly, whole words only
    "the kakadu tour is booked for june",
    "the kaka parrot exhibit is closed",
    # twenty-fifth tuning's words: left out where they are also names, places or ordinary words
    "satans little helper is a christmas film",
    "the paska bread order is for easter saturday",
    "randi from accounts will call you back",
    "the mavi jeans are in the sale",
    "the ferry to diu leaves at nine",
    "the catering order for friday is confirmed",
    "the du maurier novel has shipped",
    "kapil sibal gave the talk",
    # twenty-sixth tuning's words: only their set phrases
    "the kaka parrot exhibit reopens in spring",
    "the turf is laid, the sod needs watering",
    "the lazy susan and the silly putty are both in the order",
    "the ai assistant can book it for you",
    "the tonne of gravel arrives friday",
    "the bridge on the river kwai is on tonight",
    # twenty-seventh tuning: "sod" after "you" is a verb as often as an insult
    "did you sod the lawn yourself or was it the landscaper",
])
def test_look_alikes_do_not_fire(engine, text):
    assert not _fired(engine, text)


def test_the_customer_swearing_is_not_agent_profanity(engine):
    assert not _fired(engine, "hell no i'm not paying that", speaker="customer")
