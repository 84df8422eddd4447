"""Hostile input against every parser and decoder: only InputRejected may escape.

Random bytes, truncated and giant records, wrong JSON types, unicode edge cases (lone
surrogate escapes, NUL, bidi controls, astral planes), deep nesting and huge transcripts,
thrown at: the call-event parser, every single-type message parser, the audio-frame header
parser, the audio decoders and frame tracker, and the whole record path of the events
agent (CallProcessor), which must turn every rejection into a dead letter with a reason.

The number of inputs tried is written to test-artifacts/figures/fuzz.json (docs/reliability.md).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamproc.errors import InputRejected, RejectReason
from streamproc.processing import CallProcessor
from streamproc.redact import find_pii
from streamproc.rules import load_rules
from streamproc.schemas import (
    Alert,
    AlertAck,
    AudioEncoding,
    AudioFrameMeta,
    DeadLetter,
    Tick,
    TranscriptSegment,
    parse_call_event,
    parse_message,
)

TRIED: Counter[str] = Counter()
REJECTED: Counter[str] = Counter()
CRASHES: Counter[str] = Counter()
EXAMPLES = int(os.environ.get("STREAMPROC_FUZZ_EXAMPLES", "400"))  # python -m bench.faults fuzz raises it
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module", autouse=True)
def write_figures():
    yield
    from tests.integration.reliability_support import write_figures as write

    write("fuzz", "ci" if EXAMPLES == 400 else f"bench:{EXAMPLES}", {
        "inputs_tried": sum(TRIED.values()),
        "max_examples_per_test": EXAMPLES,
        "by_target": dict(sorted(TRIED.items())),
        "rejected_by_reason": dict(sorted(REJECTED.items())),
        "crashes": sum(CRASHES.values()),  # any exception other than InputRejected (the test fails)
        "crashes_by_target": dict(CRASHES),
        "command": ".venv/bin/pytest tests/unit/test_fuzz_parsers.py -q" if EXAMPLES == 400
        else f"python -m bench.faults fuzz --fuzz-examples {EXAMPLES}",
    })


def attempt(target: str, parse, raw):
    """Run one parser on one input; return the result or None when it was rejected (with a reason)."""
    TRIED[target] += 1
    try:
        return parse(raw)
    except InputRejected as rejection:
        assert isinstance(rejection.reason, RejectReason)
        assert rejection.detail, "a rejection explains itself"
        REJECTED[rejection.reason.value] += 1
        return None
    except Exception:
        CRASHES[target] += 1
        raise


# ----------------------------------------------------------------------------- input strategies

EDGE_STRINGS = st.sampled_from(
    [
        "", " ", "\x00", "\u202e\u202d", "\ufeff", "\U0001f4a9" * 50, "\ud800", "a\udfffb", "é" * 1000, "\n" * 100,
        "x" * 200, "x" * 20_001, "null", "0", "-1", "1e309", "NaN", "Infinity", "9" * 400, "\\u0000",
        "2024-02-30T10:00:00Z", "2024-01-01T00:00:00", "0001-01-01T00:00:00+00:00", "9999-12-31T23:59:59+14:00",
    ]
)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | EDGE_STRINGS
)
json_values = st.recursive(
    json_scalars, lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)

NOW = 1_700_000_000.0
VALID_EVENTS = [
    {"type": "call_started", "call_id": "c1", "ts": NOW, "agent_id": "a", "queue": "q"},
    {"type": "hold_started", "call_id": "c1", "ts": NOW + 1},
    {"type": "hold_ended", "call_id": "c1", "ts": NOW + 2},
    {"type": "transferred", "call_id": "c1", "ts": NOW + 3, "to_queue": "q2"},
    {"type": "call_ended", "call_id": "c1", "ts": NOW + 4, "reason": "done"},
]
VALID_MESSAGES = {
    Tick: {"call_id": "c1", "at": "2024-01-01T00:00:00+00:00"},
    TranscriptSegment: {"segment_id": "c1/agent/0/f", "call_id": "c1", "speaker": "agent", "utterance": 0, "is_final": True,
                        "text": "hello", "words": [{"word": "hello", "start_s": 0.1, "end_s": 0.4}]},
    AlertAck: {"alert_id": "x", "call_id": "c1", "acked_by": "sup"},
    Alert: {"alert_id": "x", "call_id": "c1", "kind": "hold_breach", "rule_id": "r", "severity": "warning", "title": "t",
            "event_time": "2024-01-01T00:00:00+00:00", "detected_at": "2024-01-01T00:00:01+00:00"},
    DeadLetter: {"reason": "malformed_json", "detail": "d", "source_topic": "t", "payload_b64": "", "payload_size": 0},
}


@st.composite
def mutated(draw, base: dict) -> bytes:
    """A valid message with one hostile mutation: wrong type, missing field, extra junk, edge string."""
    obj = dict(base)
    field = draw(st.sampled_from(sorted(obj) + ["schema_version", "extra"]))
    action = draw(st.sampled_from(["replace", "drop", "edge", "nest"]))
    if action == "replace":
        obj[field] = draw(json_values)
    elif action == "drop":
        obj.pop(field, None)
    elif action == "edge":
        obj[field] = draw(EDGE_STRINGS)
    else:
        obj[field] = [[[[draw(json_scalars)]]]]
    text = json.dumps(obj, allow_nan=True)
    # Lone surrogates survive only as JSON escapes; encode what json.dumps produced (it escapes non-ASCII).
    return text.encode("utf-8")


def raw_inputs(base: dict):
    encoded = json.dumps(base).encode()
    return st.one_of(
        st.binary(max_size=2000),  # random bytes
        st.integers(0, len(encoded)).map(lambda n: encoded[:n]),  # truncated
        mutated(base),
        json_values.map(lambda v: json.dumps(v, allow_nan=True).encode()),  # wrong top-level types
        st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),  # invalid UTF-8 (surrogates)
        st.sampled_from([
            b"[" * 100_000 + b"]" * 100_000,  # deep nesting
            b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
            json.dumps(base | {"pad": "x" * 2_000_000}).encode(),  # giant record
            b"\xef\xbb\xbf" + encoded,  # UTF-8 BOM
            encoded.replace(b"{", b"{\"schema_version\": 2, ", 1),
        ]),
    )


# ----------------------------------------------------------------------------- JSON parsers


@FUZZ
@given(st.sampled_from(VALID_EVENTS).flatmap(raw_inputs))
def test_call_event_parser_only_rejects(raw):
    event = attempt("parse_call_event", parse_call_event, raw)
    if event is not None:
        assert math.isfinite(event.ts_epoch) and event.call_id.strip() == event.call_id and event.event_id
        event.to_json_bytes()  # its fields end up in alerts and the state table: they must serialise


@FUZZ
@given(st.sampled_from(sorted(VALID_MESSAGES, key=lambda m: m.__name__)).flatmap(
    lambda model: st.tuples(st.just(model), raw_inputs(VALID_MESSAGES[model]))
))
def test_message_parsers_only_reject(case):
    model, raw = case
    message = attempt(f"parse_message[{model.__name__}]", lambda r: parse_message(model, r), raw)
    if message is not None:
        assert isinstance(message, model)
        message.to_json_bytes()  # whatever we accept we can also write back out


@FUZZ
@given(st.tuples(st.text(min_size=1, max_size=200), st.integers(1, 20_000)).map(lambda t: (t[0] * t[1])[:1_000_000]))
def test_huge_transcripts_are_rejected_or_bounded(text):
    raw = json.dumps(VALID_MESSAGES[TranscriptSegment] | {"text": text}).encode()
    segment = attempt("parse_message[TranscriptSegment]/huge", lambda r: parse_message(TranscriptSegment, r), raw)
    assert segment is None or len(segment.text) <= 20_000


# ----------------------------------------------------------------------------- audio

header_names = st.sampled_from(
    ["sp-encoding", "sp-rate", "sp-channels", "sp-layout", "sp-speaker", "sp-stream", "sp-seq", "sp-offset_ms",
     "sp-sent_at_ms", "sp-schema_version", "sp-", "other", "SP-RATE"]
)
header_values = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"pcm16", b"mulaw", b"alaw", b"8000", b"16000", b"1", b"2", b"-1", b"0", b"9" * 50,
                     b"agent_customer", b"mono", b"agent", b"\xff\xfe", "é".encode(), b"", b" 16000 ", b"1e3"]),
)
VALID_HEADERS = [(b"sp-encoding", b"pcm16"), (b"sp-rate", b"16000"), (b"sp-seq", b"0")]


@FUZZ
@given(st.lists(st.tuples(header_names | st.text(max_size=12), header_values), max_size=12), st.booleans())
def test_audio_header_parser_only_rejects(headers, start_valid):
    headers = (VALID_HEADERS if start_valid else []) + headers
    meta = attempt("AudioFrameMeta.from_headers", AudioFrameMeta.from_headers, headers)
    if meta is not None:
        assert AudioFrameMeta.from_headers(meta.to_headers()) == meta, "round trip"


@FUZZ
@given(st.sampled_from(list(AudioEncoding)), st.binary(max_size=8_000) | st.integers(0, 200_000).map(lambda n: b"\x7f" * n))
def test_audio_decoders_only_reject(encoding, payload):
    audio = pytest.importorskip("streamproc.audio")
    samples = attempt(f"audio.decode[{encoding.value}]", lambda p: audio.decode(p, encoding), payload)
    if samples is not None:
        assert str(samples.dtype) == "int16" and len(samples) == len(payload) // audio.bytes_per_sample(encoding)


@FUZZ
@given(st.lists(
    st.tuples(
        st.sampled_from(["c1", "c2"]),
        st.builds(dict, encoding=st.sampled_from(["pcm16", "mulaw", "alaw"]), rate=st.sampled_from([8000, 16000]),
                  seq=st.integers(0, 2**40) | st.integers(0, 5), offset_ms=st.none() | st.integers(0, 10**9)),
        st.binary(max_size=70_000) | st.integers(0, 70_000).map(bytes),
        st.booleans(),
    ),
    max_size=20,
))
def test_audio_frame_tracker_only_rejects(frames):
    audio = pytest.importorskip("streamproc.audio")
    tracker = audio.StreamTracker()
    for call_id, fields, payload, end_after in frames:
        meta = AudioFrameMeta(**fields)
        attempt("audio.StreamTracker.admit", lambda p: tracker.admit(call_id, meta, p), payload)
        if end_after:
            tracker.end_call(call_id)


# ----------------------------------------------------------------------------- the events agent's record path

RULES = load_rules(None)
processor = CallProcessor(lambda: RULES, retention_s=60, ticks_topic="calls.ticks")


@FUZZ
@given(
    st.sampled_from(["calls.events", "calls.ticks"]),
    st.none() | st.binary(max_size=40) | st.just(b"c1"),
    st.none() | st.sampled_from(VALID_EVENTS).flatmap(raw_inputs),
    st.none() | st.sampled_from([None, {}, {"garbage": True}, {"status": "on_hold"}]),
)
def test_events_agent_record_path_dead_letters_everything_it_rejects(topic, key, value, stored):
    TRIED["CallProcessor.process"] += 1
    step = processor.process(topic=topic, key=key, value=value, load_state=lambda _call: stored, partition=0, offset=7)
    for letter in step.dead_letters:
        REJECTED[f"dead_letter:{letter.reason.value}"] += 1
        assert isinstance(letter.reason, RejectReason) and letter.detail
        assert letter.source_topic == topic and letter.offset == 7
        if letter.reason is RejectReason.internal_error:
            assert stored not in (None, {}), "only a corrupt stored state may surface as an internal error"
        original = value or b""
        assert letter.payload_size == len(original) and letter.payload_sha256 == hashlib.sha256(original).hexdigest()
        if not letter.redacted:  # kept as it came, bounded
            assert letter.payload() == original[: len(letter.payload())]
        else:  # the privacy policy: what is kept has no PII left (binary values are not kept at all)
            assert not [text for text in kept_texts(letter.payload()) if find_pii(text)], letter.payload()[:200]
        # The dead letter itself is a valid message on the dead-letter topic.
        assert parse_message(DeadLetter, letter.to_json_bytes()).reason is letter.reason
    if not step.dead_letters and topic == "calls.events":
        # Accepted: then the parser (checked on its own above) must accept it too, keyed by its call.
        assert value is not None
        assert parse_call_event(value).call_id == (key or b"").decode("utf-8", "replace")


def kept_texts(payload: bytes) -> list[str]:
    """The free text a dead letter keeps: its JSON string values (ISO timestamps aside), or all of it."""
    try:
        parsed = json.loads(payload)
    except (ValueError, RecursionError):
        return [payload.decode("utf-8")]
    texts, todo = [], [parsed]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, list):
            todo.extend(item)
        elif isinstance(item, dict):
            todo.extend(item.values())
    return [text for text in texts if not re.fullmatch(r"\d{4}-\d\d-\d\d([T ][0-9:.]+)?(Z|[+-]\d\d:?\d\d)?", text)]


# An independent oracle for the record path: inputs built to be invalid in one known way, each of
# which must produce exactly one dead letter with that reason (the loop above can run zero times).
EVENT_TYPES = {"call_started", "hold_started", "hold_ended", "transferred", "call_ended"}


@st.composite
def known_invalid(draw) -> tuple[bytes | None, bytes, RejectReason]:
    """(key, value, the reason the record path must give) for one event broken on purpose."""
    base = dict(draw(st.sampled_from(VALID_EVENTS[:1])))  # call_started: valid on an unknown call
    call_id = draw(st.from_regex(r"[a-z][a-z0-9-]{0,15}", fullmatch=True))
    base["call_id"] = call_id
    flaw = draw(st.sampled_from(["not_json", "unknown_type", "missing", "wrong_key", "version"]))
    key = call_id.encode()
    if flaw == "not_json":
        # A JSON text cut inside its first string cannot parse, whatever follows is dropped.
        text = json.dumps(base)
        return key, text[: draw(st.integers(1, text.index(call_id)))].encode(), RejectReason.malformed_json
    if flaw == "unknown_type":
        base["type"] = draw(st.text(min_size=1, max_size=12).filter(lambda t: t not in EVENT_TYPES))
        return key, json.dumps(base).encode(), RejectReason.unknown_event_type
    if flaw == "missing":
        base.pop(draw(st.sampled_from(["call_id", "ts", "type"])))
        return key, json.dumps(base).encode(), RejectReason.missing_field
    if flaw == "wrong_key":
        other = draw(st.from_regex(r"[a-z0-9-]{1,16}", fullmatch=True).filter(lambda k: k != call_id))
        return other.encode(), json.dumps(base).encode(), RejectReason.key_mismatch
    base["schema_version"] = draw(st.integers(2, 1000))
    return key, json.dumps(base).encode(), RejectReason.unsupported_version


@FUZZ
@given(known_invalid())
def test_events_agent_record_path_dead_letters_known_invalid_input_with_its_reason(case):
    key, value, reason = case
    TRIED["CallProcessor.process/known_invalid"] += 1
    step = processor.process(topic="calls.events", key=key, value=value, load_state=lambda _call: None, partition=0, offset=3)
    assert [letter.reason for letter in step.dead_letters] == [reason], (value, step.dead_letters)
    assert not step.alerts and step.store is None


def test_record_path_dead_letters_every_state_machine_rejection_with_its_reason():
    """Well-formed events the call's state refuses: each is exactly one dead letter with its reason
    (the parser accepts them, so only the state machine's rejection can produce the letter)."""
    def step(value: dict, stored):
        return processor.process(topic="calls.events", key=value["call_id"].encode(), value=json.dumps(value).encode(),
                                 load_state=lambda _call: stored, partition=0, offset=1, now_wall=NOW + 100)

    started = step({"type": "call_started", "call_id": "sm1", "ts": NOW, "agent_id": "a", "queue": "q"}, None)
    assert not started.dead_letters and started.store is not None
    ended = step({"type": "call_ended", "call_id": "sm1", "ts": NOW + 5}, started.store)
    assert not ended.dead_letters and ended.store is not None
    cases = [
        ({"type": "hold_started", "call_id": "sm1", "ts": NOW + 1}, None, RejectReason.unknown_call),
        ({"type": "hold_ended", "call_id": "sm1", "ts": NOW + 1}, started.store, RejectReason.invalid_transition),
        ({"type": "call_started", "call_id": "sm1", "ts": NOW + 1, "agent_id": "a", "queue": "q"}, started.store,
         RejectReason.invalid_transition),
        ({"type": "hold_started", "call_id": "sm1", "ts": NOW - 1}, started.store, RejectReason.out_of_order),
        ({"type": "hold_started", "call_id": "sm1", "ts": NOW + 6}, ended.store, RejectReason.call_ended),
    ]
    for value, stored, reason in cases:
        result = step(value, stored)
        assert [letter.reason for letter in result.dead_letters] == [reason], (value, result)
        assert result.store is None and not result.alerts
