"""Schema parsing: every kind of bad input maps to a specific dead-letter reason."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.errors import InputRejected, RejectReason
from streamproc.schemas import ALERT_ID_NAMESPACE, Alert, CallStarted, DeadLetter, TranscriptSegment, parse_call_event


def parse(obj) -> object:
    return parse_call_event(json.dumps(obj) if not isinstance(obj, (bytes, str)) else obj)


def reason_of(raw) -> RejectReason:
    with pytest.raises(InputRejected) as info:
        parse(raw)
    return info.value.reason


def test_valid_call_started_with_iso_or_epoch_time():
    a = parse({"type": "call_started", "call_id": "c1", "ts": "2026-11-24T10:00:00+00:00", "agent_id": "a", "queue": "q"})
    b = parse({"type": "call_started", "call_id": "c1", "ts": 1795514400, "agent_id": "a", "queue": "q"})
    assert isinstance(a, CallStarted) and a.ts == b.ts
    assert a.event_id == b.event_id, "derived event ids are deterministic"


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"{not json", RejectReason.malformed_json),
        (b"\xff\xfe", RejectReason.malformed_json),
        (b"[1,2]", RejectReason.malformed_json),
        ({"type": "call_parked", "call_id": "c", "ts": 1}, RejectReason.unknown_event_type),
        ({"call_id": "c", "ts": 1}, RejectReason.missing_field),
        ({"type": "call_started", "call_id": "c", "ts": 1, "queue": "q"}, RejectReason.missing_field),
        ({"type": "hold_started", "ts": 1}, RejectReason.missing_field),
        ({"type": "hold_started", "call_id": "c", "ts": "yesterday"}, RejectReason.invalid_field),
        ({"type": "hold_started", "call_id": "c", "ts": "2026-11-24T10:00:00"}, RejectReason.invalid_field),
        ({"type": "hold_started", "call_id": "", "ts": 1}, RejectReason.invalid_field),
        ({"type": "transferred", "call_id": "c", "ts": 1}, RejectReason.invalid_field),
        ({"schema_version": 2, "type": "hold_started", "call_id": "c", "ts": 1}, RejectReason.unsupported_version),
    ],
)
def test_rejections_have_specific_reasons(raw, reason):
    assert reason_of(raw) is reason


def test_rejection_detail_names_the_field():
    with pytest.raises(InputRejected) as info:
        parse({"type": "call_started", "call_id": "c", "ts": 1, "queue": "q"})
    assert "agent_id" in info.value.detail


def test_unknown_extra_fields_are_ignored():
    event = parse({"type": "hold_ended", "call_id": "c", "ts": 1, "pbx_specific": {"x": 1}})
    assert event.type == "hold_ended"


def test_alert_ids_are_deterministic_and_distinct():
    # Golden values, computed once (29 Nov 2026) and written down: consumers dedupe on these ids
    # across releases, so a change of namespace, separator or field order must fail here.
    assert str(ALERT_ID_NAMESPACE) == "6f1d6c2e-2d43-4a8e-9a55-1c3b1f0e7a10"
    assert Alert.make_id("c1", "r", 1) == "d9f318af-c5e2-522b-8d22-7ef70d87279f"
    assert Alert.make_id("CA-1001", "hold-warning", 1) == "62d7a7e0-eed6-577c-ab24-c734fc230a43"
    assert Alert.make_id("CA-1002", "churn-intent", 256) == "6468fd48-a863-51fe-bc8f-1629a719b261"
    assert Alert.make_id("CA-1002", "call-at-risk", 0) == "05a274f1-2e82-5f9c-90fc-f1aa56ecdb78"
    assert TranscriptSegment.make_id("CA-1001", "customer", 3, 4, True) == "CA-1001/customer/3/f"
    assert TranscriptSegment.make_id("CA-1001", "customer", 3, 4, False) == "CA-1001/customer/3/4"
    assert len({Alert.make_id("c1", "r", 1), Alert.make_id("c1", "r", 2), Alert.make_id("c2", "r", 1), Alert.make_id("c1", "s", 1)}) == 4


def test_dead_letter_keeps_bounded_original_bytes():
    payload = b"x" * 100_000
    letter = DeadLetter.of(InputRejected(RejectReason.malformed_json, "bad"), source_topic="t", payload=payload, key=b"k")
    assert letter.truncated and letter.payload_size == 100_000 and len(letter.payload()) == 64 * 1024
    again = DeadLetter.model_validate_json(letter.to_json_bytes())
    assert again.reason is RejectReason.malformed_json and again.key == "k"


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)))
def test_random_bytes_never_escape_as_anything_but_a_rejection(raw):
    try:
        parse_call_event(raw)
    except InputRejected as rejection:
        assert rejection.reason in RejectReason


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["call_started", "hold_started", "hold_ended", "transferred", "call_ended", "x"])},
        optional={"call_id": json_values, "ts": json_values, "agent_id": json_values, "queue": json_values, "to_queue": json_values},
    )
)
def test_wrong_types_are_rejected_not_crashing(obj):
    try:
        parse_call_event(json.dumps(obj))
    except InputRejected as rejection:
        assert rejection.reason in RejectReason
