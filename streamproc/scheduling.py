"""Decoder scheduling: which call a decoder lane serves next, and how much of its queued audio at once.

No Faust, no clock of its own, no threads: the audio agent (agents/audio.py) owns one
:class:`LaneScheduler` per decoder lane, pushes every job of a call pinned to that lane, and
asks for the next :class:`Batch` whenever the lane's decoder thread is free.

Policy (``fair``, the default):

* **Per-call FIFO queues.** A call's jobs (audio frames, then control jobs such as "the call
  ended") leave in the order they came in, so a call's audio is decoded strictly in order.
* **Live before catch-up.** A call whose newest queued frame was *sent* (producer clock) within
  ``live_window_s`` of now is *live*: it is producing audio now. A call whose queued audio is all
  older (a backlog dumped at once, read before it reaches the present) is *catching up*. Live
  calls are served first: their partials are what phrase alerts fire on. A live call that fell a
  few seconds behind stays live (its newest frame is fresh), so it cannot lose its priority to
  the backlog that delayed it. So that catch-up still progresses when live calls alone keep the
  lane busy, at most ``live_streak`` live batches are served in a row while a catch-up call waits.
* **Round robin by audio seconds** (deficit round robin) within each class: each visit adds
  ``quantum_s`` seconds of speaker-channel audio to the call's credit and serves its queued
  frames up to that credit, so a long monologue or a 60 s backlog gets the same share of the
  decoder per round as a call with a few frames queued, and cannot hold the others back for
  longer than one batch.
* **Batching.** What one visit serves is one :class:`Batch`: the run of frames at the head of
  the call's queue (never past a control job), decoded in one executor call.

``fifo`` serves jobs in arrival order across calls, one at a time (the lane's behaviour before
this module; kept as the benchmark's baseline).

Capacity: :attr:`LaneScheduler.queued_s` is the audio waiting on the lane; the agent stops
reading the audio topic while the worker's total is at its bound (Kafka keeps the rest).
"""

from __future__ import annotations

import os
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

T = TypeVar("T")

Policy = Literal["fair", "fifo"]


def lane_count(configured: int, cores: int | None = None) -> int:
    """Decoder lanes of a worker: the setting, or one per CPU core this process may run on when it is 0."""
    if configured > 0:
        return configured
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores)


@dataclass
class Job(Generic[T]):
    """One unit of lane work for a call: a frame (``cost_s`` > 0 or a frame that failed to parse) or a control job."""

    item: T
    cost_s: float  # speaker-channel seconds of audio (0 for a control job)
    sent_at: float | None  # producer wall time of a frame; None for a control job
    frame: bool
    order: int = 0  # arrival number on the lane (fifo policy)


@dataclass
class Batch(Generic[T]):
    call_id: str
    items: list[T]
    frames: bool  # True: a run of frames; False: one control job
    audio_s: float
    live: bool


@dataclass
class _Call(Generic[T]):
    queue: deque = field(default_factory=deque)
    credit_s: float = 0.0
    newest_sent_at: float | None = None  # newest producer send time among the queued frames (None: none known)


