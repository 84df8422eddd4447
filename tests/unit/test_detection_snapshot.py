"""streamproc.detect.snapshot: a call's detection state survives a hand-over to another engine.

The crash is simulated at engine level: engine A processes part 1 of a scripted call, its
snapshot goes through JSON (what the worker's table stores) into a fresh engine B, which
processes part 2. The alerts must equal those of one engine that saw the whole call, and an
engine that starts part 2 from zero must differ (the test can fail).
"""

from __future__ import annotations

import json
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.detect.engine import DetectionEngine
from streamproc.detect.snapshot import DetectionSnapshot
from streamproc.rules import parse_rules
from streamproc.schemas import TranscriptSegment
from tests.detection_state_script import CRASH_AFTER, LINES, RULES_YAML, segment_json

RULES = parse_rules(RULES_YAML)
CALL = "snap-1"


def _segment(utterance: int) -> TranscriptSegment:
    return TranscriptSegment.model_validate(segment_json(CALL, utterance))


def _run(engine: DetectionEngine, utterances, now: float = 1000.0) -> list:
    alerts = []
    for utterance in utterances:
        alerts += engine.on_transcript(_segment(utterance), None, now + utterance).alerts
    return alerts


def _ids(alerts) -> list[tuple[str, str, int]]:
    return sorted((a.alert_id, a.rule_id, a.occurrence) for a in alerts)


def _stored(engine: DetectionEngine) -> dict:
    snapshot = engine.snapshot_if_changed(CALL)
    assert snapshot is not None
    return json.loads(json.dumps(snapshot.to_json()))  # what the table's JSON serializer keeps


def test_hand_over_through_a_snapshot_gives_the_same_alerts_as_no_crash():
    whole = _run(DetectionEngine(lambda: RULES), range(len(LINES)))
    kinds = Counter(str(a.kind) for a in whole)
    # the script exercises every piece of state: cooldown (one escalation), sentiment window, the two
    # apology windows (u2, u3), risk levels 0 (part 1: escalation + the falling sentiment) and 1 (part 2:
    # the missed windows)
    assert kinds == {"escalation": 1, "negative_sentiment": 1, "missed_phrase": 2, "call_at_risk": 2}, kinds

    first = DetectionEngine(lambda: RULES)
    part1 = _run(first, range(CRASH_AFTER))
    second = DetectionEngine(lambda: RULES)
    assert second.adopt(DetectionSnapshot.from_json(_stored(first)), 2000.0)
    part2 = _run(second, range(CRASH_AFTER, len(LINES)))
    assert _ids(part1 + part2) == _ids(whole)

    fresh = DetectionEngine(lambda: RULES)
    assert _ids(part1 + _run(fresh, range(CRASH_AFTER, len(LINES)))) != _ids(whole), "the script needs the state"


def test_snapshot_round_trips_and_only_changes_make_a_new_revision():
    engine = DetectionEngine(lambda: RULES)
    _run(engine, range(CRASH_AFTER))
    stored = _stored(engine)
    snapshot = DetectionSnapshot.from_json(stored)
    assert snapshot is not None and snapshot.to_json() == stored and snapshot.revision == 1
    assert engine.snapshot_if_changed(CALL) is None  # nothing changed since
    other = DetectionEngine(lambda: RULES)
    other.adopt(snapshot, 0.0)
    assert other.snapshot_if_changed(CALL) is None  # the adopted state is the stored state
    _run(engine, [CRASH_AFTER])
    assert engine.snapshot_if_changed(CALL).revision == 2


def test_adopt_never_goes_back_to_an_older_revision():
    engine = DetectionEngine(lambda: RULES)
    _run(engine, range(2))
    old = engine.snapshot_if_changed(CALL)
    _run(engine, range(2, CRASH_AFTER))
    newer = engine.snapshot_if_changed(CALL)
    assert not engine.adopt(old, 0.0) and not engine.adopt(newer, 0.0)
    assert DetectionSnapshot.from_json({"schema_version": 999, "call_id": CALL}) is None
    assert DetectionSnapshot.from_json(None) is None


@settings(max_examples=40, deadline=None)
@given(split=st.integers(0, len(LINES)), now=st.floats(0, 2e9, allow_nan=False))
def test_any_split_point_gives_the_alerts_of_the_uncrashed_call(split, now):
    whole = _run(DetectionEngine(lambda: RULES), range(len(LINES)), now)
    first = DetectionEngine(lambda: RULES)
    alerts = _run(first, range(split), now)
    second = DetectionEngine(lambda: RULES)
    snapshot = first.snapshot_if_changed(CALL)
    if snapshot is not None:
        second.adopt(DetectionSnapshot.from_json(json.loads(json.dumps(snapshot.to_json()))), now)
    alerts += _run(second, range(split, len(LINES)), now)
    assert _ids(alerts) == _ids(whole)
