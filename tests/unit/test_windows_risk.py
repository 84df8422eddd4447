"""Said/not-said windows and the call risk score, through the real detection engine."""

from __future__ import annotations

import pytest

from streamproc.detect.engine import CallInfo, DetectionEngine
from streamproc.detect.risk import RiskState
from streamproc.detect.rules_ext import RiskRule
from streamproc.rules import RulesError, parse_rules
from streamproc.schemas import AlertKind, Speaker, TranscriptSegment

RULES = parse_rules(
    """
version: 1
detection:
  phrases:
    - {id: mgr, kind: escalation, category: manager_request, speaker: customer, severity: warning, cooldown_s: 0,
       phrases: ["speak|talk to * manager|supervisor"]}
    - {id: repeat, kind: escalation, category: repeat_contact, speaker: customer, severity: info, phrases: ["third time"]}
    - {id: abuse, kind: customer_abuse, speaker: customer, severity: warning, phrases: ["idiot"]}
  windows:
    - id: greeting
      severity: info
      within_s: 20
      cue: {speaker: agent, phrases: ["thank you for calling", "my name is"]}
    - id: apology
      severity: warning
      after: trigger
      within_s: 60
      trigger: {speaker: customer, phrases: ["unacceptable", "complaint"]}
      cue: {speaker: agent, phrases: ["sorry", "apologise|apologize"]}
    - id: no-price-early
      severity: info
      expect: not_said
      within_s: 30
      cue: {speaker: agent, phrases: ["price goes up"]}
  risk:
    - id: risk
      severity: warning
      threshold: 50
      hold_full_s: 100
      weights: {hold: 30, sentiment: 20, escalation: 15, abuse: 15, repeat_contact: 15, dead_air: 10, missed_window: 5}
"""
)


def seg(text, speaker, start, *, utterance=0, final=True, call="c1"):
    return TranscriptSegment(
        segment_id=TranscriptSegment.make_id(call, speaker, utterance, 0, final), call_id=call, speaker=Speaker(speaker),
        utterance=utterance, is_final=final, text=text, start_s=start, end_s=start + 2.0,
    )


@pytest.fixture
def engine():
    return DetectionEngine(lambda: RULES)


def kinds(alerts):
    return [(a.rule_id, a.kind) for a in alerts]


def test_greeting_said_in_time_raises_nothing(engine):
    alerts = engine.on_transcript(seg("hello thank you for calling my name is ana", "agent", 1.0), None, 0).alerts
    alerts += engine.on_transcript(seg("i have a question", "customer", 30.0, utterance=1), None, 0).alerts
    assert ("greeting", AlertKind.missed_phrase) not in kinds(alerts)


def test_greeting_missing_fires_when_the_window_closes(engine):
    assert engine.on_transcript(seg("yeah what do you want", "agent", 1.0), None, 0).alerts == []
    later = engine.on_transcript(seg("i have a question", "customer", 25.0, utterance=1), None, 0).alerts
    missed = [a for a in later if a.rule_id == "greeting"]
    assert len(missed) == 1 and missed[0].kind == AlertKind.missed_phrase
    assert missed[0].evidence.audio_start_s == 0 and missed[0].evidence.audio_end_s == 20
    # once per call
    assert not [a for a in engine.on_transcript(seg("ok", "customer", 40.0, utterance=2), None, 0).alerts if a.rule_id == "greeting"]


def test_greeting_said_too_late_still_missed(engine):
    alerts = engine.on_transcript(seg("thank you for calling", "agent", 22.0), None, 0).alerts
    assert [a.rule_id for a in alerts if a.kind == AlertKind.missed_phrase] == ["greeting"]


def test_apology_after_complaint(engine):
    engine.on_transcript(seg("thank you for calling", "agent", 1.0), None, 0)
    engine.on_transcript(seg("this is unacceptable", "customer", 10.0, utterance=1), None, 0)
    engine.on_transcript(seg("let me look", "agent", 20.0, utterance=2), None, 0)
    alerts = engine.on_transcript(seg("ok", "customer", 80.0, utterance=3), None, 0).alerts
    missed = [a for a in alerts if a.rule_id == "apology"]
    assert len(missed) == 1 and missed[0].evidence.text == "this is unacceptable" and missed[0].occurrence == 1
    assert missed[0].evidence.audio_start_s == 12.0 and missed[0].evidence.audio_end_s == 72.0
    # a second complaint answered with an apology: no alert
    engine.on_transcript(seg("i want to make a complaint", "customer", 90.0, utterance=4), None, 0)
    engine.on_transcript(seg("i'm so sorry about that", "agent", 100.0, utterance=5), None, 0)
    alerts = engine.on_transcript(seg("thanks", "customer", 200.0, utterance=6), None, 0).alerts
    assert not [a for a in alerts if a.rule_id == "apology"]


