"""The Faust app. Topics and the table are in agents/topics.py, the agents in the modules of
:data:`AGENT_MODULES`, which Faust imports when the worker starts (``autodiscover``).

Run it with ``streamproc worker`` or the Faust way: ``faust -A agents.app worker``.
Both read the ``STREAMPROC_*`` settings (streamproc/config.py).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

import faust
from faust.transport import by_url
from faust.worker import Worker as FaustWorker

from streamproc.config import Settings, get_settings
from streamproc.kafka_admin import ensure_topics

from . import compat, prometheus

log = logging.getLogger("streamproc.worker")

settings: Settings = get_settings()

#: Modules holding agents, timers, tasks and pages. None of them is imported here: the worker
#: imports them (``app.discover()``) after the app exists, so there is no import loop.
AGENT_MODULES = [
    "agents.calls", "agents.detection", "agents.audio", "agents.summaries", "agents.dashboard", "agents.web",
]


def _credentials(s: Settings) -> Any:
    if s.security_protocol == "PLAINTEXT":
        return None
    context = ssl.create_default_context(cafile=str(s.ssl_cafile) if s.ssl_cafile else None)
    if s.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=s.sasl_username,
            password=s.sasl_password.get_secret_value() if s.sasl_password else None,
            mechanism=s.sasl_mechanism or "PLAIN",
            ssl_context=context if s.security_protocol == "SASL_SSL" else None,
        )
    return faust.SSLCredentials(context)


class StreamprocApp(faust.App):
    """Faust's App with our Kafka-driver fixes (agents/compat.py) and topic creation at start."""

    #: Which driver fixes the consumer applies; all on by default (agents/compat.py).
    driver_fixes: compat.DriverFixes = compat.DriverFixes()

    def __init__(self, *args: Any, allow_untested_faust: bool = False, **kwargs: Any) -> None:
        # Before anything builds a transport: the fixes override private methods of one release.
        compat.check_versions(allow_untested=allow_untested_faust)
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> Any:
        cls = compat.transport_class(by_url(self.conf.broker_consumer[0]))
        return cls(self.conf.broker_consumer, self)

    #: Coroutines run before Faust waits for every started record to be acked (rebalance and stop).
    #: The audio agent holds frames of unfinished utterances unacked; it finalises them here.
    before_wait_empty: list[Any] = []

    async def _consumer_wait_empty(self, consumer, logger) -> None:
        for release in self.before_wait_empty:
            await release()
        await super()._consumer_wait_empty(consumer, logger)

    async def on_first_start(self) -> None:
        await super().on_first_start()
        # Before the consumer subscribes: a metadata request for a missing topic would
        # auto-create it with the broker's default partition count.
        await asyncio.get_running_loop().run_in_executor(None, ensure_topics, settings)


class StreamprocWorker(FaustWorker):
    """Faust's worker without its terminal spinner.

    At ``--loglevel warning`` or ``error`` Faust's worker sets the root logger to DEBUG so that a spinner
    handler sees every record: every ``log.debug`` in aiokafka, mode and Faust then builds a LogRecord
    that the console handler throws away (aiokafka's fetcher logs per partition per fetch), on the
    event loop and the consumer thread, for the life of the worker. Without the spinner the root logger
    keeps the level asked for.
    """

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None
        super().on_setup_root_logger(logger, level)


app = StreamprocApp(
    settings.app_id,
    allow_untested_faust=settings.allow_untested_faust,
    autodiscover=AGENT_MODULES,
    broker=settings.broker,
    broker_credentials=_credentials(settings),
    key_serializer="raw",
    value_serializer="raw",
    topic_partitions=settings.partitions,
    topic_replication_factor=settings.replication_factor,
    # at_least_once by default: measured against exactly_once on Apache Kafka, same alerts, no duplicates,
    # 41 % more throughput; Tansu rejects transactions (docs/state-and-restarts.md, the decision).
    processing_guarantee=settings.processing_guarantee,
    # Tansu makes a group join wait half the session timeout: keep it short.
    broker_session_timeout=6,
    broker_heartbeat_interval=1,
    broker_rebalance_timeout=6,
    consumer_auto_offset_reset="earliest",
    Worker=StreamprocWorker,  # `faust -A agents.app worker` too
    TableManager=compat.TableManager,  # fix 6: changelog offsets the broker lost (agents/compat.py)
    store="memory://",
    datadir=str(settings.data_dir),
    web_enabled=True,
    web_bind=settings.web_host,
    web_host=settings.web_host,
    web_port=settings.web_port,
    web_in_thread=False,
)

# Faust's sensor metrics with conforming names next to ours (agents/prometheus.py, docs/metrics.md).
prometheus.setup(app)
