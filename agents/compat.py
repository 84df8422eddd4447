"""Fixes to Faust's Kafka driver, as subclasses the app wires in (``StreamprocApp._new_transport``).

Nothing here patches Faust or aiokafka process-wide: the fixes live in subclasses of Faust's
aiokafka ``Transport``, ``Consumer`` and ``AIOKafkaConsumerThread``, and only an app that builds
its transport through :func:`transport_class` uses them. Each fix can be switched off on its own
(:class:`DriverFixes`, the ``driver_fixes`` attribute of ``StreamprocApp``); all are on by default.

They override private methods of faust-streaming's aiokafka driver, so :func:`check_versions`
refuses to start on a faust-streaming or aiokafka version they were not tested with.

1. Table recovery trusts fetch high watermarks instead of ListOffsets (``verified_end_offsets``).

   Faust decides how far to replay a changelog with ``consumer.end_offsets()``. Tansu (the
   embedded dev broker) answers ListOffsets(latest) with the last batch's base offset + 1,
   so recovery stopped early and lost the tail of the last changelog batch (19 of 50,000
   updates in a measurement). The fix asks a short-lived consumer to fetch from just before
   the reported end and takes the high watermark from the fetch response
   (:func:`streamproc.kafka_admin.true_end_offsets`), which is right on every broker; on Apache
   Kafka it returns the same numbers at the cost of one fetch per changelog partition during
   recovery.

2. Low fetch latency (``fetch_max_wait_ms``).

   Faust hard-codes aiokafka's fetch_max_wait_ms=1500. Against Tansu that adds ~0.38 s to every
   hop (measured: 383 ms at 1500, 14 ms at 100 with raw aiokafka), and the hold path has two hops
   (tick, alert). 100 ms costs one idle fetch per 100 ms per broker.

3. The fetcher is stopped while recovery seeks the stream partitions (``flow_stopped_seek``).

   At the end of recovery Faust (0.15.3, Recovery.on_recovery_completed/_resume_streams) resumes
   the stream partitions, *then* awaits ``consumer.perform_seek()``, then calls
   ``app.flow_control.resume()``, which clears every stream buffer (clear_on_resume), then
   ``consumer.resume_flow()``. The fetcher keeps running during the awaited seek: records aiokafka
   had prefetched for a partition can be drained into the stream buffer *after* that partition
   was seeked (its aiokafka position moves past them), and the clear then throws them away. Only
   Faust's read offset goes back to the committed offset; aiokafka's position does not, so those
   records are never fetched again. Measured on a new worker after a SIGKILL: one of 19 waiting
   audio frames reached the agent (taken out of the buffer before the clear), then nothing
   (aiokafka position 32 = high watermark, Faust read offset 12 = committed, buffer empty).
   Pausing the partitions instead is not enough: Faust silently drops records of a paused
   partition that an in-flight fetch already returned. Stopping the flow uses Faust's own
   guard: a fetch that returns while the flow is stopped seeks back to the committed offsets,
   nothing is delivered until Faust calls resume_flow() right after the clear, and what was
   delivered before is fetched again from the positions this seek sets.

4. Under ``exactly_once`` the table's changelog writes go into the transaction they belong to
   (``flush_before_transaction_commit``).

   Table writes are buffered (``changelog_topic.send_soon``: Faust's ProducerBuffer) and published
   by a background task. Before an ``at_least_once`` offset commit Faust 0.15.3 flushes that buffer
   (Consumer._commit_offsets: ``await self.app.producer.flush()``); before a transactional commit it
   does not. A state change made while processing record N could then be published *after* the
   transaction that commits N's offset, into the next one; a SIGKILL before that one commits aborts
   it, while N's offset stays committed: the state change is lost and N is not replayed. Found by
   reading Faust's commit path, not isolated in a measurement (the duplicate warning first seen in
   tests/integration/test_restart.py under exactly_once was fix 5's hole). The fix flushes the
   buffer (as Faust does without transactions) after the offsets to commit are chosen and before
   the transaction that carries them is committed.

5. Under ``exactly_once`` outputs to topics the app does not consume go into the transaction of
   the record being processed, on the partition asked for (``transactional_outputs``).

   Faust 0.15.3's ``TransactionManager.send`` picks the transaction from the *consumer's* metadata
   for the destination topic. For a topic no agent consumes (calls.alerts, calls.deadletter) it has
   none, so it sends with no transactional id (the plain producer, outside every transaction: the
   alert is visible at once and not undone when the transaction carrying the table's "fired" mark
   and the input offset is aborted) and drops the ``partition=`` argument (the key is re-hashed).
   Traced on Apache Kafka: the alert at offset 0 of calls.alerts with no commit marker after it,
   the "fired" changelog write in the open transaction, a SIGKILL, and the new worker firing the
   same alert again. The fix sends such a record, when there is a current event, through the
   transaction of the event's topic group and partition (``<app>-<group>-<partition>``, the one
   committed with that event's offset), keeping the requested partition.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping

import aiokafka
import faust
import faust.transport.consumer
from faust.streams import current_event
from faust.transport.drivers import aiokafka as faust_aiokafka

from streamproc.kafka_admin import true_end_offsets

log = logging.getLogger(__name__)

#: Versions the fixes were tested with: they override private methods of these exact releases.
TESTED_VERSIONS: dict[str, tuple[str, ...]] = {
    "faust-streaming": ("0.15.3",),
    "aiokafka": ("0.14.0",),
}
#: Setting (environment variable) that lets a worker start on an untested version anyway.
OVERRIDE_ENV = "STREAMPROC_ALLOW_UNTESTED_FAUST"


class UntestedFaustVersion(RuntimeError):
    """The installed faust-streaming or aiokafka is not a version the driver fixes were tested with."""


def installed_versions() -> dict[str, str]:
    return {"faust-streaming": faust.__version__, "aiokafka": aiokafka.__version__}


def check_versions(*, allow_untested: bool = False, installed: Mapping[str, str] | None = None) -> None:
    """Fail loudly when the driver fixes would override methods of an untested release."""
    installed = installed_versions() if installed is None else installed
    untested = {name: version for name, version in installed.items() if version not in TESTED_VERSIONS.get(name, ())}
    if not untested:
        return
    found = ", ".join(f"{name} {version} (tested: {', '.join(TESTED_VERSIONS[name])})" for name, version in untested.items())
    message = (
        f"agents/compat.py overrides private internals of Faust's Kafka driver and was not tested with {found}. "
        f"Check the fixes against that release and add it to agents.compat.TESTED_VERSIONS, "
        f"or set {OVERRIDE_ENV}=true to start anyway."
    )
    if not allow_untested:
        raise UntestedFaustVersion(message)
    log.warning("%s (starting anyway: %s is set)", message, OVERRIDE_ENV)


@dataclass(frozen=True)
class DriverFixes:
    """Which fixes the app's Kafka driver applies (all on by default; see the module docstring)."""

    verified_end_offsets: bool = True
    fetch_max_wait_ms: int | None = 100  # None: Faust's own 1500 ms
    flow_stopped_seek: bool = True
    flush_before_transaction_commit: bool = True
    transactional_outputs: bool = True