def test_the_same_utterance_as_partial_and_final_opens_one_window(engine):
    engine.on_transcript(seg("this is unacceptable", "customer", 10.0, utterance=1, final=False), None, 0)
    engine.on_transcript(seg("this is unacceptable", "customer", 10.0, utterance=1, final=True), None, 0)
    alerts = engine.on_tick(lambda _: CallInfo(started_at=1000.0), 1000.0 + 200)
    assert len([a for a in alerts if a.rule_id == "apology"]) == 1


def test_not_said_fires_when_said_inside_the_window(engine):
    alerts = engine.on_transcript(seg("and the price goes up next month", "agent", 5.0), None, 0).alerts
    assert ("no-price-early", AlertKind.window_phrase) in kinds(alerts)
    late = engine.on_transcript(seg("the price goes up", "agent", 50.0, utterance=1), None, 0).alerts
    assert ("no-price-early", AlertKind.window_phrase) not in kinds(late)


def test_window_closes_on_the_timer_and_not_for_a_short_call(engine):
    engine.on_transcript(seg("yes", "agent", 1.0), None, 0)
    assert engine.on_tick(lambda _: CallInfo(started_at=1000.0), 1010.0) == []
    alerts = engine.on_tick(lambda _: CallInfo(started_at=1000.0), 1021.0)
    assert [a.rule_id for a in alerts if a.kind == AlertKind.missed_phrase] == ["greeting"]
    other = DetectionEngine(lambda: RULES)
    other.on_transcript(seg("yes", "agent", 1.0, call="c2"), None, 0)
    assert other.on_tick(lambda _: CallInfo(started_at=1000.0, ended=True), 1005.0) == []  # ended before 20 s


def test_windows_shape_is_validated_with_line_numbers():
    with pytest.raises(RulesError) as err:
        parse_rules("version: 1\ndetection:\n  windows:\n    - id: w\n      severity: info\n      after: trigger\n      within_s: 10\n      cue: {phrases: [sorry]}\n")
    assert "line 4" in str(err.value) and "trigger" in str(err.value)
    with pytest.raises(RulesError) as err:
        parse_rules("version: 1\ndetection:\n  windows:\n    - id: w\n      severity: info\n      within_s: 10\n      cue: {speaker: agent}\n")
    assert "line 7" in str(err.value)


def test_risk_score_formula():
    rule = RiskRule(id="r", severity="warning", threshold=50, hold_full_s=100)
    state = RiskState()
    state.hold_s = 50
    for s in (0.0, -0.1, -0.2):  # falling by 0.1 per utterance: half of sentiment_slope_full (0.2)
        state.add_sentiment(s)
    score, factors = state.score(rule)
    assert factors["hold"] == 15 and factors["sentiment"] == 10 and score == 25
    state.hold_s = 1000
    assert state.score(rule)[1]["hold"] == 45  # capped at 1.5 x the weight


@pytest.mark.parametrize(
    ("scores", "points"),
    [
        ((-0.5, -0.5), 0.0),  # fewer than 3 finals: no trend yet
        ((-0.6, -0.6, -0.6, -0.6), 0.0),  # steadily negative: a level, not a trend (negative_sentiment's job)
        ((-0.8, -0.4, 0.0), 0.0),  # angry but calming down
        ((0.6, 0.2, -0.2, -0.6), 20.0),  # falling by 0.4 per utterance: capped at the full weight
        ((-0.9, -0.9, -0.9, 0.0, -0.1, -0.2, -0.3, -0.4, -0.5), 10.0),  # only the last sentiment_window (6) count
    ],
)
def test_risk_sentiment_is_the_trend_of_the_recent_finals(scores, points):
    from streamproc.detect.risk import sentiment_slope

    rule = RiskRule(id="r", severity="warning", sentiment_window=6, sentiment_slope_full=0.2)
    state = RiskState()
    for s in scores:
        state.add_sentiment(s)
    assert state.factors(rule)["sentiment"] == points
    assert sentiment_slope([0.0, -0.1, -0.2]) == pytest.approx(-0.1)


