"""From raw Kafka records to state changes and output messages, without Faust.

The events agent hands every record of ``calls.events`` and ``calls.ticks`` to
:meth:`CallProcessor.process` together with the call's stored state, and gets back a
:class:`~streamproc.record.RecordResult`: what to store, which alerts and dead letters to send
(the shared record-path shape, streamproc/record.py). The agent only does the I/O. The hold timer uses :class:`DeadlineIndex` to know which calls are due
without deserialising the whole table every tick.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

from . import metrics
from .detect.hold import CallState, CallStatus, Outcome, apply_event, next_deadline, on_tick
from .record import RecordRef, RecordResult, check_key, guarded
from .rules import RulesFile
from .schemas import Tick, parse_call_event, parse_message

log = logging.getLogger(__name__)


class CallProcessor:
    """Turns call events and timer ticks into state updates, alerts and dead letters."""

    def __init__(self, rules: Callable[[], RulesFile], *, retention_s: float, ticks_topic: str):
        self._rules = rules
        self.retention_s = retention_s
        self.ticks_topic = ticks_topic
        self._known_queues: frozenset[str] = frozenset()
        self._queues_from: RulesFile | None = None

    def _queue_label(self, queue: str | None, rules: RulesFile) -> str:
        if rules is not self._queues_from:
            self._known_queues = frozenset(rules.hold.queues)
            self._queues_from = rules
        return metrics.queue_label(queue, self._known_queues)

    def process(
        self,
        *,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        load_state: Callable[[str], dict | None],
        partition: int | None = None,
        offset: int | None = None,
        now_wall: float | None = None,
    ) -> RecordResult:
        now_wall = time.time() if now_wall is None else now_wall
        ref = RecordRef(topic, key, value, partition, offset)
        if topic == self.ticks_topic:
            return guarded(ref, lambda: self._process_tick(value or b"", load_state, now_wall))
        return guarded(ref, lambda: self._process_event(key, value or b"", load_state, partition, now_wall))

    def _process_event(self, key, value, load_state, partition, now_wall) -> RecordResult:
        event = parse_call_event(value)
        check_key(key, event.call_id)
        rules = self._rules()
        stored = load_state(event.call_id)
        state = CallState.model_validate(stored) if stored else None
        outcome = apply_event(state, event, rules.hold, received_wall=now_wall, partition=partition)
        if outcome.duplicate:
            metrics.DUPLICATE_EVENTS.inc()
            return RecordResult(call_id=event.call_id, state=outcome.state)
        if outcome.rejected is not None:
            raise outcome.rejected
        metrics.EVENTS.labels(event.type).inc()
        if outcome.completed_hold_s is not None and outcome.state is not None:
            metrics.HOLD_DURATION.labels(self._queue_label(outcome.state.queue, rules)).observe(outcome.completed_hold_s)
        return self._step(event.call_id, outcome, now_wall)

    def _process_tick(self, value, load_state, now_wall) -> RecordResult:
        tick: Tick = parse_message(Tick, value)
        stored = load_state(tick.call_id)
        if not stored:
            return RecordResult(call_id=tick.call_id)  # already purged; a stale tick is harmless
        state = CallState.model_validate(stored)
        # Evaluate at the later of the tick's and our own clock: a backlog of ticks must not fire early or late.
        outcome = on_tick(state, max(tick.at.timestamp(), now_wall), self._rules().hold, self.retention_s)
        if outcome.delete:
            return RecordResult(call_id=tick.call_id, delete=True)
        if not outcome.alerts:
            return RecordResult(call_id=tick.call_id, state=outcome.state)
        return self._step(tick.call_id, outcome, now_wall)

    def _step(self, call_id: str, outcome: Outcome, now_wall: float) -> RecordResult:
        state = outcome.state
        for alert in outcome.alerts:
            metrics.ALERTS.labels(alert.kind.value, alert.severity.value).inc()
            if alert.source_received_at is not None:
                metrics.ALERT_LATENCY.labels(alert.kind.value).observe(
                    max(0.0, now_wall - alert.source_received_at.timestamp())
                )
        return RecordResult(
            call_id=call_id,
            store=state.model_dump(mode="json") if state is not None else None,
            alerts=outcome.alerts,
            state=state,
        )


@dataclass
class _Due:
    wall_due: float | None
    partition: int | None
    status: str
    ticked_at: float | None = None


class DeadlineIndex:
    """In-memory view of which local calls need a tick, and when (wall clock).

    Maintained from the agent's steps; rebuilt from the table after recovery or a
    rebalance (:meth:`rebuild`). Holds no authority: the table is the truth, a lost or
    repeated tick is harmless because :func:`~streamproc.detect.hold.on_tick` is idempotent.
    """

    #: Re-send a tick if the previous one has not been processed after this long.
    RETICK_S = 2.0

    def __init__(self, rules: Callable[[], RulesFile], retention_s: float):
        self._rules = rules
        self.retention_s = retention_s
        self._calls: dict[str, _Due] = {}

    def __len__(self) -> int:
        return len(self._calls)

    def update(self, call_id: str, state: CallState | None) -> None:
        if state is None:
            self._calls.pop(call_id, None)
            return
        deadline = next_deadline(state, self._rules().hold, self.retention_s)
        wall_due = None if deadline is None else deadline + state.clock_offset_s
        self._calls[call_id] = _Due(wall_due, state.partition, state.status.value)

    def retick(self, call_id: str) -> None:
        """A tick for this call was set aside unprocessed: send another on the next timer run."""
        entry = self._calls.get(call_id)
        if entry is not None:
            entry.ticked_at = None

    def partition_of(self, call_id: str) -> int | None:
        entry = self._calls.get(call_id)
        return entry.partition if entry else None

    def rebuild(self, items) -> None:
        """Replace the index with ``(call_id, stored_dict)`` pairs from the table."""
        self._calls.clear()
        for call_id, stored in items:
            try:
                self.update(call_id, CallState.model_validate(stored))
            except Exception:  # a corrupt row must not stop the timer
                log.exception("unreadable state for call %r in the table", call_id)

    def due(self, now_wall: float, owns_partition: Callable[[int | None], bool]) -> list[tuple[str, float]]:
        """Calls whose deadline has passed, with how late we noticed; marks them ticked."""
        due = []
        for call_id, entry in self._calls.items():
            if entry.wall_due is None or entry.wall_due > now_wall or not owns_partition(entry.partition):
                continue
            if entry.ticked_at is not None and now_wall - entry.ticked_at < self.RETICK_S:
                continue
            entry.ticked_at = now_wall
            due.append((call_id, now_wall - entry.wall_due))
        return due

    def counts(self, owns_partition: Callable[[int | None], bool]) -> tuple[int, int]:
        """(active calls, calls on hold) owned by this worker."""
        active = on_hold = 0
        for entry in self._calls.values():
            if not owns_partition(entry.partition) or entry.status == CallStatus.ended.value:
                continue
            active += 1
            on_hold += entry.status == CallStatus.on_hold.value
        return active, on_hold


def tick_for(call_id: str, now_wall: float) -> bytes:
    from .schemas import from_epoch

    return Tick(call_id=call_id, at=from_epoch(now_wall)).to_json_bytes()
