"""Simulated calls for the demo and for load: call-event timelines played to Kafka at real-time pace.

A timeline is a list of (seconds after call start, event type, extra fields). The
player turns it into schema-valid events keyed by call id, with event times taken
from the wall clock at send time, so the worker's hold timers run as they would live.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .schemas import CallEnded, CallStarted, HoldEnded, HoldStarted, Transferred, from_epoch

EVENT_MODELS = {
    "call_started": CallStarted,
    "hold_started": HoldStarted,
    "hold_ended": HoldEnded,
    "transferred": Transferred,
    "call_ended": CallEnded,
}


@dataclass(frozen=True)
class SimulatedCall:
    name: str
    agent_id: str
    queue: str
    customer_id: str
    timeline: tuple[tuple[float, str, dict[str, Any]], ...]

    @property
    def duration_s(self) -> float:
        return max(at for at, _, _ in self.timeline)


def _call(name, agent, queue, customer, *steps) -> SimulatedCall:
    return SimulatedCall(name, agent, queue, customer, tuple((at, kind, extra) for at, kind, extra in steps))


#: Demo calls sized for the demo rules (thresholds of seconds, not minutes).
DEMO_CALLS: tuple[SimulatedCall, ...] = (
    _call("calm call", "agent-ana", "billing", "cust-1001", (0, "call_started", {}), (25, "call_ended", {"reason": "completed"})),
    _call(
        "long hold",
        "agent-ben",
        "support",
        "cust-1002",
        (0, "call_started", {}),
        (3, "hold_started", {"reason": "checking account"}),
        (22, "hold_ended", {}),
        (30, "call_ended", {"reason": "completed"}),
    ),
    _call(
        "vip waits",
        "agent-cho",
        "vip",
        "cust-1003",
        (0, "call_started", {}),
        (2, "hold_started", {}),
        (13, "hold_ended", {}),
        (20, "call_ended", {"reason": "completed"}),
    ),
    _call(
        "repeated holds",
        "agent-dev",
        "billing",
        "cust-1004",
        (0, "call_started", {}),
        (2, "hold_started", {}),
        (9, "hold_ended", {}),
        (12, "hold_started", {}),
        (19, "hold_ended", {}),
        (22, "hold_started", {}),
        (29, "hold_ended", {}),
        (31, "transferred", {"to_queue": "retention", "to_agent_id": "agent-eve"}),
        (36, "call_ended", {"reason": "completed"}),
    ),
)


def build_event(call: SimulatedCall, call_id: str, kind: str, extra: dict[str, Any], ts: float) -> bytes:
    fields: dict[str, Any] = {"call_id": call_id, "ts": from_epoch(ts)} | extra
    if kind == "call_started":
        fields |= {"agent_id": call.agent_id, "queue": call.queue, "customer_id": call.customer_id}
    return EVENT_MODELS[kind](**fields).to_json_bytes()


@dataclass(order=True)
class _Scheduled:
    at: float
    seq: int
    call: SimulatedCall = field(compare=False)
    call_id: str = field(compare=False)
    kind: str = field(compare=False)
    extra: dict = field(compare=False)


class CallPlayer:
    """Plays simulated calls concurrently at real-time pace with a send function (topic key, value bytes)."""

    def __init__(self, send: Callable[[str, bytes], None], *, on_event: Callable[[str, str, SimulatedCall], None] | None = None):
        self._send = send
        self._on_event = on_event or (lambda call_id, kind, call: None)
        self._queue: list[_Scheduled] = []
        self._seq = itertools.count()
        self._stop = threading.Event()

    def schedule(self, call: SimulatedCall, call_id: str, start_at: float) -> None:
        for offset, kind, extra in call.timeline:
            heapq.heappush(self._queue, _Scheduled(start_at + offset, next(self._seq), call, call_id, kind, extra))

    def stop(self) -> None:
        self._stop.set()

    def run(self, until: float | None = None) -> None:
        """Send every scheduled event at its time; returns when the schedule is empty or ``until`` passes."""
        while self._queue and not self._stop.is_set():
            item = self._queue[0]
            now = time.time()
            if until is not None and now >= until:
                return
            if item.at > now:
                self._stop.wait(min(item.at - now, 0.2))
                continue
            heapq.heappop(self._queue)
            self._send(item.call_id, build_event(item.call, item.call_id, item.kind, item.extra, time.time()))
            self._on_event(item.call_id, item.kind, item.call)
