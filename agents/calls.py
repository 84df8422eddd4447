"""Call events → call-state table, hold timer → ticks → hold alerts. Wiring only.

Decisions live in streamproc.detect.hold (what is a breach) and streamproc.processing
(parsing, dead letters, metrics; the shared record-path shape of streamproc/record.py). This
module reads and writes Kafka and the table.
"""

from __future__ import annotations

import logging
import time

from faust.types import TP

from streamproc import metrics
from streamproc.processing import CallProcessor, DeadlineIndex, tick_for
from streamproc.record import RecordResult

from .app import app, settings
from .outputs import send_result, send_tick
from .shared import current_rules
from .topics import call_inputs, call_state

log = logging.getLogger("streamproc.worker")

EVENTS_TOPIC = settings.topic("events")
TICKS_TOPIC = settings.topic("ticks")
REBUILD_EVERY_S = 5.0


processor = CallProcessor(
    current_rules,
    retention_s=settings.ended_call_retention_s,
    ticks_topic=TICKS_TOPIC,
)
deadlines = DeadlineIndex(current_rules, settings.ended_call_retention_s)


async def apply_step(step: RecordResult, partition: int | None) -> None:
    """Write the step's state to the table and send its alerts and dead letters."""
    if step.call_id is not None:
        if step.delete:
            call_state.pop(step.call_id, None)
        elif step.store is not None:
            call_state[step.call_id] = step.store
        if step.state is not None or step.delete:
            deadlines.update(step.call_id, None if step.delete else step.state)
    await send_result(step, partition)


@app.agent(call_inputs)
async def process_call_inputs(stream):
    async for event in stream.events():
        message = event.message
        if message.topic == TICKS_TOPIC and not events_caught_up(message.partition):
            # Events of this partition fetched with (or before) the tick are not processed yet: one may
            # be the hold_ended that makes the tick moot. Set the tick aside; the timer sends another.
            metrics.TICKS_DEFERRED.inc()
            if message.key:
                deadlines.retick(message.key.decode("utf-8", "replace"))
            continue
        step = processor.process(
            topic=message.topic,
            key=message.key,
            value=message.value,
            load_state=call_state.get,
            partition=message.partition,
            offset=message.offset,
        )
        await apply_step(step, message.partition)
        if message.topic == EVENTS_TOPIC:
            events_processed_upto[message.partition] = message.offset + 1


#: partition → next offset of calls.events this worker has processed (not just fetched).
events_processed_upto: dict[int, int] = {}


def events_caught_up(partition: int) -> bool:
    """Every call event of this partition the broker had at our last fetch has been processed.

    A tick is only safe once that holds: after a takeover (or under a backlog) a hold_ended may
    still wait in calls.events, or sit behind the tick in the stream, and processing the tick
    first would fire a breach that never happened in event time.
    """
    tp = TP(EVENTS_TOPIC, partition)
    highwater = app.consumer.highwater(tp)  # from the last fetch response
    if highwater is None:  # nothing fetched since the assignment yet
        return False
    committed = app.consumer._committed_offset.get(tp) or 0  # covers events another owner processed
    return max(events_processed_upto.get(partition, 0), committed) >= highwater


def owned_partitions() -> set[int]:
    """Partitions of the events topic this worker actively owns (standby copies excluded)."""
    return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == EVENTS_TOPIC}


_last_rebuild = {"at": 0.0, "generation": None}


@app.timer(interval=settings.tick_interval_s)
async def hold_timer() -> None:
    now = time.time()
    generation = app.consumer_generation_id
    if generation != _last_rebuild["generation"] or now - _last_rebuild["at"] > REBUILD_EVERY_S:
        # After recovery or a rebalance the table holds calls we have not processed ourselves.
        deadlines.rebuild(list(call_state.items()))
        _last_rebuild.update(at=now, generation=generation)
    owned = owned_partitions()
    tickable = {partition for partition in owned if events_caught_up(partition)}
    for call_id, lateness in deadlines.due(now, tickable.__contains__):
        metrics.TICKS.inc()
        metrics.TIMER_LAG.observe(max(0.0, lateness))
        partition = deadlines.partition_of(call_id)
        await send_tick(call_id.encode(), tick_for(call_id, now), partition)
    active, on_hold = deadlines.counts(owned.__contains__)
    metrics.ACTIVE_CALLS.set(active)
    metrics.CALLS_ON_HOLD.set(on_hold)

