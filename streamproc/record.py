"""The one shape of every record path: parse and validate, then decide, then outputs. No Faust.

Each agent hands a raw Kafka record (a :class:`RecordRef`) to a function here and gets back a
:class:`RecordResult`: what to store, which alerts, dead letters and transcript segments to send.
The agent only does the I/O (agents/outputs.py). Bad input never raises out of these functions:

* a parser or state machine raises :class:`~streamproc.errors.InputRejected` with a reason;
* :func:`guarded` / :func:`guarded_async` turn that, or any unexpected exception (a bug), into a
  dead letter (:func:`rejected`), so one bad record never stops a stream.

The three paths:

========================  ===========================  =====================================
record                    parse and validate            decide
========================  ===========================  =====================================
``calls.events``/ticks    :func:`parse_call_event`,     :mod:`streamproc.detect.hold` via
                          :func:`check_key`             :class:`streamproc.processing.CallProcessor`
``calls.transcripts``     :func:`process_transcript_    :class:`streamproc.detect.engine.DetectionEngine`
                          record`, :func:`check_key`
``calls.audio``           :func:`parse_audio_frame`     :class:`streamproc.transcribe.Transcriber`
                          (headers + key)               (the audio agent's lanes)
========================  ===========================  =====================================
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from . import metrics
from .errors import InputRejected, RejectReason
from .schemas import Alert, AudioFrameMeta, DeadLetter, TranscriptSegment, parse_message

if TYPE_CHECKING:  # pragma: no cover
    from .detect.acoustic import AudioFeatures
    from .detect.engine import CallInfo, DetectionEngine
    from .detect.hold import CallState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecordRef:
    """One input record as the agent read it: where it came from and its raw bytes."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None
    offset: int | None = None

    @property
    def key_text(self) -> str | None:
        return self.key.decode("utf-8", "replace") if isinstance(self.key, bytes) else None


@dataclass
class RecordResult:
    """What the agent must do after one input record: store, then send."""

    call_id: str | None
    store: dict[str, Any] | None = None  # new call-state table value (JSON-able) to write
    delete: bool = False  # remove the call from the table
    state: CallState | None = None  # the call state after the record (for the hold timer's deadline index)
    alerts: list[Alert] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    segments: list[TranscriptSegment] = field(default_factory=list)  # audio: transcript segments to publish
    features: list[AudioFeatures] = field(default_factory=list)  # audio: levels for the acoustic detectors
    stage: str = "done"  # transcripts: partial | final | ignored; any path: rejected

    @property
    def rejection(self) -> RejectReason | None:
        return self.dead_letters[0].reason if self.dead_letters else None


def check_key(key: bytes | None, call_id: str | None) -> str:
    """The record key must be the call id: every topic is partitioned by call id.

    With ``call_id=None`` (audio frames carry the call id only in the key) the key must just be set.
    Returns the call id.
    """
    key_text = key.decode("utf-8", "replace") if key is not None else None
    if call_id is None:
        if not key_text:
            raise InputRejected(RejectReason.key_mismatch, "record key must be the call id")
        return key_text
    if key_text != call_id:
        # Unkeyed or mis-keyed records land on the wrong partition and split a call's state.
        raise InputRejected(
            RejectReason.key_mismatch,
            f"record key {key_text!r} must equal call_id {call_id!r} (calls are partitioned by call id)",
        )
    return call_id


def dead_letter(rejection: InputRejected, ref: RecordRef) -> DeadLetter:
    """The dead letter for a rejected record (counted in ``streamproc_dead_letters_total``)."""
    metrics.DEAD_LETTERS.labels(rejection.reason.value).inc()
    return DeadLetter.of(
        rejection, source_topic=ref.topic, payload=ref.value, key=ref.key, partition=ref.partition, offset=ref.offset
    )


def rejected(ref: RecordRef, exc: BaseException) -> RecordResult:
    """A result carrying only the dead letter for ``exc``; a non-rejection exception is logged as a bug.

    Call it inside the ``except`` block so the traceback is logged.
    """
    if not isinstance(exc, InputRejected):
        log.exception("internal error processing record %s[%s]@%s", ref.topic, ref.partition, ref.offset)
        exc = InputRejected(RejectReason.internal_error, f"{type(exc).__name__}: {exc}"[:500])
    return RecordResult(call_id=ref.key_text, dead_letters=[dead_letter(exc, ref)], stage="rejected")


def guarded(ref: RecordRef, decide: Callable[[], RecordResult]) -> RecordResult:
    """Run one record's parse-and-decide; a rejection or a bug becomes a dead letter."""
    try:
        return decide()
    except Exception as exc:  # a bug must not stop the stream: dead-letter the input and log it
        return rejected(ref, exc)


async def guarded_async(ref: RecordRef, decide: Callable[[], Awaitable[RecordResult]]) -> RecordResult:
    """:func:`guarded` for a decision that awaits (the audio path decodes in an executor)."""
    try:
        return await decide()
    except Exception as exc:  # a bug must not stop the stream: dead-letter the input and log it
        return rejected(ref, exc)


# ---------------------------------------------------------------------- transcripts


def process_transcript_record(
    engine: DetectionEngine,
    *,
    key: bytes | None,
    value: bytes | None,
    info_for: Callable[[str], CallInfo | None],
    now: float,
    topic: str,
    partition: int | None = None,
    offset: int | None = None,
) -> RecordResult:
    """Parse one ``calls.transcripts`` record and run the detectors on it."""
    ref = RecordRef(topic, key, value, partition, offset)

    def decide() -> RecordResult:
        segment: TranscriptSegment = parse_message(TranscriptSegment, value or b"")
        check_key(key, segment.call_id)
        result = engine.on_transcript(segment, info_for(segment.call_id), now)
        if result.unconfirmed:
            metrics.DETECTION_UNCONFIRMED.inc(result.unconfirmed)
        stage = "ignored" if result.ignored else "final" if segment.is_final else "partial"
        return RecordResult(segment.call_id, alerts=result.alerts, stage=stage)

    return guarded(ref, decide)


# ---------------------------------------------------------------------- audio


def parse_audio_frame(key: bytes | None, headers: Any) -> tuple[str, AudioFrameMeta]:
    """Call id (the record key) and frame metadata (the headers) of one ``calls.audio`` record."""
    call_id = check_key(key, None)
    return call_id, AudioFrameMeta.from_headers(headers or [])
