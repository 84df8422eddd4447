"""The ninth tuning's lexicon entries for legal threat, repeat contact, churn and abuse: they fire on the
kinds they were written for, and the words around them keep their look-alikes out.

Through the real detection engine with the packaged rules' lexicons alone (``lexicon_only_rules``:
no semantic head, so no veto and no model); whether the head then vetoes a match is measured by
``bench/intents_dev.py --loro``, not here.
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


def _fired(engine, rule: str, text: str) -> bool:
    # one call per line: the rule's cooldown would hide a second alert in the same call
    alerts = engine.on_transcript(_segment(f"call-{text}", "customer", 0, text), CallInfo(), now=0.0).alerts
    return any(a.rule_id == rule for a in alerts)


@pytest.mark.parametrize(("rule", "text"), [
    ("legal-threat", "i'm taking legal advice on this first thing monday"),
    ("legal-threat", "i've hired a solicitor to deal with you people"),
    ("legal-threat", "i'll put it through money claim online then"),
    ("legal-threat", "consider this call a letter before action"),
    ("legal-threat", "we can let a judge decide who owes who"),
    ("legal-threat", "i'm going to the energy on budsman"),
    ("repeat-contact", "this is attempt number four at getting it fixed"),
    ("repeat-contact", "my third attempt at a refund"),
    ("repeat-contact", "i've sent the photos three times already"),
    ("repeat-contact", "we've had four engineers and it still doesn't work"),
    ("churn-intent", "i want to end the finance and be done with you"),
    ("churn-intent", "i'll hand the car back tomorrow"),
    ("churn-intent", "can cell my account please"),
    ("churn-intent", "can sell the a count"),
    ("churn-intent", "please terminate the hire purchase"),
    ("customer-abuse", "you gormless twit"),
    ("customer-abuse", "you're clearly clueless"),
    ("customer-abuse", "why do i always get a muppet like you"),
    ("customer-abuse", "you're just too thick to understand it"),
    ("customer-abuse", "ask the village idiot next to you"),
    ("customer-abuse", "you are such a more on"),
])
def test_fires(engine, rule, text):
    assert _fired(engine, rule, text)


@pytest.mark.parametrize(("rule", "text"), [
    ("legal-threat", "i'm a solicitor and i'm ringing about my own broadband"),
    ("legal-threat", "the judge was lovely at my jury service"),
    ("repeat-contact", "take two tablets three times a day"),
    ("repeat-contact", "is that the first attempt at delivery or the second"),
    ("churn-intent", "we can sell you a bigger bundle if you like"),
    ("churn-intent", "i need to hand the keys back to the letting agent"),
    ("customer-abuse", "the walls are too thick to get a signal"),
    ("customer-abuse", "i'm clueless with this app"),
    ("customer-abuse", "tell me more on the new tariff"),
])
def test_look_alikes_do_not_fire(engine, rule, text):
    assert not _fired(engine, rule, text)
