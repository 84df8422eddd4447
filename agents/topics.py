"""The app's topics and its table. Imports only the app: any agent module can import this one."""

from __future__ import annotations

from typing import Any, Callable

import faust
from faust.streams import current_event

from .app import app, settings


def _topic(name: str) -> faust.TopicT:
    return app.topic(settings.topic(name), key_type=bytes, value_type=bytes, partitions=settings.partitions)


ticks_topic = _topic("ticks")
# One channel over both topics: ticks and events of a call share a partition number, so
# the agent instance that owns the call's state table partition sees both.
call_inputs = app.topic(
    settings.topic("events"), settings.topic("ticks"), key_type=bytes, value_type=bytes, partitions=settings.partitions
)
audio_topic = _topic("audio")  # raw audio, metadata in headers (streamproc.schemas.AudioFrameMeta)
transcripts_topic = _topic("transcripts")
alerts_topic = _topic("alerts")
acks_topic = _topic("acks")
deadletter_topic = _topic("deadletter")
risk_topic = _topic("risk")  # live call risk scores (streamproc.schemas.CallRisk), for the dashboard
summaries_topic = _topic("summaries")  # post-call summaries (streamproc.schemas.CallSummary)
# The summary agent folds everything a call produced; every topic is keyed by call id with the same
# partition count, so one agent instance sees all records of a call (and its table partition).
summary_inputs = app.topic(
    settings.topic("events"), settings.topic("transcripts"), settings.topic("alerts"), settings.topic("ticks"),
    key_type=bytes, value_type=bytes, partitions=settings.partitions,
)

#: Per-call state, written only by the events agent (agents/calls.py); values are
#: streamproc.detect.hold.CallState as JSON. Read it with :func:`stored_state`.
call_state = app.Table(
    "call-state",
    default=None,
    schema=faust.Schema(key_serializer="json", value_serializer="json"),
    partitions=settings.partitions,
    help="Per-call state: status, holds, alerts already fired (streamproc.detect.hold.CallState).",
)

#: Per-call summary accumulator, written only by agents/summaries.py; values are
#: streamproc.summary.SummaryState as JSON. Changelog-backed: a restart mid-call keeps what was folded.
summary_state = app.Table(
    "call-summaries",
    default=None,
    schema=faust.Schema(key_serializer="json", value_serializer="json"),
    partitions=settings.partitions,
    help="Per-call post-call summary accumulator (streamproc.summary.SummaryState).",
)

class CallKeyedTable(faust.Table):
    """A table keyed by call id that timers may write as well as agents.

    Faust writes a key's change to the changelog partition of the record being processed and
    refuses a write outside stream iteration. The detection timers (windows closing, risk score,
    finished calls) change detection state without a record: there the partition is the one the
    call's records arrive on, from :attr:`partition_of` (agents/detection.py sets it).
    """

    #: call id → partition of its input records (None: unknown, the write is refused as Faust would).
    partition_of: Callable[[Any], int | None] = staticmethod(lambda key: None)

    def partition_for_key(self, key: Any) -> int | None:
        if current_event() is not None:
            return super().partition_for_key(key)
        partition = self.partition_of(key)
        if partition is None:
            raise RuntimeError(f"table {self.name}: no partition known for key {key!r} outside a stream record")
        return partition


#: Per-call detection state (streamproc.detect.snapshot.DetectionSnapshot as JSON), written by the
#: detection agent, the audio features path and the detection timers; read by whichever worker
#: owns the call next (docs/state-and-restarts.md, "Detection state").
detection_state = CallKeyedTable(
    app,
    name="detection-state",
    default=None,
    beacon=app.tables.beacon,
    partitions=settings.partitions,
    schema=faust.Schema(key_serializer="json", value_serializer="json"),
    help="Per-call detection state: cooldowns, sentiment and said/not-said windows, risk levels.",
)
app.tables.add(detection_state)