def _fixes(app: Any) -> DriverFixes:
    return getattr(app, "driver_fixes", None) or DriverFixes()


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's aiokafka consumer thread with fixes 1 and 2."""

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        wait_ms = _fixes(self.app).fetch_max_wait_ms
        if wait_ms is not None:
            # aiokafka takes no setter: AIOKafkaConsumer.start() reads this when it builds the fetcher.
            consumer._fetch_max_wait_ms = wait_ms
        return consumer

    async def _highwaters(self, partitions: list) -> Mapping:
        listed = await super()._highwaters(partitions)
        if self.consumer.in_transaction or not _fixes(self.app).verified_end_offsets:
            return listed
        conf = self.app.conf
        return await true_end_offsets(
            faust_aiokafka.server_list(conf.broker_consumer or conf.broker, 9092),
            partitions,
            listed,
            client_options=faust_aiokafka.credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context),
        )


class Consumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer with fix 3, running :class:`ConsumerThread`."""

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def perform_seek(self) -> None:
        if not _fixes(self.app).flow_stopped_seek or not self.flow_active:
            # Fix off, or a rebalance is in progress (or getmany's own seek): nothing is delivered.
            await super().perform_seek()
            return
        # End of recovery: Faust resumes the flow itself once the stream buffers are cleared.
        self.stop_flow()
        try:
            await super().perform_seek()
        except Exception:
            self.resume_flow()  # the seek failed: leave the flow as Faust had it
            raise

    async def _commit_offsets(self, offsets: Mapping, start_new_transaction: bool = True) -> bool:
        if self.in_transaction and _fixes(self.app).flush_before_transaction_commit:
            # Fix 4: publish buffered changelog writes into the transaction that commits these offsets.
            await self.app.producer.flush()
        return await super()._commit_offsets(offsets, start_new_transaction=start_new_transaction)


class TransactionManager(faust.transport.consumer.TransactionManager):
    """Faust's transaction manager with fix 5."""

    async def send(self, topic, key, value, partition, timestamp, headers, *, transactional_id=None):
        event = current_event()
        if (
            _fixes(self.app).transactional_outputs
            and event is not None
            and self.consumer.key_partition(topic, key, partition) is None  # a topic the consumer does not know
        ):
            source = event.message
            group = self.app.assignor.group_for_topic(source.topic)
            return await self.producer.send(
                topic, key, value, partition, timestamp, headers,
                transactional_id=f"{self.app.conf.id}-{group}-{source.partition}",
            )
        return await super().send(topic, key, value, partition, timestamp, headers, transactional_id=transactional_id)


class Transport(faust_aiokafka.Transport):
    """Faust's aiokafka transport whose consumer is :class:`Consumer`, with :class:`TransactionManager`."""

    Consumer = Consumer
    TransactionManager = TransactionManager


def transport_class(default: type) -> type:
    """The transport the app uses for a broker URL: ours for Faust's aiokafka driver, else Faust's."""
    if isinstance(default, type) and issubclass(default, faust_aiokafka.Transport):
        return Transport
    return default