class LaneScheduler(Generic[T]):
    """Per-call queues of one decoder lane and the pick policy (module docstring)."""

    def __init__(
        self,
        *,
        policy: Policy = "fair",
        quantum_s: float = 2.0,
        max_batch_frames: int = 16,
        live_window_s: float = 2.0,
        live_streak: int = 4,
    ):
        if quantum_s <= 0 or max_batch_frames < 1 or live_streak < 1:
            raise ValueError("quantum_s > 0, max_batch_frames >= 1 and live_streak >= 1 are required")
        self.policy = policy
        self.quantum_s = quantum_s
        self.max_batch_frames = max_batch_frames
        self.live_window_s = live_window_s
        self.live_streak = live_streak
        # Calls with queued work, in round-robin order: a served call moves to the back.
        self._calls: OrderedDict[str, _Call[T]] = OrderedDict()
        self._arrivals = 0
        self._live_in_a_row = 0
        self.queued_s = 0.0
        self.queued_jobs = 0

    # -- input
    def push_frame(self, call_id: str, item: T, cost_s: float, sent_at: float | None) -> None:
        self._push(call_id, Job(item, max(0.0, cost_s), sent_at, True))

    def push_control(self, call_id: str, item: T) -> None:
        """A job that must run after the call's queued frames (call end, idle close, flush before a hand-over)."""
        self._push(call_id, Job(item, 0.0, None, False))

    def _push(self, call_id: str, job: Job[T]) -> None:
        job.order = self._arrivals
        self._arrivals += 1
        call = self._calls.get(call_id)
        if call is None:
            call = self._calls[call_id] = _Call()
        call.queue.append(job)
        if job.sent_at is not None:
            call.newest_sent_at = job.sent_at if call.newest_sent_at is None else max(call.newest_sent_at, job.sent_at)
        self.queued_s += job.cost_s
        self.queued_jobs += 1

    # -- introspection
    def __len__(self) -> int:
        return self.queued_jobs

    def calls_waiting(self) -> list[str]:
        return list(self._calls)

    def is_live(self, call_id: str, now: float) -> bool:
        call = self._calls.get(call_id)
        return call is not None and self._live(call, now)

    def _live(self, call: _Call[T], now: float) -> bool:
        head: Job[T] = call.queue[0]
        # A control job is cheap and finishes the call's sessions: it never waits behind catch-up. So is a frame
        # whose headers could not be read (no send time): it is rejected at once.
        if head.sent_at is None or call.newest_sent_at is None:
            return True
        return now - call.newest_sent_at <= self.live_window_s

    # -- output
    def pop(self, now: float) -> Batch[T] | None:
        """The next batch to decode (None: nothing queued). ``now``: wall time, to tell live from catch-up."""
        if not self._calls:
            return None
        call_id = self._pick_fifo() if self.policy == "fifo" else self._pick_fair(now)
        call = self._calls[call_id]
        live = self._live(call, now)
        batch = self._take(call_id, call, live)
        if call.queue:
            self._calls.move_to_end(call_id)
        else:
            del self._calls[call_id]  # an idle call keeps no credit: a returning call starts fresh
        return batch

    def _pick_fifo(self) -> str:
        return min(self._calls, key=lambda c: self._calls[c].queue[0].order)

    def _pick_fair(self, now: float) -> str:
        live = next((c for c, call in self._calls.items() if self._live(call, now)), None)
        catching_up = next((c for c, call in self._calls.items() if not self._live(call, now)), None)
        if live is not None and (catching_up is None or self._live_in_a_row < self.live_streak):
            self._live_in_a_row = self._live_in_a_row + 1 if catching_up is not None else 0
            return live
        self._live_in_a_row = 0
        assert catching_up is not None
        return catching_up

    def _take(self, call_id: str, call: _Call[T], live: bool) -> Batch[T]:
        queue = call.queue
        head: Job[T] = queue.popleft()
        jobs = [head]
        if head.frame and self.policy == "fair":
            # Deficit round robin: the visit's credit pays for the head frame (always served, so a
            # frame longer than the quantum cannot stall the call) and as many more as it covers.
            call.credit_s = max(0.0, call.credit_s + self.quantum_s - head.cost_s)
            while (queue and queue[0].frame and len(jobs) < self.max_batch_frames
                   and queue[0].cost_s <= call.credit_s):
                job = queue.popleft()
                call.credit_s -= job.cost_s
                jobs.append(job)
            if not queue or not queue[0].frame:
                call.credit_s = 0.0  # credit is for backlog only: it does not build up while a call waits
            call.credit_s = min(call.credit_s, self.quantum_s)
        audio_s = sum(job.cost_s for job in jobs)
        self.queued_s = max(0.0, self.queued_s - audio_s) if self.queued_jobs > len(jobs) else 0.0
        self.queued_jobs -= len(jobs)
        return Batch(call_id, [job.item for job in jobs], head.frame, audio_s, live)
