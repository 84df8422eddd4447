"""The hold state machine: examples and property tests over random event sequences."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamproc.detect.hold import CallState, CallStatus, apply_event, next_deadline, on_tick
from streamproc.errors import RejectReason
from streamproc.rules import parse_rules
from streamproc.schemas import AlertKind, Alert, parse_call_event

RULES = parse_rules(
    """
version: 1
hold:
  defaults:
    thresholds:
      - {id: warn, after_s: 60, severity: warning}
      - {id: crit, after_s: 180, severity: critical}
    cumulative:
      - {id: total, after_s: 240, severity: warning}
    repeated:
      - {id: repeat, count: 3, severity: warning}
  queues:
    vip:
      thresholds:
        - {id: vip-warn, after_s: 30, severity: warning}
"""
).hold
T0 = 1_800_000_000.0
RETENTION = 900.0


def ev(kind: str, at: float, call_id: str = "c1", **fields):
    import json

    body = {"type": kind, "call_id": call_id, "ts": T0 + at} | fields
    if kind == "call_started":
        body.setdefault("agent_id", "a1")
        body.setdefault("queue", "billing")
    return parse_call_event(json.dumps(body))


def run(events, rules=RULES):
    """Apply events (received instantly: wall == event time) and return (state, alerts, rejections)."""
    state, alerts, rejections = None, [], []
    for event in events:
        outcome = apply_event(state, event, rules, received_wall=event.ts_epoch)
        state = outcome.state
        alerts += outcome.alerts
        if outcome.rejected:
            rejections.append(outcome.rejected.reason)
    return state, alerts, rejections


def tick(state, at, rules=RULES):
    outcome = on_tick(state, T0 + at, rules, RETENTION)
    return outcome.state, outcome.alerts


def test_alerts_fire_during_the_hold_at_each_threshold():
    state, alerts, _ = run([ev("call_started", 0), ev("hold_started", 10)])
    assert alerts == []
    state, fired = tick(state, 69.9)
    assert fired == []
    state, fired = tick(state, 70.0)
    assert [(a.rule_id, a.severity.value, a.kind) for a in fired] == [("warn", "warning", AlertKind.hold_breach)]
    assert fired[0].event_time.timestamp() == T0 + 70
    assert fired[0].evidence.threshold == 60 and fired[0].evidence.value == pytest.approx(60)
    state, fired = tick(state, 100)
    assert fired == []
    state, fired = tick(state, 190)
    assert [a.rule_id for a in fired] == ["crit"]
    assert state.status is CallStatus.on_hold, "alerts fire while the customer is still on hold"


def test_next_deadline_points_at_the_next_unfired_threshold():
    state, _, _ = run([ev("call_started", 0), ev("hold_started", 10)])
    assert next_deadline(state, RULES, RETENTION) == T0 + 70
    state, _ = tick(state, 70)
    assert next_deadline(state, RULES, RETENTION) == T0 + 190
    state, _ = tick(state, 190)
    # cumulative 240 s of hold in total → at 10 + 240
    assert next_deadline(state, RULES, RETENTION) == T0 + 250


def test_hold_that_ends_before_the_threshold_never_alerts():
    state, alerts, _ = run([ev("call_started", 0), ev("hold_started", 10), ev("hold_ended", 65)])
    assert alerts == []
    assert state.completed_hold_s == 55
    assert next_deadline(state, RULES, RETENTION) is None


def test_late_hold_end_fires_the_breach_it_contains():
    # No tick happened (e.g. a fast replay): the hold_ended event itself reveals the breach.
    _, alerts, _ = run([ev("call_started", 0), ev("hold_started", 0), ev("hold_ended", 200)])
    assert [a.rule_id for a in alerts] == ["warn", "crit"]


def test_cumulative_and_repeated_holds():
    events = [ev("call_started", 0)]
    for n in range(3):
        events += [ev("hold_started", 100 * n + 1), ev("hold_ended", 100 * n + 51)]
    state, alerts, _ = run(events)
    assert [a.kind for a in alerts] == [AlertKind.repeated_hold]
    assert alerts[0].evidence.value == 3
    assert state.completed_hold_s == 150
    state, _, _ = run(events + [ev("hold_started", 400)])
    state, fired = tick(state, 400 + 60)
    assert [a.rule_id for a in fired] == ["warn"]
    state, fired = tick(state, 400 + 89.9)
    assert fired == []
    state, fired = tick(state, 400 + 90)
    assert [(a.kind, a.rule_id) for a in fired] == [(AlertKind.cumulative_hold, "total")]
    assert fired[0].event_time.timestamp() == T0 + 490
    assert fired[0].evidence.value == pytest.approx(240)


def test_each_hold_has_its_own_threshold_alerts_with_distinct_ids():
    state, alerts, _ = run(
        [ev("call_started", 0), ev("hold_started", 0), ev("hold_ended", 61), ev("hold_started", 70), ev("hold_ended", 131)]
    )
    warns = [a for a in alerts if a.rule_id == "warn"]
    assert [a.occurrence for a in warns] == [1, 2]
    assert warns[0].alert_id != warns[1].alert_id
    assert warns[0].alert_id == Alert.make_id("c1", "warn", 1)


def test_queue_override_and_transfer_change_the_thresholds():
    state, _, _ = run([ev("call_started", 0, queue="vip"), ev("hold_started", 0)])
    _, fired = tick(state, 30)
    assert [a.rule_id for a in fired] == ["vip-warn"]
    state, _, _ = run([ev("call_started", 0), ev("transferred", 1, to_queue="vip", to_agent_id="a2"), ev("hold_started", 2)])
    assert state.queue == "vip" and state.agent_id == "a2"
    _, fired = tick(state, 32)
    assert fired[0].agent_id == "a2" and fired[0].queue == "vip"


@pytest.mark.parametrize(
    "events, reason",
    [
        ([ev("hold_started", 0)], RejectReason.unknown_call),
        ([ev("call_started", 0), ev("hold_ended", 5)], RejectReason.invalid_transition),
        ([ev("call_started", 0), ev("hold_started", 5), ev("hold_started", 6)], RejectReason.invalid_transition),
        ([ev("call_started", 0), ev("call_ended", 5), ev("hold_started", 6)], RejectReason.call_ended),
        ([ev("call_started", 0), ev("hold_started", 10), ev("hold_ended", 5)], RejectReason.out_of_order),
        ([ev("call_started", 0), ev("call_started", 3)], RejectReason.invalid_transition),
    ],
)
def test_bad_sequences_are_rejected_with_a_reason(events, reason):
    _, _, rejections = run(events)
    assert rejections == [reason]


def test_duplicates_are_dropped_without_changing_state():
    started = ev("call_started", 0)
    hold = ev("hold_started", 5)
    state1, _, _ = run([started, hold])
    outcome = apply_event(state1, hold, RULES, received_wall=T0 + 6)
    assert outcome.duplicate and outcome.state is state1 and not outcome.rejected


def test_call_end_closes_the_hold_and_the_state_is_purged_after_retention():
    state, _, _ = run([ev("call_started", 0), ev("hold_started", 10), ev("call_ended", 40)])
    assert state.status is CallStatus.ended and state.completed_hold_s == 30
    assert next_deadline(state, RULES, RETENTION) == T0 + 40 + RETENTION
    assert on_tick(state, T0 + 40 + RETENTION - 1, RULES, RETENTION).delete is False
    assert on_tick(state, T0 + 40 + RETENTION, RULES, RETENTION).delete is True


def test_timer_uses_the_calls_clock_offset():
    # A replay: events carry yesterday's timestamps but arrive now.
    yesterday = -86_400.0
    state = apply_event(None, ev("call_started", yesterday), RULES, received_wall=T0).state
    state = apply_event(state, ev("hold_started", yesterday + 1), RULES, received_wall=T0 + 1).state
    assert on_tick(state, T0 + 60.9, RULES, RETENTION).alerts == []
    assert [a.rule_id for a in on_tick(state, T0 + 61, RULES, RETENTION).alerts] == ["warn"]


def test_state_round_trips_through_json():
    state, _, _ = run([ev("call_started", 0), ev("hold_started", 10)])
    state, _ = tick(state, 70)
    restored = CallState.model_validate(state.model_dump(mode="json"))
    assert restored == state
    # After a restart the restored state does not re-fire.
    assert on_tick(restored, T0 + 71, RULES, RETENTION).alerts == []


# ----------------------------------------------------------------------------- property tests


@dataclass
class Hold:
    start: float
    end: float | None


@st.composite
def call_timelines(draw):
    """A call with random holds, as (events, holds, end time). Times are event-time offsets."""
    t = draw(st.floats(0, 5))
    events = [ev("call_started", t)]
    holds = []
    for _ in range(draw(st.integers(0, 5))):
        t += draw(st.floats(0.5, 60))
        start = t
        t += draw(st.floats(0.5, 400))
        events += [ev("hold_started", start), ev("hold_ended", t)]
        # Expected values from the parsed events: timestamps are microsecond precision on the wire.
        holds.append(Hold(events[-2].ts_epoch - T0, events[-1].ts_epoch - T0))
    if holds and draw(st.booleans()):
        # The call ends while still on hold: the last hold closes at call end.
        events.pop()
        events.append(ev("call_ended", t))
    else:
        t += draw(st.floats(0.5, 30))
        events.append(ev("call_ended", t))
    return events, holds, t


def expected_alert_keys(holds):
    keys = set()
    total = 0.0
    for number, hold in enumerate(holds, start=1):
        duration = hold.end - hold.start
        for rule_id, after in (("warn", 60), ("crit", 180)):
            if duration >= after:
                keys.add((rule_id, number))
        total += duration
    if total >= 240:
        keys.add(("total", 1))
    if len(holds) >= 3:
        keys.add(("repeat", 1))
    return keys


@st.composite
def delivered(draw):
    """The timeline as delivered: with random duplicates and random timer ticks interleaved."""
    events, holds, end = draw(call_timelines())
    delivered_events = []
    for event in events:
        delivered_events.append(event)
        if draw(st.integers(0, 4)) == 0:
            delivered_events.append(event)  # redelivered (at-least-once)
    ticks = sorted(draw(st.lists(st.floats(0, end + 10), max_size=30)))
    return delivered_events, holds, ticks


def replay(events, ticks):
    """Interleave events and ticks in time order, like the worker would see them."""
    state, alerts, rejections = None, [], []
    pending_ticks = list(ticks)
    for event in events:
        while pending_ticks and state is not None and T0 + pending_ticks[0] < event.ts_epoch:
            outcome = on_tick(state, T0 + pending_ticks.pop(0), RULES, RETENTION)
            if not outcome.delete:
                state = outcome.state
            alerts += outcome.alerts
        outcome = apply_event(state, event, RULES, received_wall=event.ts_epoch)
        state = outcome.state
        alerts += outcome.alerts
        if outcome.rejected:
            rejections.append(outcome.rejected)
    return state, alerts, rejections


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(delivered())
def test_exactly_one_alert_per_threshold_crossing(case):
    events, holds, ticks = case
    state, alerts, rejections = replay(events, ticks)
    assert rejections == [], "duplicates are dropped, not rejected"
    keys = [(a.rule_id, a.occurrence) for a in alerts]
    assert len(keys) == len(set(keys)), "no alert twice"
    assert set(keys) == expected_alert_keys(holds)
    assert len({a.alert_id for a in alerts}) == len(alerts)


@settings(max_examples=300, deadline=None)
@given(delivered())
def test_no_alert_before_its_threshold(case):
    events, holds, ticks = case
    _, alerts, _ = replay(events, ticks)
    for alert in alerts:
        if alert.kind is AlertKind.hold_breach:
            hold = holds[alert.occurrence - 1]
            assert alert.event_time.timestamp() == pytest.approx(T0 + hold.start + alert.evidence.threshold)
            # emitted no earlier than the crossing (detected_at is the processing time)
            assert alert.detected_at.timestamp() >= alert.event_time.timestamp() - 1e-6
            assert alert.evidence.value >= alert.evidence.threshold - 1e-6


@settings(max_examples=300, deadline=None)
@given(delivered())
def test_cumulative_total_is_the_sum_of_holds(case):
    events, holds, ticks = case
    state, _, _ = replay(events, ticks)
    assert state.status is CallStatus.ended
    assert state.completed_hold_s == pytest.approx(sum(h.end - h.start for h in holds), abs=1e-6)
    assert state.hold_count == len(holds)


@settings(max_examples=200, deadline=None)
@given(call_timelines(), st.randoms(use_true_random=False))
def test_out_of_order_delivery_is_rejected_and_never_double_fires(case, rnd):
    events, holds, _ = case
    shuffled = list(events)
    # Swap a few neighbours: some events arrive late.
    for _ in range(3):
        if len(shuffled) > 2:
            i = rnd.randrange(1, len(shuffled) - 1)
            shuffled[i], shuffled[i + 1] = shuffled[i + 1], shuffled[i]
    state, alerts, rejections = run(shuffled)
    keys = [(a.rule_id, a.occurrence) for a in alerts]
    assert len(keys) == len(set(keys))
    # Whatever was accepted, an alert never claims less than its threshold.
    assert all(a.evidence.value >= a.evidence.threshold - 1e-6 for a in alerts)
    for reason in rejections:
        assert reason in {
            RejectReason.out_of_order,
            RejectReason.invalid_transition,
            RejectReason.unknown_call,
            RejectReason.call_ended,
        }
    if shuffled == events:
        assert rejections == []


def test_hold_alert_ids_are_golden_values():
    """The ids a real hold produces, pinned as literals (computed once, 29 Nov 2026): consumers
    dedupe on them across releases, so any change to the id scheme or its namespace fails here."""
    _, alerts, _ = run([ev("call_started", 0), ev("hold_started", 10), ev("hold_ended", 80),
                        ev("hold_started", 100), ev("hold_ended", 190)])
    state, more, _ = run([ev("call_started", 0), ev("hold_started", 10)])
    more += tick(state, 10 + 61)[1]
    assert {(a.rule_id, a.occurrence, a.alert_id) for a in alerts} == {
        ("warn", 1, "1e1a49be-31d4-5067-9153-4a139b15bc59"),
        ("warn", 2, "7636ad20-3f28-5227-9177-0a9bac8875cc"),
    }
    assert [(a.rule_id, a.alert_id) for a in more] == [("warn", "1e1a49be-31d4-5067-9153-4a139b15bc59")]


# ----------------------------------------------------------------------------- the record path's timer side
# (written to kill mutants that survived scripts/mutants.py: see docs/reliability.md, "Mutation score")

RULES_FILE = parse_rules(
    """
