"""The app's topics and its table. Imports only the app: any agent module can import this one."""

from __future__ import annotations

import faust

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
