"""The Faust app: settings, topics and tables. Agents live in sibling modules.

Run it with ``streamproc worker`` or the Faust way: ``faust -A agents.app worker``.
Both read the ``STREAMPROC_*`` settings (streamproc/config.py).
"""

from __future__ import annotations

import asyncio
import logging

import faust

from streamproc.config import Settings, get_settings
from streamproc.kafka_admin import ensure_topics
from streamproc.rules import RulesWatcher
from streamproc import metrics

from . import compat, prometheus

compat.install()
log = logging.getLogger("streamproc.worker")

settings: Settings = get_settings()


def _credentials(s: Settings):
    if s.security_protocol == "PLAINTEXT":
        return None
    if s.security_protocol.startswith("SASL"):
        import ssl

        context = ssl.create_default_context(cafile=str(s.ssl_cafile) if s.ssl_cafile else None)
        return faust.SASLCredentials(
            username=s.sasl_username,
            password=s.sasl_password,
            mechanism=s.sasl_mechanism or "PLAIN",
            ssl_context=context if s.security_protocol == "SASL_SSL" else None,
        )
    import ssl

    return faust.SSLCredentials(ssl.create_default_context(cafile=str(s.ssl_cafile) if s.ssl_cafile else None))


class StreamprocApp(faust.App):
    async def on_first_start(self) -> None:
        await super().on_first_start()
        # Before the consumer subscribes: a metadata request for a missing topic would
        # auto-create it with the broker's default partition count.
        await asyncio.get_running_loop().run_in_executor(None, ensure_topics, settings)


app = StreamprocApp(
    settings.app_id,
    broker=settings.broker,
    broker_credentials=_credentials(settings),
    key_serializer="raw",
    value_serializer="raw",
    topic_partitions=settings.partitions,
    topic_replication_factor=settings.replication_factor,
    # at_least_once by default: alerts are idempotent by id; Tansu rejects transactions (docs/state-and-restarts.md).
    processing_guarantee=settings.processing_guarantee,
    # Tansu makes a group join wait half the session timeout: keep it short.
    broker_session_timeout=6,
    broker_heartbeat_interval=1,
    broker_rebalance_timeout=6,
    consumer_auto_offset_reset="earliest",
    store="memory://",
    datadir=str(settings.data_dir),
    web_enabled=True,
    web_bind=settings.web_host,
    web_host=settings.web_host,
    web_port=settings.web_port,
    web_in_thread=False,
)

# Hot reload: agents/detection.py checks the file every settings.rules_reload_interval_s; a bad
# new file is rejected and these rules stay. Read the live rules with current_rules().
rules_watcher = RulesWatcher(settings.rules_file)
rules_file = rules_watcher.current()  # the rules at start (kept for old imports)
metrics.RULES_LOADED.set_to_current_time()


def current_rules():
    return rules_watcher.current()

events_topic = app.topic(settings.topic("events"), key_type=bytes, value_type=bytes, partitions=settings.partitions)
ticks_topic = app.topic(settings.topic("ticks"), key_type=bytes, value_type=bytes, partitions=settings.partitions)
# One channel over both topics: ticks and events of a call share a partition number, so
# the agent instance that owns the call's state table partition sees both.
call_inputs = app.topic(
    settings.topic("events"), settings.topic("ticks"), key_type=bytes, value_type=bytes, partitions=settings.partitions
)


def _topic(name: str):
    return app.topic(settings.topic(name), key_type=bytes, value_type=bytes, partitions=settings.partitions)


audio_topic = _topic("audio")  # raw audio, metadata in headers (streamproc.schemas.AudioFrameMeta)
transcripts_topic = _topic("transcripts")
alerts_topic = _topic("alerts")
acks_topic = _topic("acks")
deadletter_topic = _topic("deadletter")

call_state = app.Table(
    "call-state",
    default=None,
    schema=faust.Schema(key_serializer="json", value_serializer="json"),
    partitions=settings.partitions,
    help="Per-call state: status, holds, alerts already fired (streamproc.detect.hold.CallState).",
)

# Faust's sensor metrics with conforming names next to ours (agents/prometheus.py, docs/metrics.md).
prometheus.setup(app)

from . import calls, web  # noqa: E402,F401  (registers the agents, timers and pages)
from . import dashboard  # noqa: E402,F401  (supervisor dashboard at /, docs/dashboard.md)
from . import audio  # noqa: E402,F401  (live audio → Vosk → calls.transcripts, docs/audio.md)
from . import detection  # noqa: E402,F401  (transcripts/audio features → detectors → alerts, docs/detection.md)