version: 1
hold:
  defaults:
    thresholds:
      - {id: warn, after_s: 60, severity: warning}
"""
)


def _on_hold_call():
    from streamproc.processing import CallProcessor

    processor = CallProcessor(lambda: RULES_FILE, retention_s=RETENTION, ticks_topic="calls.ticks")
    started = processor.process(topic="calls.events", key=b"c1", value=ev("call_started", 0).to_json_bytes(),
                                load_state=lambda _c: None, partition=3, offset=0, now_wall=T0)
    held = processor.process(topic="calls.events", key=b"c1", value=ev("hold_started", 10).to_json_bytes(),
                             load_state=lambda _c: started.store, partition=3, offset=1, now_wall=T0 + 10)
    assert not held.dead_letters and held.store["status"] == "on_hold"
    return processor, held


def test_a_stale_tick_evaluates_at_the_workers_clock_not_the_ticks():
    """A tick read late (a backlog of ticks) must fire what is due now, not what was due when it was sent."""
    from streamproc.schemas import Tick, from_epoch

    processor, held = _on_hold_call()
    stale = Tick(call_id="c1", at=from_epoch(T0 + 20)).to_json_bytes()
    result = processor.process(topic="calls.ticks", key=b"c1", value=stale, load_state=lambda _c: held.store,
                               partition=3, offset=5, now_wall=T0 + 71)
    assert [(a.rule_id, a.event_time.timestamp()) for a in result.alerts] == [("warn", T0 + 70)]


def test_deadline_index_ticks_owned_due_calls_and_reticks_after_its_interval():
    from streamproc.processing import DeadlineIndex

    _, held = _on_hold_call()
    index = DeadlineIndex(lambda: RULES_FILE, retention_s=RETENTION)
    index.update("c1", held.state)
    mine, not_mine = (lambda partition: partition == 3), (lambda partition: False)
    assert index.due(T0 + 69.9, mine) == [], "not due before hold start + 60 s"
    assert index.due(T0 + 70.5, not_mine) == [], "a call on a partition this worker does not own is not ticked"
    due = index.due(T0 + 70.5, mine)
    assert [call for call, _ in due] == ["c1"] and due[0][1] == pytest.approx(0.5)
    assert index.due(T0 + 70.5 + DeadlineIndex.RETICK_S - 0.1, mine) == [], "one tick in flight at a time"
    assert [call for call, _ in index.due(T0 + 70.5 + DeadlineIndex.RETICK_S, mine)] == ["c1"], "a lost tick is re-sent"
