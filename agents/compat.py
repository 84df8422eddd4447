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

6. Positions the broker no longer has are detected and re-read from what is left (``lost_offsets``).

   A broker can lose records the worker already consumed: a dev broker with memory storage that
   restarts empty, a deleted and recreated topic, an unclean leader election. Faust 0.15.3 then
   (a) refuses to recover a table whose changelog now ends before the offset it had recovered up to
   (``Recovery`` raises ``ConsistencyError``; measured: the recovery service crashes and the worker
   stops, tests/integration/test_faults.py ``broker_stop``), or, without the consistency check,
   waits for changelog offsets that will never come; and (b) seeks an input partition to a
   committed offset past the log end, aiokafka resets the fetch position to the earliest offset,
   and Faust silently drops every record below the remembered read offset (new calls ignored
   until the new log grows past the old position). The fix compares every such position with the
   log's start and end (``streamproc.offsets.check_position``) when a table's recovery starts
   (:class:`Recovery`), after the stream partitions are seeked to their committed offsets and every
   few seconds while running (:class:`Consumer`), and re-reads the partition from the earliest
   offset left; each reset counts in ``streamproc_offsets_reset_total{topic_kind,reason}`` and logs
   a warning naming the partition and the offsets lost. A topic deleted under the worker drops out
   of the group's assignment, and aiokafka notices it recreated only at its next metadata refresh
   (``metadata_max_age_ms``, 5 minutes; measured on Apache Kafka: no new call processed for 60 s):
   while a subscribed topic has no assigned partition, the same timer lists the cluster's topics
   and refreshes the consumer's metadata once it exists again, so the group rebalances with it.