def test_call_at_risk_crosses_once_with_factors(engine):
    info = CallInfo(on_hold=True, hold_started_at=0.0, completed_hold_s=0.0)
    engine.on_transcript(seg("thank you for calling", "agent", 1.0), info, 10.0)
    a1 = engine.on_transcript(seg("this is the third time i've called", "customer", 5.0, utterance=1), info, 10.0).alerts
    assert [a.kind for a in a1 if a.kind == AlertKind.call_at_risk] == []
    a2 = engine.on_transcript(seg("let me speak to your manager you idiot", "customer", 9.0, utterance=2), info, 40.0).alerts
    risk = [a for a in a2 if a.kind == AlertKind.call_at_risk]
    assert len(risk) == 1, kinds(a2)
    factors = risk[0].evidence.factors
    assert factors["repeat_contact"] == 15 and factors["escalation"] == 15 and factors["abuse"] == 15 and factors["hold"] == 12
    assert risk[0].evidence.value >= 50 and risk[0].occurrence == 0 and "repeat_contact 15" in risk[0].title
    # the same score again: no new alert; more hold time on the timer crosses the next levels (70, 90)
    assert not [a for a in engine.on_tick(lambda _: info, 41.0) if a.kind == AlertKind.call_at_risk]
    later = [a for a in engine.on_tick(lambda _: info, 150.0) if a.kind == AlertKind.call_at_risk]
    assert [a.occurrence for a in later] == [1, 2] and later[-1].evidence.factors["hold"] == 45
    assert not [a for a in engine.on_tick(lambda _: info, 151.0) if a.kind == AlertKind.call_at_risk]


def test_packaged_rules_have_windows_and_risk():
    from streamproc.rules import load_rules

    detection = load_rules().detection
    assert {w.id for w in detection.windows} == {"agent-greeting", "recording-disclosure", "apology-after-complaint"}
    assert detection.risk and detection.risk[0].threshold == 60


def test_risk_updates_carry_every_calls_live_score_once_per_whole_point(engine):
    """What the detection agent publishes on calls.risk: a score below the threshold too, again only
    when it moved by a whole point (the hold factor grows every second)."""
    info = CallInfo(on_hold=False, completed_hold_s=0.0)
    engine.on_transcript(seg("this is the third time i've called", "customer", 1.0), info, 10.0)
    engine.on_transcript(seg("hello", "customer", 1.0, call="c2"), info, 10.0)
    updates = {u.call_id: u for u in engine.risk_updates(10.0)}
    assert updates["c1"].score == 15 and updates["c1"].threshold == 50 and updates["c1"].factors["repeat_contact"] == 15
    assert updates["c1"].rule_id == "risk" and updates["c2"].score == 0  # every call, not only risky ones
    assert engine.risk_updates(11.0) == []  # nothing moved
    held = CallInfo(on_hold=True, hold_started_at=10.0, completed_hold_s=0.0)
    engine.on_tick(lambda _: held, 11.0)  # 1 s of hold: 0.3 points, not a whole point yet
    assert engine.risk_updates(11.0) == []
    engine.on_tick(lambda _: held, 20.0)  # 10 s of hold: 3 points
    moved = {u.call_id: u for u in engine.risk_updates(20.0)}
    assert moved["c1"].score == 18 and moved["c1"].factors["hold"] == 3


def test_max_windows_caps_the_trigger_windows_per_call():
    rules = parse_rules(
        """
version: 1
detection:
  windows:
    - id: apology
      severity: warning
      after: trigger
      within_s: 30
      max_windows: 2
      trigger: {speaker: customer, phrases: ["unacceptable"]}
      cue: {speaker: agent, phrases: ["sorry"]}
"""
    )
    engine = DetectionEngine(lambda: rules)
    missed = []
    for n in range(4):  # four complaints, never an apology: only the first two open a window
        missed += [a for a in engine.on_transcript(seg("unacceptable", "customer", 100.0 * n, utterance=n), None, 0).alerts
                   if a.rule_id == "apology"]
    missed += [a for a in engine.on_transcript(seg("bye", "customer", 1000.0, utterance=9), None, 0).alerts
               if a.rule_id == "apology"]
    assert [a.occurrence for a in missed] == [1, 2]


def test_risk_alert_fires_at_the_threshold_and_not_below():
    rule = RiskRule(id="r", severity="warning", threshold=15, hold_full_s=100)
    state = RiskState()
    state.hold_s = 49  # hold factor 30 * 49 / 100 = 14.7
    assert state.crossings(rule)[2] == []
    state.hold_s = 50  # 15.0: the threshold itself
    assert state.crossings(rule)[2] == [0]


def test_a_cue_spoken_before_the_window_opened_does_not_satisfy_it(engine):
    """An apology that ended before the complaint did (an agent segment processed late) is not an answer to it."""
    engine.on_transcript(seg("thank you for calling", "agent", 1.0), None, 0)
    engine.on_transcript(seg("this is unacceptable", "customer", 10.0, utterance=1), None, 0)  # window opens at 12 s
    engine.on_transcript(seg("sorry", "agent", 5.0, utterance=2), None, 0)  # said 5-7 s, read now
    alerts = engine.on_transcript(seg("ok", "customer", 80.0, utterance=3), None, 0).alerts
    assert [a.rule_id for a in alerts if a.kind == AlertKind.missed_phrase] == ["apology"]
