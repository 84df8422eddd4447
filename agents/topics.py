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

#: Per-call state, written only by the events agent (agents/calls.py); values are
#: streamproc.detect.hold.CallState as JSON. Read it with :func:`stored_state`.
call_state = app.Table(
    "call-state",
    default=None,
    schema=faust.Schema(key_serializer="json", value_serializer="json"),
    partitions=settings.partitions,
    help="Per-call state: status, holds, alerts already fired (streamproc.detect.hold.CallState).",
)
