"""The decoder lanes' scheduling policy (streamproc/scheduling.py): order, fairness, priority, batching, capacity."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.scheduling import LaneScheduler, lane_count

NOW = 1000.0


def drain(scheduler: LaneScheduler, now: float = NOW) -> list:
    batches = []
    while (batch := scheduler.pop(now)) is not None:
        batches.append(batch)
    return batches


def test_a_calls_frames_leave_in_order_and_a_control_job_after_them():
    scheduler: LaneScheduler = LaneScheduler(quantum_s=1.0)
    for seq in range(6):
        scheduler.push_frame("a", ("a", seq), 0.5, NOW)
    scheduler.push_control("a", ("a", "end"))
    scheduler.push_frame("a", ("a", 6), 0.5, NOW)
    batches = drain(scheduler)
    assert [item for batch in batches for item in batch.items] == [("a", s) for s in range(6)] + [("a", "end"), ("a", 6)]
    assert [b.frames for b in batches if ("a", "end") in b.items] == [False]
    assert [len(b.items) for b in batches if ("a", "end") in b.items] == [1]  # a control job is never batched
    assert scheduler.queued_s == 0 and len(scheduler) == 0


def test_a_backlog_is_served_a_quantum_at_a_time_between_other_calls_frames():
    scheduler: LaneScheduler = LaneScheduler(quantum_s=1.0, max_batch_frames=100)
    for seq in range(240):  # 60 s of 250 ms frames dumped at once (sent just now: same class as the other call)
        scheduler.push_frame("backlog", seq, 0.25, NOW)
    scheduler.push_frame("other", 0, 0.25, NOW)
    first, second = scheduler.pop(NOW), scheduler.pop(NOW)
    assert (first.call_id, first.audio_s, len(first.items)) == ("backlog", 1.0, 4)  # one quantum, batched
    assert second.call_id == "other"  # then the other call, not the rest of the backlog


def test_live_frames_go_before_catch_up_and_catch_up_still_progresses():
    scheduler: LaneScheduler = LaneScheduler(quantum_s=1.0, live_window_s=2.0, live_streak=3)
    for seq in range(40):
        scheduler.push_frame("old", seq, 0.25, NOW - 60 + seq * 0.25)  # sent a minute ago: catching up
    for seq in range(10):
        scheduler.push_frame(f"live-{seq % 2}", seq, 0.25, NOW - 0.5)
    assert not scheduler.is_live("old", NOW) and scheduler.is_live("live-0", NOW)
    order = [scheduler.pop(NOW).call_id for _ in range(8)]
    # Each live call has 1.25 s queued: a 1 s batch, then the rest. After 3 live batches in a row
    # (the streak bound) one catch-up batch, then the last live one, then catch-up only.
    assert order == ["live-0", "live-1", "live-0", "old", "live-1", "old", "old", "old"]


def test_fifo_policy_serves_in_arrival_order_one_job_at_a_time():
    scheduler: LaneScheduler = LaneScheduler(policy="fifo")
    arrivals = [("a", 0), ("b", 0), ("a", 1), ("a", 2), ("b", 1)]
    for call_id, seq in arrivals:
        scheduler.push_frame(call_id, (call_id, seq), 0.25, NOW - 100)
    assert [tuple(b.items) for b in drain(scheduler)] == [(x,) for x in arrivals]


def test_batches_stop_at_the_frame_limit_and_a_long_frame_is_still_served():
    scheduler: LaneScheduler = LaneScheduler(quantum_s=10.0, max_batch_frames=3)
    for seq in range(5):
        scheduler.push_frame("a", seq, 0.25, NOW)
    assert scheduler.pop(NOW).items == [0, 1, 2]
    big: LaneScheduler = LaneScheduler(quantum_s=0.5)
    big.push_frame("a", "huge", 5.0, NOW)  # longer than the quantum (it will be rejected as oversize, but it runs)
    assert big.pop(NOW).items == ["huge"]


def test_queued_audio_is_counted_until_popped():
    scheduler: LaneScheduler = LaneScheduler(quantum_s=0.5)
    for seq in range(4):
        scheduler.push_frame("a", seq, 0.25, NOW)
    scheduler.push_control("a", "end")
    assert scheduler.queued_s == pytest.approx(1.0) and len(scheduler) == 5
    scheduler.pop(NOW)
    assert scheduler.queued_s == pytest.approx(0.5)
    drain(scheduler)
    assert scheduler.queued_s == 0.0 and len(scheduler) == 0


def test_lane_count_is_the_setting_or_one_per_core():
    assert lane_count(3, cores=16) == 3
    assert lane_count(0, cores=16) == 16
    assert lane_count(0, cores=0) == 1
    assert lane_count(0) >= 1


def test_bad_limits_are_refused():
    with pytest.raises(ValueError):
        LaneScheduler(quantum_s=0)
    with pytest.raises(ValueError):
        LaneScheduler(max_batch_frames=0)


# Operations: push a frame (call, cost, age), push a control job, or pop at some time.
operations = st.lists(
    st.one_of(
        st.tuples(st.just("frame"), st.integers(0, 5), st.sampled_from([0.02, 0.25, 0.5, 1.0, 3.0]), st.floats(0, 120)),
        st.tuples(st.just("control"), st.integers(0, 5), st.just(0.0), st.just(0.0)),
        st.tuples(st.just("pop"), st.just(0), st.just(0.0), st.floats(0, 5)),
    ),
    max_size=300,
)


@settings(max_examples=300, deadline=None)
@given(ops=operations, policy=st.sampled_from(["fair", "fifo"]), quantum=st.sampled_from([0.25, 1.0, 2.0]),
       max_frames=st.integers(1, 8), streak=st.integers(1, 5))
def test_order_is_kept_nothing_is_lost_or_duplicated_and_no_call_starves(ops, policy, quantum, max_frames, streak):
    scheduler: LaneScheduler = LaneScheduler(policy=policy, quantum_s=quantum, max_batch_frames=max_frames,
                                             live_window_s=2.0, live_streak=streak)
    pushed: dict[int, list] = {}
    popped: dict[int, list] = {}
    waiting_since: dict[str, int] = {}  # call → picks since it was last served, while it has work
    crowd: dict[str, int] = {}  # call → most calls with work at once while it waited
    picks = 0
    clock = NOW

    def pop_one(now: float) -> None:
        nonlocal picks
        calls_with_work = len(scheduler.calls_waiting())
        batch = scheduler.pop(now)
        assert batch is not None
        picks += 1
        popped.setdefault(batch.call_id, []).extend(batch.items)
        assert 1 <= len(batch.items) <= max_frames
        assert batch.frames or len(batch.items) == 1
        if policy == "fifo":
            assert len(batch.items) == 1
        for call in scheduler.calls_waiting() + [batch.call_id]:
            waiting_since[call] = 0 if call == batch.call_id else waiting_since.get(call, 0) + 1
            crowd[call] = calls_with_work if call == batch.call_id else max(crowd.get(call, 0), calls_with_work)
        for call in scheduler.calls_waiting():
            # fair: a call with work waits at most one turn of every call that had work meanwhile, times the
            # live streak bound (live calls may go first that often while it catches up)
            if policy == "fair":
                assert waiting_since[call] <= crowd[call] * (streak + 1), (call, waiting_since, crowd)
        if batch.call_id not in scheduler.calls_waiting():
            waiting_since.pop(batch.call_id)
            crowd.pop(batch.call_id)

    for index, (kind, call, cost, arg) in enumerate(ops):
        if kind == "frame":
            item = (call, index)
            scheduler.push_frame(str(call), item, cost, clock - arg)
            pushed.setdefault(call, []).append(item)
        elif kind == "control":
            item = (call, index)
            scheduler.push_control(str(call), item)
            pushed.setdefault(call, []).append(item)
        elif len(scheduler):
            clock += arg
            pop_one(clock)
    while len(scheduler):
        pop_one(clock)
    assert scheduler.pop(clock) is None and scheduler.queued_s == 0
    # per-call order kept, nothing lost, nothing twice
    assert {int(k): v for k, v in popped.items()} == pushed


@settings(max_examples=200, deadline=None)
@given(pushes=st.lists(st.tuples(st.integers(0, 4), st.sampled_from([0.25, 0.5, 1.0, 3.0])), min_size=1, max_size=120),
       pops_between=st.integers(0, 3), quantum=st.sampled_from([0.25, 1.0, 2.0]))
def test_calls_of_one_class_take_turns(pushes, pops_between, quantum):
    """All calls live: plain round robin. A call with work is served before any other call is served twice."""
    scheduler: LaneScheduler = LaneScheduler(quantum_s=quantum, max_batch_frames=4)
    served_since: dict[str, set] = {}  # waiting call → calls served since it last was

    def pop_one() -> None:
        batch = scheduler.pop(NOW)
        for call in scheduler.calls_waiting():
            if call != batch.call_id:
                assert batch.call_id not in served_since.setdefault(call, set()), (call, batch.call_id)
                served_since[call].add(batch.call_id)
        served_since.pop(batch.call_id, None)

    for index, (call, cost) in enumerate(pushes):
        scheduler.push_frame(str(call), index, cost, NOW)
        if index % 4 == 0:
            for _ in range(min(pops_between, len(scheduler.calls_waiting()))):
                pop_one()
    while len(scheduler):
        pop_one()