7. A table recovery that stalls is restarted, with a diagnosis (``restart_stalled_recovery``).

   Seen once in CI (Apache Kafka, tests/integration/test_faults.py rebalance test; the first failure
   in the 11 CI runs on record): after the first of two workers left, the second worker's recovery
   received no changelog record for 55 s, so it never finished and the worker processed nothing
   more (104 of 210 alerts never came). Not reproduced here in 8 runs of that test (6 idle, 2 with
   both CPUs saturated) nor in a run of all 35 ``[kafka]`` integration tests; the log kept only
   Faust's "No event received for active tp" warnings, not where recovery was waiting. Faust 0.15.3
   restarts a recovery only when a new rebalance starts. :class:`Recovery` watches its own progress
   from the moment a rebalance asks it to start until the worker is ready: when neither a recovery
   step nor a changelog record has come for ``RECOVERY_STALL_S`` (doubling after each restart),
   it logs where the recovery, fetcher and consumer-thread tasks
   are waiting and the consumer's flow state, counts ``streamproc_recovery_restarts_total``, stops
   the consumer flow (Faust's drain loop gives up a record it is blocked handing over), resets the
   fetcher service if its task has ended (``maybe_start`` would not restart it) and signals a
   recovery start, which Faust's own loop handles as it does a rebalance during recovery: flush,
   end offsets, seek, resume the flow, start the fetcher. Safe for the streams: during recovery
   their partitions are paused, and at its end they are seeked to their committed offsets before
   anything is delivered. A call wedged inside the consumer thread is not undone by this; the
   diagnosis names it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from time import monotonic
from typing import Any, Iterable, Mapping

import aiokafka
import faust
import faust.tables
import faust.tables.recovery
import faust.transport.consumer
from faust.streams import current_event
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from mode import Service
from mode.utils.tracebacks import Traceback

from streamproc import metrics
from streamproc.kafka_admin import true_end_offsets
from streamproc.offsets import LostPosition, OffsetLoss, check_position

log = logging.getLogger(__name__)

#: Versions the fixes were tested with: they override private methods of these exact releases.
TESTED_VERSIONS: dict[str, tuple[str, ...]] = {
    "faust-streaming": ("0.15.3",),
    "aiokafka": ("0.14.0",),
}
#: Fix 6: how often a running consumer compares what it has read with the last fetch's high watermarks.
LOST_OFFSETS_CHECK_INTERVAL_S = 5.0
#: Fix 7: a rebalance whose recovery has neither (re)started nor received a changelog record for this long has it
#: restarted (the limit doubles after each restart).
RECOVERY_STALL_S = 20.0
#: Fix 7: how often recovery checks its own progress.
RECOVERY_WATCH_INTERVAL_S = 5.0
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
    lost_offsets: bool = True
    restart_stalled_recovery: bool = True


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

    async def refresh_metadata_if_present(self, topics: set[str]) -> set[str]:
        """Fresh metadata now (not at the next metadata_max_age, 5 min) when any of ``topics`` exists
        again; returns those that do. Asks for the list of all topics first: a metadata request naming
        a missing topic would make a broker with auto.create.topics.enable create it, with the
        broker's default partition count."""
        return await self.call_thread(self._refresh_metadata_if_present, topics)

    async def _refresh_metadata_if_present(self, topics: set[str]) -> set[str]:
        client = self._ensure_consumer()._client
        cluster = await client.fetch_all_metadata()
        present = {topic for topic in topics if cluster.partitions_for_topic(topic)}
        if present:
            await client.force_metadata_update()
        return present

    def subscribed_topics(self) -> set[str]:
        return set(self._ensure_consumer().subscription())

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

    #: Fix 6: unassigned subscribed topics already warned about / refreshed metadata for.
    _missing_logged: set[str] = set()
    _refreshed_for: set[str] = set()

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def perform_seek(self) -> None:
        if not _fixes(self.app).flow_stopped_seek or not self.flow_active:
            # Fix off, or a rebalance is in progress (or getmany's own seek): nothing is delivered.
            await super().perform_seek()
            await self._check_after_seek()
            return
        # End of recovery: Faust resumes the flow itself once the stream buffers are cleared.
        self.stop_flow()
        try:
            await super().perform_seek()
            await self._check_after_seek()  # fix 6, while nothing is delivered
        except Exception:
            self.resume_flow()  # the seek failed: leave the flow as Faust had it
            raise

    async def _commit_offsets(self, offsets: Mapping, start_new_transaction: bool = True) -> bool:
        if self.in_transaction and _fixes(self.app).flush_before_transaction_commit:
            # Fix 4: publish buffered changelog writes into the transaction that commits these offsets.
            await self.app.producer.flush()
        return await super()._commit_offsets(offsets, start_new_transaction=start_new_transaction)


    # ------------------------------------------------------------------ fix 6: positions the broker lost

    def _stream_partitions(self) -> list[TP]:
        changelogs = set(self.app.tables.changelog_topics)
        return [tp for tp in self.assignment() if tp.topic not in changelogs]

    async def reset_lost_positions(self, positions: Mapping[TP, int]) -> list[LostPosition]:
        """Re-read from the earliest offset left every partition whose position the log no longer has."""
        positions = {tp: offset for tp, offset in positions.items() if offset}  # 0 is always in range
        if not positions or not _fixes(self.app).lost_offsets:
            return []
        ends = await self.highwaters(*positions)  # fix 1: true high watermarks, right on Tansu too
        starts = await self.earliest_offsets(*positions)
        lost = []
        for tp, position in positions.items():
            found = check_position(tp.topic, tp.partition, position, starts.get(tp), ends.get(tp))
            if found is None:
                continue
            lost.append(found)
            metrics.OFFSETS_RESET.labels("input", found.loss.value).inc()
            log.warning("broker data loss: %s", found.describe("input partition"))
            # Faust drops records below the read offset it remembers and commits only offsets above the
            # committed one: forget both for this partition, with the acks counted against them.
            for bookkeeping in (self._acked, self._acked_index, self._gap, self._committed_offset):
                bookkeeping.pop(tp, None)
            await self.seek(tp, found.log_start)
        return lost

    async def _check_after_seek(self) -> None:
        positions = {tp: self._read_offset.get(tp) for tp in self._stream_partitions()}
        await self.reset_lost_positions({tp: offset for tp, offset in positions.items() if offset is not None})

    @Service.timer(LOST_OFFSETS_CHECK_INTERVAL_S)
    async def _watch_lost_positions(self) -> None:
        """A log truncated or recreated without a rebalance: the last fetch's high watermark is below
        what this worker has read (a read offset never exceeds the high watermark otherwise)."""
        if not _fixes(self.app).lost_offsets or not self.flow_active:
            return
        suspects = {}
        for tp in self._stream_partitions():
            read, end = self._read_offset.get(tp), self.highwater(tp)
            if read is not None and end is not None and read > end:
                suspects[tp] = read
        if suspects:
            await self.reset_lost_positions(suspects)
        await self._notice_recreated_topics()

    async def _notice_recreated_topics(self) -> None:
        """A subscribed topic deleted under the worker drops out of the assignment; aiokafka notices it
        again (and rejoins the group) only at its next metadata refresh, 5 minutes later. Our topics are
        co-partitioned: a worker that owns partitions of some of them owns the same ones of all."""
        assigned = {tp.topic for tp in self.assignment()}
        thread = self._thread
        if not assigned or not isinstance(thread, ConsumerThread):
            return
        missing = {topic for topic in thread.subscribed_topics() - assigned if "__assignor" not in topic}
        if not missing:
            self._refreshed_for = set()
            return
        # A topic that exists but stays unassigned after one refresh (fewer partitions than workers, say)
        # is not refreshed for again: one metadata request and one warning, not one every few seconds.
        unrefreshed = missing - self._refreshed_for
        back = await thread.refresh_metadata_if_present(unrefreshed) if unrefreshed else set()
        if missing != self._missing_logged or back:
            log.warning("subscribed topics %s have no assigned partition (deleted?)%s", sorted(missing),
                        f"; {sorted(back)} exist again (recreated): metadata refreshed, the group rebalances" if back else "")
        self._missing_logged = missing
        self._refreshed_for |= back


def _await_chain(task: asyncio.Task) -> list[str]:
    """Where a task is suspended, outermost coroutine first: mode's task traceback (Task.get_stack gives only the
    outermost frame), one ``file:line function`` per frame."""
    try:
        tb: Any = Traceback.from_task(task)
    except (AttributeError, RuntimeError):  # a task that ended meanwhile, or an awaitable mode does not know
        return []
    frames = []
    while tb is not None:
        frames.append(f"{Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno} {tb.tb_frame.f_code.co_name}")
        tb = tb.tb_next
    return frames


def waiting_tasks(tasks: Iterable[asyncio.Task], markers: tuple[str, ...], depth: int = 5) -> list[str]:
    """The innermost ``depth`` frames of each task whose await chain passes through a file or function in ``markers``."""
    found = []
    for task in list(tasks):
        chain = _await_chain(task)
        if any(marker in frame for frame in chain for marker in markers):
            found.append(" > ".join(chain[-depth:]))
    return sorted(found)


class Recovery(faust.tables.recovery.Recovery):
    """Faust's table recovery with fixes 6 and 7 for changelog partitions."""

    #: Fix 7: when this rebalance's recovery was signalled or last restarted (None: no rebalance in progress).
    _watch_since: float | None = None
    #: Fix 7: restarts of this rebalance's recovery, and which rebalance (the app's count) that is.
    _stall_restarts: int = 0
    _watched_rebalance: int = 0

    async def on_rebalance(self, *args: Any, **kwargs: Any) -> None:
        await super().on_rebalance(*args, **kwargs)
        self._watch_since, self._stall_restarts = monotonic(), 0
        self._watched_rebalance = self.app.rebalancing_count

    @Service.timer(RECOVERY_WATCH_INTERVAL_S)
    async def _watch_stalled_recovery(self) -> None:
        # Faust's in_recovery is no guide: its changelog reader declares recovery over whenever the end offsets
        # it knows of are reached, including while recovery is still asking for them. A rebalance lasts until
        # "Worker ready" (app.rebalancing).
        if not self.app.rebalancing or not _fixes(self.app).restart_stalled_recovery:
            self._watch_since = None
            return
        if self._watch_since is None or self._watched_rebalance != self.app.rebalancing_count:
            return  # a new rebalance whose partitions are not assigned yet (agents may still be finishing work)
        received = [*self._active_events_received_at.values(), *self._standby_events_received_at.values()]
        last_progress = max([self._watch_since, self._recovery_started_at or 0.0, *received])
        stalled_s = monotonic() - last_progress
        if stalled_s < RECOVERY_STALL_S * 2**self._stall_restarts:
            return
        self._stall_restarts += 1
        metrics.RECOVERY_RESTARTS.inc()
        log.warning(
            "table recovery stalled: no progress for %.0f s (%d changelog records still to read); restarting it "
            "(restart %d of this rebalance). %s",
            stalled_s, self.active_remaining_total(), self._stall_restarts, self.stall_diagnosis(),
        )
        app: Any = self.app
        # A fetcher blocked handing a record over gives up when the flow stops (Faust's drain loop waits on
        # the delivery or suspend_flow); the restarted recovery resumes the flow.
        app.consumer.stop_flow()
        if app._fetcher.state == "running" and not app._fetcher._futures:
            # Its task has ended but the service still counts as started: maybe_start() would not restart it.
            await app._stop_fetcher()  # Faust's own stop-and-reset, so that recovery can start it again
        self._watch_since = monotonic()
        self.signal_recovery_start.set()

    def stall_diagnosis(self) -> str:
        """What the recovery, the fetcher and the consumer thread are waiting on, and the consumer's flow state."""
        app: Any = self.app
        consumer: Any = app.consumer
        remaining = sorted(f"{tp.topic}[{tp.partition}]+{n}" for tp, n in self.active_remaining().items() if n > 0)
        active = consumer._active_partitions or set()
        parts = [
            f"remaining: {', '.join(remaining) or 'none'}",
            f"flow_active={consumer.flow_active} flow_control_active={app.flow_control.is_active()} "
            f"fetcher={app._fetcher.state} with {len(app._fetcher._futures)} task(s) running",
            f"changelog partitions fetched/paused/buffered: {sum(tp in active for tp in self.active_tps)}/"
            f"{len(self.active_tps & consumer._paused_partitions)}/{len(self.active_tps & consumer._buffered_partitions)} "
            f"of {len(self.active_tps)}",
            f"changelog queue: {self.tables.changelog_queue.qsize()}",
            "waiting: " + " | ".join(waiting_tasks(asyncio.all_tasks(), ("recovery.py", "conductor.py", "consumer.py", "compat.py"))),
        ]
        thread = getattr(consumer, "_thread", None)
        thread_loop = getattr(thread, "thread_loop", None)
        if thread_loop is not None:
            try:  # another thread's loop: its task set can change while read; this is a diagnosis only
                in_thread = waiting_tasks(asyncio.all_tasks(thread_loop), ("aiokafka", "compat.py", "kafka_admin.py", "threads.py"))
            except RuntimeError as exc:
                in_thread = [f"unreadable ({exc})"]
            parts.append("consumer thread: " + " | ".join(in_thread))
        return "; ".join(parts)

    async def _build_offsets(self, consumer, tps, destination, title: str) -> None:
        await super()._build_offsets(consumer, tps, destination, title)
        if not tps or not _fixes(self.app).lost_offsets:
            return
        # destination: the last changelog offset applied to the table (-1: none), kept across rebalances.
        applied = {tp: destination[tp] + 1 for tp in tps if destination.get(tp) is not None and destination[tp] >= 0}
        if not applied:
            return
        ends = await consumer.highwaters(*applied)
        starts = await consumer.earliest_offsets(*applied)
        for tp, position in applied.items():
            found = check_position(tp.topic, tp.partition, position, starts.get(tp), ends.get(tp))
            # before_start is compaction or retention at work (Faust already starts at the earliest offset)
            if found is None or found.loss is not OffsetLoss.beyond_end:
                continue
            metrics.OFFSETS_RESET.labels("changelog", found.loss.value).inc()
            log.warning(
                "broker data loss: %s Table keys only those records held keep the value this worker has in "
                "memory; a worker that recovers this partition later will not have them.",
                found.describe(f"table changelog ({title})"),
            )
            destination[tp] = found.log_start - 1


class TableManager(faust.tables.TableManager):
    """Faust's table manager whose recovery is :class:`Recovery`."""

    @property
    def recovery(self) -> faust.tables.recovery.Recovery:
        if self._recovery is None:
            self._recovery = Recovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery


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
