"""calls.events + calls.transcripts + calls.alerts (+ ticks) → call-summaries table → calls.summaries. Wiring only.

Decisions live in streamproc.summary (what a call's summary says, and when it is due). This module
reads the records, writes the ``call-summaries`` table and sends the summary. A Faust table is
written only while a record is processed, so the timer never emits: it sends a :class:`Tick` on the
call's partition when a call may be due, and the agent decides while processing that tick (the hold
timer's pattern, docs/architecture.md). The events agent treats these ticks as harmless wake-ups.
"""

from __future__ import annotations

import logging
import time

from faust.types import TP

from streamproc.processing import tick_for
from streamproc.summary import SummaryProcessor, SummaryResult, observe

from .app import app, settings
from .outputs import send_summary, send_tick
from .shared import current_rules
from .topics import summary_inputs, summary_state

log = logging.getLogger("streamproc.summaries")

TOPICS = {kind: settings.topic(kind) for kind in ("events", "transcripts", "alerts", "ticks")}
TIMER_INTERVAL_S = 1.0
RETICK_S = 2.0  # a tick not answered (set aside, lost) is sent again after this long

processor = SummaryProcessor(
    topics=TOPICS,
    rules=current_rules,
    transcripts_redacted=settings.redact_transcripts,
    quiet_s=settings.summary_quiet_s,
    max_wait_s=settings.summary_max_wait_s,
    retention_s=settings.ended_call_retention_s,
)

#: call id → (partition, wall time to check next, or None for calls still going). Rebuilt from the table.
_due_index: dict[str, tuple[int | None, float | None]] = {}
_ticked: dict[str, float] = {}
#: (topic, partition) → next offset this agent has processed: a tick waits until inputs are caught up.
_processed_upto: dict[tuple[str, int], int] = {}
_last_rebuild: dict[str, object] = {"generation": None}


def _index(call_id: str, stored: object) -> None:
    state = processor.state_of(call_id, stored)
    if state is None:
        _due_index.pop(call_id, None)
        return
    at = (
        state.ended_wall + settings.ended_call_retention_s
        if state.emitted and state.ended_wall is not None
        else state.next_check(settings.summary_quiet_s, settings.summary_max_wait_s)
    )
    _due_index[call_id] = (state.partition, at)
    _ticked.pop(call_id, None)


#: Topics whose high watermark a processed offset can reach. Under exactly_once this worker writes transcripts and
#: alerts in transactions: each commit marker takes an offset that a read_committed consumer never sees, so the
#: last processed record stays below the high watermark for good. There the committed-offset guard (transcripts)
#: and the quiet time (alerts) stand in for it.
CATCH_UP_KINDS = ("events",) if settings.processing_guarantee == "exactly_once" else ("events", "transcripts", "alerts")


def inputs_caught_up(partition: int) -> bool:
    """Every record of this partition the broker had at our last fetch is processed (the hold timer's rule)."""
    for kind in CATCH_UP_KINDS:
        tp = TP(TOPICS[kind], partition)
        highwater = app.consumer.highwater(tp)
        if highwater is None:
            continue  # nothing fetched from it since the assignment
        committed = getattr(app.consumer, "_committed_offset", {}).get(tp) or 0  # what another owner processed
        if max(_processed_upto.get((tp.topic, partition), 0), committed) < highwater:
            return False
    return True


if settings.summaries_enabled:

    @app.agent(summary_inputs)
    async def summarise_calls(stream):
        async for event in stream.events():
            message = event.message
            now = time.time()
            if message.topic == TOPICS["ticks"] and not _tick_may_run(message.key, message.partition, now):
                continue  # the call's inputs are not all handled yet: the timer ticks again
            step = processor.process(
                topic=message.topic, key=message.key, value=message.value, load_state=summary_state.get,
                now_wall=now, partition=message.partition, offset=message.offset,
            )
            if step.call_id is not None:
                if step.delete:
                    summary_state.pop(step.call_id, None)
                    _due_index.pop(step.call_id, None)
                elif step.store is not None:
                    summary_state[step.call_id] = step.store
                    _index(step.call_id, step.store)
            if isinstance(step, SummaryResult) and step.summary is not None:
                rules = current_rules()
                observe(step.summary, frozenset(rules.hold.queues), settings.metric_agents)
                await send_summary(step.summary, message.partition)
            if message.topic != TOPICS["ticks"]:
                _processed_upto[(message.topic, message.partition)] = message.offset + 1

    def _tick_may_run(key: bytes | None, partition: int, now: float) -> bool:
        """Inputs caught up, and every agent reading events/transcripts committed past the call's last one.

        Past the bounded wait (summary_max_wait_s after call_ended) the tick runs whatever the lag."""
        call_id = key.decode("utf-8", "replace") if key else None
        state = processor.state_of(call_id, summary_state.get(call_id)) if call_id else None
        if state is None or state.emitted:
            return True
        if state.ended_wall is not None and now - state.ended_wall >= settings.summary_max_wait_s:
            return True
        if not inputs_caught_up(partition):
            return False
        committed = getattr(app.consumer, "_committed_offset", {})
        for kind in ("events", "transcripts"):
            folded = state.offsets.get(kind)
            if folded is not None and (committed.get(TP(TOPICS[kind], partition)) or 0) <= folded:
                return False  # detection (or the events agent) has not acked the call's last record yet
        return True

    @app.timer(interval=TIMER_INTERVAL_S)
    async def summary_timer() -> None:
        generation = app.consumer_generation_id
        if generation != _last_rebuild["generation"]:
            # After recovery or a rebalance the table holds calls this process has not folded itself.
            _due_index.clear()
            for call_id, stored in list(summary_state.items()):
                _index(call_id, stored)
            _last_rebuild["generation"] = generation
        owned = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == TOPICS["events"]}
        now = time.time()
        for call_id, (partition, at) in list(_due_index.items()):
            if at is None or at > now or partition not in owned:
                continue
            if now - _ticked.get(call_id, 0.0) < RETICK_S:
                continue
            _ticked[call_id] = now
            await send_tick(call_id.encode(), tick_for(call_id, now), partition)
