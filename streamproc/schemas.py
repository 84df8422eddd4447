"""Every message on every streamproc topic, in one module.

Wire format: UTF-8 JSON objects (audio is the exception: raw bytes with metadata in
Kafka headers, see :class:`AudioFrameMeta`). Every message carries ``schema_version``;
readers accept the versions listed in :data:`SUPPORTED_VERSIONS` and reject others
with ``unsupported_version``. Unknown extra fields are ignored (tolerant reader), so
producers may add fields without breaking us. Changes that remove or retype a field
bump the version. docs/schemas.md is the human reference; ``streamproc schemas``
prints the JSON Schema of each message.

Times: ``ts`` / ``event_time`` are *event time* from the source (telephony clock);
``*_at`` fields are wall-clock times taken by streamproc, used for latency measurement.
Both are ISO 8601 with a timezone on the wire; epoch seconds are accepted on input.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from datetime import datetime, timezone
from enum import StrEnum
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from .errors import InputRejected, RejectReason
from .redact import redact, redact_payload

SCHEMA_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})

#: Namespace for deterministic alert ids (uuid5). Never change it: consumers dedupe on the ids.
ALERT_ID_NAMESPACE = uuid.UUID("6f1d6c2e-2d43-4a8e-9a55-1c3b1f0e7a10")

Identifier = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def to_epoch(moment: datetime) -> float:
    return moment.timestamp()


def from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, use_enum_values=False)

    schema_version: int = SCHEMA_VERSION

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode("utf-8")


# --------------------------------------------------------------------------- call events


class EventType(StrEnum):
    call_started = "call_started"
    hold_started = "hold_started"
    hold_ended = "hold_ended"
    transferred = "transferred"
    call_ended = "call_ended"


class _CallEventBase(_Message):
    event_id: Identifier | None = Field(
        None, description="Unique id from the source; duplicates with the same id are dropped. Derived when absent."
    )
    call_id: Identifier
    ts: AwareDatetime = Field(description="Event time from the telephony system.")
    agent_id: Identifier | None = None

    @model_validator(mode="after")
    def _derive_event_id(self) -> "_CallEventBase":
        if self.event_id is None:
            # Deterministic, so a re-sent event without an id is still recognised as a duplicate.
            object.__setattr__(self, "event_id", f"{self.call_id}:{self.type}:{self.ts.timestamp():.6f}")
        return self

    @property
    def ts_epoch(self) -> float:
        return self.ts.timestamp()


class CallStarted(_CallEventBase):
    type: Literal["call_started"] = "call_started"
    agent_id: Identifier
    queue: Identifier
    customer_id: Identifier | None = None
    direction: Literal["inbound", "outbound"] = "inbound"


class HoldStarted(_CallEventBase):
    type: Literal["hold_started"] = "hold_started"
    reason: str | None = Field(None, max_length=256)


class HoldEnded(_CallEventBase):
    type: Literal["hold_ended"] = "hold_ended"


class Transferred(_CallEventBase):
    type: Literal["transferred"] = "transferred"
    to_agent_id: Identifier | None = None
    to_queue: Identifier | None = None

    @model_validator(mode="after")
    def _has_target(self) -> "Transferred":
        if self.to_agent_id is None and self.to_queue is None:
            raise ValueError("transferred needs to_agent_id or to_queue")
        return self


class CallEnded(_CallEventBase):
    type: Literal["call_ended"] = "call_ended"
    reason: str | None = Field(None, max_length=256)


CallEvent = Annotated[
    Union[CallStarted, HoldStarted, HoldEnded, Transferred, CallEnded],
    Field(discriminator="type"),
]
CALL_EVENT_ADAPTER: TypeAdapter[CallEvent] = TypeAdapter(CallEvent)


class Tick(_Message):
    """Internal timer message (topic ``calls.ticks``): 'evaluate this call's deadlines at wall time ``at``'.

    The hold timer cannot write the state table itself (Faust tables are written only
    from stream processing), so it asks the events agent, which owns the call, to do it.
    """

    kind: Literal["tick"] = "tick"
    call_id: Identifier
    at: AwareDatetime


# --------------------------------------------------------------------------- alerts


class Severity(StrEnum):
    info = "info"
    warning = "warning"
    critical = "critical"


class AlertKind(StrEnum):
    hold_breach = "hold_breach"  # one hold is longer than a threshold
    cumulative_hold = "cumulative_hold"  # all holds of the call add up past a threshold
    repeated_hold = "repeated_hold"  # the call was put on hold N times
    rude_phrase = "rude_phrase"  # agent said something rude
    customer_abuse = "customer_abuse"  # customer abusing the agent (welfare cue)
    escalation = "escalation"  # manager request, cancel/churn, legal threat, repeat contact
    negative_sentiment = "negative_sentiment"
    raised_voice = "raised_voice"
    dead_air = "dead_air"
    crosstalk = "crosstalk"
    missed_phrase = "missed_phrase"  # a said/not-said window closed without a required phrase
    window_phrase = "window_phrase"  # a phrase that must not be said was said inside its window
    call_at_risk = "call_at_risk"  # the live call risk score crossed its threshold


class Speaker(StrEnum):
    agent = "agent"
    customer = "customer"
    unknown = "unknown"


class Evidence(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    text: str | None = Field(None, description="Matched or summarised text (may be redacted).")
    speaker: Speaker | None = None
    audio_start_s: float | None = Field(None, description="Start of the evidence, seconds into the call's audio.")
    audio_end_s: float | None = None
    value: float | None = Field(None, description="Measured value, e.g. seconds on hold.")
    threshold: float | None = Field(None, description="The rule's threshold that value crossed.")
    unit: str | None = None
    # (optional, absent on older alerts): semantic evidence and risk factors
    matched_example: str | None = Field(None, description="Semantic alerts: the nearest `like` example of the intent.")
    similarity: float | None = Field(None, description="Semantic alerts: cosine similarity to matched_example.")
    factors: dict[str, float] | None = Field(None, description="call_at_risk: points contributed by each factor.")


class Alert(_Message):
    """One alert. ``alert_id`` is deterministic: the same breach always gets the same id."""

    alert_id: str
    call_id: Identifier
    agent_id: str | None = None
    queue: str | None = None
    kind: AlertKind
    rule_id: Identifier
    severity: Severity
    occurrence: int = Field(1, ge=0, description="Which occurrence of this rule in this call (e.g. hold number).")
    title: str = Field(description="One human-readable line for dashboards.")
    evidence: Evidence = Field(default_factory=Evidence)
    event_time: AwareDatetime = Field(description="Event time at which the condition became true.")
    detected_at: AwareDatetime = Field(description="Wall-clock time streamproc emitted the alert.")
    source_received_at: AwareDatetime | None = Field(
        None, description="Wall-clock time the triggering input reached streamproc (latency measurement)."
    )

    @staticmethod
    def make_id(call_id: str, rule_id: str, occurrence: int) -> str:
        return str(uuid.uuid5(ALERT_ID_NAMESPACE, f"{call_id}\x1f{rule_id}\x1f{occurrence}"))


class AlertAck(_Message):
    """A supervisor acknowledged an alert (topic ``calls.acks``)."""

    alert_id: str
    call_id: Identifier
    acked_by: Identifier
    acked_at: AwareDatetime = Field(default_factory=utcnow)
    note: str | None = Field(None, max_length=1000)


class CallRisk(_Message):
    """A call's live risk score (topic ``calls.risk``, key = call id), sent whenever its whole-point
    value changes: on transcripts, alerts and the detection timer (docs/detection.md#call-risk-score).
    ``call_at_risk`` alerts are still sent when it crosses the rule's threshold; this record is the
    score itself, for pages that sort every live call by it."""

    call_id: Identifier
    rule_id: Identifier
    score: float = Field(ge=0, le=100, description="The score now, 0-100.")
    threshold: float = Field(description="The rule's call_at_risk threshold.")
    factors: dict[str, float] = Field(description="Points contributed by each factor (hold, sentiment, escalation, ...).")
    updated_at: AwareDatetime = Field(description="Wall-clock time the score was computed.")


# --------------------------------------------------------------------------- audio frames


class AudioEncoding(StrEnum):
    pcm16 = "pcm16"  # 16-bit signed little-endian linear PCM
    mulaw = "mulaw"  # G.711 mu-law, 8 bits per sample
    alaw = "alaw"  # G.711 A-law, 8 bits per sample


class AudioLayout(StrEnum):
    mono = "mono"  # one speaker per stream; the speaker header says who
    agent_customer = "agent_customer"  # 2 channels interleaved: channel 0 agent, channel 1 customer


AUDIO_HEADER_PREFIX = "sp-"
MAX_AUDIO_FRAME_BYTES = 64_000  # 1 s of 16 kHz stereo PCM16 is 64,000 bytes


class AudioFrameMeta(BaseModel):
    """Metadata of one audio frame on ``calls.audio``. The record value is the raw audio bytes;
    these fields travel as Kafka headers named ``sp-<field>`` (ASCII values), key = call id.

    Why headers and not a JSON/base64 envelope: audio stays raw (no 33% base64 overhead,
    no JSON parse of 64 KB per frame), metadata is readable without touching the payload,
    and any Kafka client since 0.11 can write headers. docs/audio.md has the full contract.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: int = SCHEMA_VERSION
    encoding: AudioEncoding
    rate: Literal[8000, 16000]
    channels: Literal[1, 2] = 1
    layout: AudioLayout = AudioLayout.mono
    speaker: Speaker | None = Field(None, description="Who speaks on a mono stream (agent or customer).")
    stream: str = Field("main", min_length=1, max_length=64, description="Stream id within the call; seq counts per stream.")
    seq: int = Field(ge=0, description="Frame number within the stream, from 0, no gaps.")
    offset_ms: int | None = Field(None, ge=0, description="Start of this frame in the stream's audio timeline.")
    sent_at_ms: int | None = Field(None, description="Wall-clock epoch ms when the producer sent the frame.")

    @model_validator(mode="after")
    def _consistent_layout(self) -> "AudioFrameMeta":
        if self.layout is AudioLayout.agent_customer and self.channels != 2:
            raise ValueError("layout agent_customer needs channels=2")
        if self.layout is AudioLayout.mono and self.channels != 1:
            raise ValueError("layout mono needs channels=1")
        return self

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.encoding is AudioEncoding.pcm16 else 1

    def frame_bytes_for(self, duration_ms: int) -> int:
        return self.rate * duration_ms // 1000 * self.bytes_per_sample * self.channels

    def to_headers(self) -> list[tuple[str, bytes]]:
        values = self.model_dump(mode="json", exclude_none=True)
        return [(f"{AUDIO_HEADER_PREFIX}{name}", str(value).encode("ascii")) for name, value in values.items()]

    @classmethod
    def from_headers(cls, headers) -> "AudioFrameMeta":
        """Parse Kafka headers (list of (name, bytes) or a mapping); raise InputRejected(bad_audio_header)."""
        items = headers.items() if hasattr(headers, "items") else (headers or [])
        fields: dict[str, Any] = {}
        for name, value in items:
            if isinstance(name, bytes):
                name = name.decode("latin-1")
            if not name.startswith(AUDIO_HEADER_PREFIX):
                continue
            try:
                fields[name[len(AUDIO_HEADER_PREFIX):]] = value.decode("ascii") if isinstance(value, bytes) else value
            except UnicodeDecodeError:
                raise InputRejected(RejectReason.bad_audio_header, f"header {name} is not ASCII") from None
        if fields.get("encoding") not in (None, *AudioEncoding.__members__):
            raise InputRejected(RejectReason.unknown_encoding, f"unknown audio encoding {fields['encoding']!r}")
        for number in ("rate", "channels", "seq", "offset_ms", "sent_at_ms", "schema_version"):
            if number in fields:
                try:
                    fields[number] = int(fields[number])
                except ValueError:
                    raise InputRejected(RejectReason.bad_audio_header, f"header sp-{number} is not an integer") from None
        _check_version(fields)
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            rejection = _classify(exc)
            raise InputRejected(RejectReason.bad_audio_header, rejection.detail) from None


# --------------------------------------------------------------------------- transcripts


class Word(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    word: str
    start_s: float = Field(description="Seconds into the call's audio for this speaker.")
    end_s: float
    conf: float = Field(1.0, ge=0, le=1)


class TranscriptSegment(_Message):
    """A partial or final recognition result for one speaker of one call (topic ``calls.transcripts``).

    Partials of an utterance share ``utterance`` and grow ``revision``; the final one has
    ``is_final`` true and replaces them. ``segment_id`` is deterministic.
    """

    segment_id: str
    call_id: Identifier
    speaker: Speaker
    utterance: int = Field(ge=0, description="Index of the utterance for this call and speaker.")
    revision: int = Field(0, ge=0, description="Partial revision number within the utterance.")
    is_final: bool
    text: str = Field(max_length=20_000)
    words: list[Word] = Field(default_factory=list)
    start_s: float | None = None
    end_s: float | None = None
    confidence: float | None = Field(None, ge=0, le=1)
    audio_received_at: AwareDatetime | None = Field(
        None, description="Wall-clock time the newest audio in this result reached streamproc."
    )
    emitted_at: AwareDatetime = Field(default_factory=utcnow)
    source: Literal["asr", "script"] = Field(
        "asr", description="'asr' from the recogniser; 'script' when text was injected without ASR (demo)."
    )

    @staticmethod
    def make_id(call_id: str, speaker: str, utterance: int, revision: int, is_final: bool) -> str:
        return f"{call_id}/{speaker}/{utterance}/{'f' if is_final else revision}"


TRANSCRIPT_ADAPTER: TypeAdapter[TranscriptSegment] = TypeAdapter(TranscriptSegment)


# --------------------------------------------------------------------------- dead letters

MAX_DEADLETTER_PAYLOAD = 64 * 1024


class DeadLetter(_Message):
    """A rejected input with the reason (topic ``calls.deadletter``). The original bytes are kept, bounded."""

    reason: RejectReason
    detail: str = Field(max_length=2000)
    source_topic: str
    partition: int | None = None
    offset: int | None = None
    key: str | None = None
    payload_b64: str = Field(description="The value, PII-redacted (see redacted), base64, at most 64 KiB.")
    payload_size: int = Field(description="Size of the original value in bytes.")
    truncated: bool = False
    # Privacy (docs/reliability.md): PII in the value is redacted, binary values are not kept.
    redacted: bool = Field(False, description="payload_b64 is not the original value: PII redacted, or binary dropped.")
    payload_sha256: str | None = Field(None, description="SHA-256 (hex) of the original value, to find it on its topic.")
    received_at: AwareDatetime = Field(default_factory=utcnow)

    @classmethod
    def of(
        cls,
        rejection: InputRejected,
        *,
        source_topic: str,
        payload: bytes | None,
        key: bytes | str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> "DeadLetter":
        payload = payload or b""
        if isinstance(key, bytes):
            key = key.decode("utf-8", "replace")
        kept, redacted = redact_payload(payload) if payload else (payload, False)
        kept = kept or b""
        return cls(
            reason=rejection.reason,
            detail=redact(rejection.detail[:2000]),  # details quote input values
            source_topic=source_topic,
            partition=partition,
            offset=offset,
            key=key[:256] if key else None,
            payload_b64=base64.b64encode(kept[:MAX_DEADLETTER_PAYLOAD]).decode("ascii"),
            payload_size=len(payload),
            truncated=len(kept) > MAX_DEADLETTER_PAYLOAD,
            redacted=redacted,
            payload_sha256=hashlib.sha256(payload).hexdigest(),
        )

    def payload(self) -> bytes:
        return base64.b64decode(self.payload_b64)


# --------------------------------------------------------------------------- call summaries


class SummaryDurations(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    total_s: float | None = Field(None, ge=0, description="call_started to call_ended, event time (None: one is missing).")
    talk_s: float = Field(ge=0, description="Seconds in which at least one speaker talks (final transcripts).")
    hold_total_s: float = Field(ge=0, description="All holds of the call, event time (a hold open at call end ends there).")
    hold_count: int = Field(ge=0)
    longest_hold_s: float = Field(ge=0)
    dead_air_s: float = Field(
        ge=0, description="Silences of at least SummaryConversation.dead_air_min_s between speech, outside holds."
    )


class SpeakerTalk(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    talk_s: float = Field(ge=0, description="Seconds this speaker talks (overlaps included).")
    talk_ratio: float = Field(
        ge=0, le=1, description="Seconds only this speaker talks / seconds anyone talks. The speakers' ratios and "
        "crosstalk_ratio add up to 1 (0 when nobody talked)."
    )
    interruptions: int = Field(ge=0, description="Utterances this speaker started while the other one was talking.")


class SummaryConversation(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    speakers: dict[str, SpeakerTalk] = Field(description="By speaker: agent, customer (unknown when present).")
    crosstalk_s: float = Field(ge=0, description="Seconds in which agent and customer talk at once.")
    crosstalk_ratio: float = Field(ge=0, le=1, description="crosstalk_s / seconds anyone talks.")
    dead_air_min_s: float = Field(description="Shortest silence counted as dead air.")
    utterances: int = Field(ge=0, description="Final utterances the summary is built from.")


class SentimentTrajectory(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    start: float | None = Field(None, description="Mean sentiment (VADER compound, -1..1) of the first third of the finals.")
    middle: float | None = None
    end: float | None = None
    utterances: int = 0


class RuleAlerts(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    kind: AlertKind
    count: int = Field(ge=1)
    alert_ids: list[str] = Field(description="Sorted; the ids consumers dedupe alerts on.")


class Escalation(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    transferred: bool = Field(description="A transferred event was seen for the call.")
    transfers: int = Field(0, ge=0)
    to_queue: str | None = Field(None, description="Target queue of the last transfer.")
    to_agent_id: str | None = Field(None, description="Target agent of the last transfer.")
    escalation_alerts: int = Field(0, ge=0, description="Alerts of kind escalation (manager, churn, legal, repeat contact).")


class ChecklistItem(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    rule_id: str
    expect: Literal["said", "not_said"]
    result: Literal["passed", "failed", "not_judged"] = Field(
        description="failed: a missed_phrase / window_phrase alert of the rule; not_judged: the call ended before "
        "a call_start window closed."
    )
    failures: int = Field(0, ge=0)


class TranscriptRef(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    topic: str
    partition: int | None = None
    first_offset: int | None = Field(None, description="Offset of the call's first final transcript (None: none seen).")
    last_offset: int | None = None
    final_segments: int = 0
    redacted: bool = Field(description="The worker redacts PII in calls.transcripts (STREAMPROC_REDACT_TRANSCRIPTS).")


class CallSummary(_Message):
    """One post-call record per call (topic ``calls.summaries``), sent once the call ended and its
    transcription drained (docs/schemas.md). Figures only: no transcript text, so no raw PII.

    ``summary_id`` is deterministic (:meth:`make_id`): a re-sent summary (redelivery, restart) has the same id
    and the same content.
    """

    summary_id: str
    call_id: Identifier
    queue: str | None = None
    agent_id: str | None = None
    direction: str | None = None
    started_at: AwareDatetime | None = Field(None, description="Event time of call_started.")
    ended_at: AwareDatetime | None = Field(None, description="Event time of call_ended.")
    end_reason: str | None = None
    durations: SummaryDurations
    conversation: SummaryConversation
    sentiment: dict[str, SentimentTrajectory] = Field(description="By speaker (agent, customer).")
    alerts: dict[str, RuleAlerts] = Field(description="Every alert of the call, by rule id.")
    alert_count: int = Field(ge=0)
    escalation: Escalation
    checklist: list[ChecklistItem] = Field(default_factory=list, description="Said/not-said window rules, by rule id.")
    peak_risk_score: float | None = Field(
        None, ge=0, le=100, description="Highest call risk score: call_at_risk alerts and the score recomputed at call end "
        "(None when no risk rule is configured)."
    )
    transcript: TranscriptRef
    transcription_complete: bool = Field(
        description="False when the summary went out after the bounded wait with utterances still open."
    )

    @staticmethod
    def make_id(call_id: str) -> str:
        # Same namespace as alert ids; the "summary" tag keeps the two id spaces apart.
        return str(uuid.uuid5(ALERT_ID_NAMESPACE, f"{call_id}\x1fsummary"))


# --------------------------------------------------------------------------- parsing


def _classify(error: ValidationError) -> InputRejected:
    """Map a pydantic error to the most specific dead-letter reason, with a readable detail."""
    errors = error.errors(include_url=False)
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "(root)"
    kind = first["type"]
    if kind in ("json_invalid", "json_type") or (kind == "model_type" and not first["loc"]):
        return InputRejected(RejectReason.malformed_json, f"{first['msg']}")
    if kind == "union_tag_invalid":
        return InputRejected(RejectReason.unknown_event_type, f"unknown type {first.get('input', {}).get('type')!r}" if isinstance(first.get("input"), dict) else first["msg"])
    if kind == "union_tag_not_found":
        return InputRejected(RejectReason.missing_field, "missing field 'type'")
    if kind == "missing":
        return InputRejected(RejectReason.missing_field, f"missing field {where!r}")
    details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:5])
    return InputRejected(RejectReason.invalid_field, details)


def _check_version(obj: Any) -> None:
    # isinstance first: a list/dict version is unhashable and would raise TypeError (found by fuzzing).
    if isinstance(obj, dict) and "schema_version" in obj and (
        isinstance(obj["schema_version"], (list, dict)) or obj["schema_version"] not in SUPPORTED_VERSIONS
    ):
        raise InputRejected(
            RejectReason.unsupported_version,
            f"schema_version {obj['schema_version']!r:.100} not in {sorted(SUPPORTED_VERSIONS)}",
        )


def _load_json(raw: bytes | str) -> Any:
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InputRejected(RejectReason.malformed_json, f"not valid UTF-8 JSON: {exc}"[:500]) from None
    # A "\ud800"-style escape decodes to a lone surrogate that can never be written out again as
    # UTF-8: accepting it would make sending the alert/transcript fail later (found by fuzzing).
    if (b"\\ud" if isinstance(raw, bytes) else "\\ud") in raw.lower():
        try:
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise InputRejected(RejectReason.malformed_json, "string with an unpaired UTF-16 surrogate escape") from None
    return obj


def parse_call_event(raw: bytes | str) -> CallEvent:
    """Parse and validate one call event; raise :class:`InputRejected` with a reason otherwise."""
    obj = _load_json(raw)
    if not isinstance(obj, dict):
        raise InputRejected(RejectReason.malformed_json, f"expected a JSON object, got {type(obj).__name__}")
    _check_version(obj)
    try:
        return CALL_EVENT_ADAPTER.validate_python(obj)
    except ValidationError as exc:
        raise _classify(exc) from None


def parse_message(model: type[_Message], raw: bytes | str) -> Any:
    """Parse any single-type message (ticks, transcripts, acks, alerts) with the same rejection rules."""
    obj = _load_json(raw)
    if not isinstance(obj, dict):
        raise InputRejected(RejectReason.malformed_json, f"expected a JSON object, got {type(obj).__name__}")
    _check_version(obj)
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        raise _classify(exc) from None


#: Messages documented in docs/schemas.md and printed by ``streamproc schemas``.
DOCUMENTED_MESSAGES: dict[str, Any] = {
    "calls.events": CALL_EVENT_ADAPTER,
    "calls.audio (headers)": TypeAdapter(AudioFrameMeta),
    "calls.alerts": TypeAdapter(Alert),
    "calls.transcripts": TRANSCRIPT_ADAPTER,
    "calls.acks": TypeAdapter(AlertAck),
    "calls.deadletter": TypeAdapter(DeadLetter),
    "calls.ticks": TypeAdapter(Tick),
    "calls.risk": TypeAdapter(CallRisk),
    "calls.summaries": TypeAdapter(CallSummary),
}
