"""Where hold breaches are decided: the per-call state machine and its alert rules.

Pure logic, no Faust and no clocks of its own: every function gets the times it needs.

* :func:`apply_event` folds one call event into a :class:`CallState` and returns the
  alerts it causes (or the reason the event is rejected).
* :func:`evaluate` checks a call's hold thresholds at a given event time: the worker's
  timer calls it (through a tick) while the customer is still on hold, so alerts fire
  during the hold, not when it ends.

Event time vs wall clock: thresholds are measured in event time (the telephony clock).
Each accepted event records ``clock_offset_s = wall_received - event_ts``; the timer turns
its wall clock into the call's event time with it, so a replayed recording with old
timestamps still alerts at the right moment relative to its own events.

Alert identity: an alert's id is derived from (call id, rule id, occurrence), where the
occurrence of a per-hold threshold is the hold number. The keys of fired alerts live in
the state, so a breach fires once even across worker restarts (the state table is
recovered from its changelog); if a worker dies between sending an alert and saving the
state, the re-sent alert has the same id and consumers dedupe it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import InputRejected, RejectReason
from ..rules import HoldPolicy, HoldRules
from ..schemas import (
    Alert,
    AlertKind,
    CallEnded,
    CallEvent,
    CallStarted,
    Evidence,
    HoldEnded,
    HoldStarted,
    Severity,
    Transferred,
    from_epoch,
)

#: How many recent event ids a call remembers for duplicate detection.
SEEN_EVENT_IDS = 32


log = logging.getLogger(__name__)


class CallStatus(StrEnum):
    active = "active"
    on_hold = "on_hold"
    ended = "ended"


class CallState(BaseModel):
    """Everything the worker keeps about one call (a value in the call-state table)."""

    model_config = ConfigDict(extra="ignore")

    call_id: str
    agent_id: str | None = None
    queue: str | None = None
    customer_id: str | None = None
    status: CallStatus = CallStatus.active
    started_at: float = Field(description="Event time (epoch s) of call_started.")
    ended_at: float | None = None
    hold_started_at: float | None = None
    hold_count: int = 0
    completed_hold_s: float = 0.0
    last_event_ts: float
    clock_offset_s: float = Field(0.0, description="wall-clock receive time minus event time, at the last event")
    fired: list[str] = Field(default_factory=list, description="keys 'rule_id#occurrence' of alerts already emitted")
    seen_event_ids: list[str] = Field(default_factory=list)
    partition: int | None = Field(None, description="partition of the events topic that owns this call")

    @classmethod
    def from_stored(cls, stored: object) -> "CallState | None":
        """The state from a call-state table value (its JSON form); None when absent or unreadable."""
        if not isinstance(stored, dict) or not stored:
            return None
        try:
            return cls.model_validate(stored)
        except ValidationError:
            log.warning("unreadable state in the call-state table: %.200r", stored)
            return None

    @property
    def ended_wall(self) -> float | None:
        """Wall-clock time the call ended (its event time mapped by the call's clock offset), or None."""
        if self.status is not CallStatus.ended or self.ended_at is None:
            return None
        return self.ended_at + self.clock_offset_s

    def event_time_at(self, wall: float) -> float:
        """This call's event time corresponding to wall-clock ``wall``."""
        return wall - self.clock_offset_s

    def current_hold_s(self, event_time: float) -> float:
        if self.status is CallStatus.on_hold and self.hold_started_at is not None:
            return max(0.0, event_time - self.hold_started_at)
        return 0.0

    def total_hold_s(self, event_time: float) -> float:
        return self.completed_hold_s + self.current_hold_s(event_time)


@dataclass
class Outcome:
    """Result of one step of the state machine."""

    state: CallState | None
    alerts: list[Alert] = field(default_factory=list)
    rejected: InputRejected | None = None
    duplicate: bool = False
    completed_hold_s: float | None = None  # a hold that ended in this step, for the duration histogram
    delete: bool = False  # the call's retention ran out: drop it from the table


def _alert(
    state: CallState,
    *,
    kind: AlertKind,
    rule_id: str,
    severity: Severity,
    occurrence: int,
    crossed_at: float,
    now_wall: float,
    title: str,
    value: float,
    threshold: float,
    unit: str,
) -> Alert:
    return Alert(
        alert_id=Alert.make_id(state.call_id, rule_id, occurrence),
        call_id=state.call_id,
        agent_id=state.agent_id,
        queue=state.queue,
        kind=kind,
        rule_id=rule_id,
        severity=severity,
        occurrence=occurrence,
        title=title,
        evidence=Evidence(value=round(value, 3), threshold=threshold, unit=unit),
        event_time=from_epoch(crossed_at),
        detected_at=from_epoch(now_wall),
        # Time-triggered: the condition became true at the crossing moment on our clock.
        source_received_at=from_epoch(crossed_at + state.clock_offset_s),
    )


def evaluate(state: CallState, event_time: float, rules: HoldRules, now_wall: float) -> list[Alert]:
    """Fire every hold alert that is due at ``event_time`` and not yet fired. Mutates ``state.fired``."""
    if state.status is not CallStatus.on_hold or state.hold_started_at is None:
        return []
    policy = rules.for_queue(state.queue)
    alerts: list[Alert] = []
    hold_s = state.current_hold_s(event_time)
    for rule in policy.thresholds:
        key = f"{rule.id}#{state.hold_count}"
        if hold_s >= rule.after_s and key not in state.fired:
            state.fired.append(key)
            alerts.append(
                _alert(
                    state,
                    kind=AlertKind.hold_breach,
                    rule_id=rule.id,
                    severity=rule.severity,
                    occurrence=state.hold_count,
                    crossed_at=state.hold_started_at + rule.after_s,
                    now_wall=now_wall,
                    title=f"Customer on hold over {rule.after_s:g}s (hold #{state.hold_count})",
                    value=hold_s,
                    threshold=rule.after_s,
                    unit="seconds",
                )
            )
    total_s = state.completed_hold_s + hold_s
    for rule in policy.cumulative:
        key = f"{rule.id}#1"
        if total_s >= rule.after_s and key not in state.fired:
            state.fired.append(key)
            alerts.append(
                _alert(
                    state,
                    kind=AlertKind.cumulative_hold,
                    rule_id=rule.id,
                    severity=rule.severity,
                    occurrence=1,
                    crossed_at=state.hold_started_at + (rule.after_s - state.completed_hold_s),
                    now_wall=now_wall,
                    title=f"Customer on hold {rule.after_s:g}s in total over {state.hold_count} hold(s)",
                    value=total_s,
                    threshold=rule.after_s,
                    unit="seconds",
                )
            )
    return alerts


def next_deadline(state: CallState, rules: HoldRules, retention_s: float) -> float | None:
    """Event time at which :func:`evaluate` next has something to do (or the ended call can be purged)."""
    if state.status is CallStatus.ended:
        return (state.ended_at or state.last_event_ts) + retention_s
    if state.status is not CallStatus.on_hold or state.hold_started_at is None:
        return None
    policy: HoldPolicy = rules.for_queue(state.queue)
    due = [
        state.hold_started_at + rule.after_s
        for rule in policy.thresholds
        if f"{rule.id}#{state.hold_count}" not in state.fired
    ]
    due += [
        state.hold_started_at + (rule.after_s - state.completed_hold_s)
        for rule in policy.cumulative
        if f"{rule.id}#1" not in state.fired
    ]
    return min(due) if due else None


def _reject(state: CallState | None, reason: RejectReason, detail: str) -> Outcome:
    return Outcome(state=state, rejected=InputRejected(reason, detail))


def apply_event(
    state: CallState | None,
    event: CallEvent,
    rules: HoldRules,
    *,
    received_wall: float,
    partition: int | None = None,
) -> Outcome:
    """Fold one call event into the call's state. Never mutates the ``state`` passed in."""
    ts = event.ts_epoch
    if state is None:
        if not isinstance(event, CallStarted):
            return _reject(None, RejectReason.unknown_call, f"{event.type} for call {event.call_id!r} that never started")
        new = CallState(
            call_id=event.call_id,
            agent_id=event.agent_id,
            queue=event.queue,
            customer_id=event.customer_id,
            started_at=ts,
            last_event_ts=ts,
            clock_offset_s=received_wall - ts,
            seen_event_ids=[event.event_id or ""],
            partition=partition,
        )
        return Outcome(state=new)

    if event.event_id in state.seen_event_ids:
        return Outcome(state=state, duplicate=True)
    if state.status is CallStatus.ended:
        return _reject(state, RejectReason.call_ended, f"{event.type} after the call ended")
    if ts < state.last_event_ts:
        return _reject(
            state,
            RejectReason.out_of_order,
            f"{event.type} at {event.ts.isoformat()} is older than the call's last event at "
            f"{from_epoch(state.last_event_ts).isoformat()}",
        )

    new = state.model_copy(deep=True)
    new.last_event_ts = ts
    new.clock_offset_s = received_wall - ts
    new.seen_event_ids = (new.seen_event_ids + [event.event_id or ""])[-SEEN_EVENT_IDS:]
    if partition is not None:
        new.partition = partition
    outcome = Outcome(state=new)

    if isinstance(event, CallStarted):
        return _reject(state, RejectReason.invalid_transition, "call_started for a call already in progress")
    if isinstance(event, HoldStarted):
        if new.status is CallStatus.on_hold:
            return _reject(state, RejectReason.invalid_transition, "hold_started while already on hold")
        new.status = CallStatus.on_hold
        new.hold_started_at = ts
        new.hold_count += 1
        outcome.alerts += _repeated_hold_alerts(new, rules, received_wall)
        # A threshold of 0+ε or a hold replayed late may already be due.
        outcome.alerts += evaluate(new, ts, rules, received_wall)
    elif isinstance(event, HoldEnded):
        if new.status is not CallStatus.on_hold:
            return _reject(state, RejectReason.invalid_transition, "hold_ended while not on hold")
        outcome.alerts += evaluate(new, ts, rules, received_wall)
        outcome.completed_hold_s = _close_hold(new, ts)
    elif isinstance(event, Transferred):
        if event.to_agent_id is not None:
            new.agent_id = event.to_agent_id
        if event.to_queue is not None:
            new.queue = event.to_queue
    elif isinstance(event, CallEnded):
        if new.status is CallStatus.on_hold:
            outcome.alerts += evaluate(new, ts, rules, received_wall)
            outcome.completed_hold_s = _close_hold(new, ts)
        new.status = CallStatus.ended
        new.ended_at = ts
    return outcome


def _close_hold(state: CallState, ts: float) -> float:
    duration = state.current_hold_s(ts)
    state.completed_hold_s += duration
    state.status = CallStatus.active
    state.hold_started_at = None
    return duration


def _repeated_hold_alerts(state: CallState, rules: HoldRules, now_wall: float) -> list[Alert]:
    alerts = []
    for rule in rules.for_queue(state.queue).repeated:
        key = f"{rule.id}#1"
        if state.hold_count >= rule.count and key not in state.fired:
            state.fired.append(key)
            alerts.append(
                _alert(
                    state,
                    kind=AlertKind.repeated_hold,
                    rule_id=rule.id,
                    severity=rule.severity,
                    occurrence=1,
                    crossed_at=state.hold_started_at or state.last_event_ts,
                    now_wall=now_wall,
                    title=f"Customer put on hold {state.hold_count} times",
                    value=state.hold_count,
                    threshold=rule.count,
                    unit="holds",
                )
            )
    return alerts


def on_tick(state: CallState, tick_wall: float, rules: HoldRules, retention_s: float) -> Outcome:
    """A timer tick for this call at wall time ``tick_wall``: fire due alerts, or purge an expired ended call."""
    event_time = state.event_time_at(tick_wall)
    if state.status is CallStatus.ended:
        if event_time >= (state.ended_at or state.last_event_ts) + retention_s:
            return Outcome(state=None, delete=True)
        return Outcome(state=state)
    new = state.model_copy(deep=True)
    alerts = evaluate(new, event_time, rules, tick_wall)
    return Outcome(state=new if alerts else state, alerts=alerts)


def hold_seconds_now(state: CallState, now_wall: float) -> float:
    """Seconds the call has been on this hold, as of wall time ``now_wall`` (for dashboards)."""
    return state.current_hold_s(state.event_time_at(now_wall))


def as_datetime(epoch: float | None) -> datetime | None:
    return None if epoch is None else from_epoch(epoch)
