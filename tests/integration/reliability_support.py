"""Shared pieces of the reliability tests (test_faults, test_soak, test_security) and bench/faults.py.

* :class:`CallPlan` + :func:`expected_alerts`: what a scripted call must produce under given hold
  rules (the oracle, computed independently of streamproc.detect.hold).
* :class:`AlertAudit`: delivered / missing / duplicated / unexpected alerts, lateness.
* :class:`EventScheduler`: sends call events at their wall-clock times from a thread (load).
* :func:`write_figures`: JSON under test-artifacts/figures/ that docs/reliability.md cites.
* /proc helpers: RSS of a process tree, listening sockets of a process.
"""

from __future__ import annotations

import heapq
import json
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from streamproc.schemas import Alert

ROOT = Path(__file__).resolve().parents[2]
FIGURES = ROOT / "test-artifacts" / "figures"


@dataclass(frozen=True)
class HoldRuleSet:
    thresholds: tuple[tuple[str, float], ...] = ()
    cumulative: tuple[tuple[str, float], ...] = ()
    repeated: tuple[tuple[str, int], ...] = ()

    def yaml(self) -> str:
        lines = ["version: 1", "hold:", "  defaults:"]
        if self.thresholds:
            lines.append("    thresholds:")
            lines += [f"      - {{id: {rule}, after_s: {after}, severity: warning}}" for rule, after in self.thresholds]
        if self.cumulative:
            lines.append("    cumulative:")
            lines += [f"      - {{id: {rule}, after_s: {after}, severity: warning}}" for rule, after in self.cumulative]
        if self.repeated:
            lines.append("    repeated:")
            lines += [f"      - {{id: {rule}, count: {count}, severity: warning}}" for rule, count in self.repeated]
        return "\n".join(lines) + "\n"


@dataclass
class CallPlan:
    """A scripted call: event-time stamps (epoch seconds) of its start, holds and end."""

    call_id: str
    started: float
    holds: list[tuple[float, float | None]] = field(default_factory=list)  # (start, end or still on hold)
    ended: float | None = None
    agent_id: str = "agent-1"
    queue: str = "billing"

    def events(self) -> list[tuple[float, bytes]]:
        out = [(self.started, _event(self.call_id, "call_started", self.started, agent_id=self.agent_id, queue=self.queue))]
        for start, end in self.holds:
            out.append((start, _event(self.call_id, "hold_started", start)))
            if end is not None:
                out.append((end, _event(self.call_id, "hold_ended", end)))
        if self.ended is not None:
            out.append((self.ended, _event(self.call_id, "call_ended", self.ended)))
        return out


def _event(call_id: str, type_: str, ts: float, **fields) -> bytes:
    return json.dumps({"type": type_, "call_id": call_id, "ts": ts} | fields).encode()


def expected_alerts(plan: CallPlan, rules: HoldRuleSet, until: float = float("inf")) -> dict[str, tuple[str, float]]:
    """{alert_id: (rule_id, event_time)} the call must produce by event time ``until``."""
    expected: dict[str, tuple[str, float]] = {}
    completed = 0.0
    cumulative_fired: set[str] = set()
    for number, (start, end) in enumerate(plan.holds, start=1):
        stop = min(end if end is not None else float("inf"), until)
        duration = stop - start
        for rule, after in rules.thresholds:
            if duration >= after:
                expected[Alert.make_id(plan.call_id, rule, number)] = (rule, start + after)
        for rule, after in rules.cumulative:
            if rule not in cumulative_fired and completed + duration >= after:
                cumulative_fired.add(rule)
                expected[Alert.make_id(plan.call_id, rule, 1)] = (rule, start + (after - completed))
        for rule, count in rules.repeated:
            if number == count and start <= until:
                expected[Alert.make_id(plan.call_id, rule, 1)] = (rule, start)
        completed += max(0.0, duration)
    return expected


def iso(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@dataclass
class AlertAudit:
    expected: int
    delivered: int  # distinct expected ids seen
    copies: int  # records on the alerts topic for expected ids
    duplicated: int  # copies beyond the first (at-least-once re-sends, same id)
    missing: list[str]
    unexpected: list[dict]  # alerts no plan called for (spurious: the breach did not happen in event time)
    second_ids: list[dict]  # alerts whose id is not the deterministic id of their (call, rule, occurrence)
    wrong_time: list[tuple[str, float, float]]  # (id, expected event_time, actual)
    lateness_s: list[float]  # detected_at - event_time per first copy
    duplicate_ids: list[str] = field(default_factory=list)  # expected ids seen more than once

    @classmethod
    def of(cls, values: list[dict], expected: dict[str, tuple[str, float]], *, calls: set[str] | None = None) -> "AlertAudit":
        calls = calls if calls is not None else {value["call_id"] for value in values}
        mine = [value for value in values if value["call_id"] in calls]
        counts = Counter(value["alert_id"] for value in mine)
        first: dict[str, dict] = {}
        for value in mine:
            first.setdefault(value["alert_id"], value)
        wrong_time = [
            (alert_id, expected[alert_id][1], iso(first[alert_id]["event_time"]))
            for alert_id in first
            if alert_id in expected and abs(iso(first[alert_id]["event_time"]) - expected[alert_id][1]) > 0.01
        ]
        return cls(
            expected=len(expected),
            delivered=sum(1 for alert_id in expected if alert_id in counts),
            copies=sum(counts[alert_id] for alert_id in expected),
            duplicated=sum(counts[alert_id] - 1 for alert_id in expected if counts[alert_id] > 1),
            missing=sorted(alert_id for alert_id in expected if alert_id not in counts),
            unexpected=[value for value in mine if value["alert_id"] not in expected],
            second_ids=[
                value for value in mine
                if value["alert_id"] != Alert.make_id(value["call_id"], value["rule_id"], value.get("occurrence", 1))
            ],
            wrong_time=wrong_time,
            lateness_s=[iso(value["detected_at"]) - iso(value["event_time"]) for value in first.values()],
            duplicate_ids=sorted(alert_id for alert_id in expected if counts[alert_id] > 1),
        )

    def figures(self) -> dict:
        late = sorted(self.lateness_s)
        return {
            "alerts_expected": self.expected,
            "alerts_delivered": self.delivered,
            "alerts_duplicated": self.duplicated,
            "alerts_missing": len(self.missing),
            "alerts_spurious": len(self.unexpected),
            "alerts_with_second_id": len(self.second_ids),
            "lateness_p50_s": round(late[len(late) // 2], 3) if late else None,
            "lateness_max_s": round(late[-1], 3) if late else None,
        }

    def assert_delivered(self) -> None:
        """Nothing lost, nothing under a second id, every event_time right."""
        assert not self.missing, f"{len(self.missing)} of {self.expected} expected alerts never arrived: {self.missing[:5]}"
        assert not self.second_ids, f"alerts under a non-deterministic id: {self.second_ids[:3]}"
        assert not self.wrong_time, f"alerts with the wrong event_time: {self.wrong_time[:5]}"

    def assert_no_duplicates(self) -> None:
        """No expected alert arrived twice (what a test without a crash must show: nothing re-sent)."""
        assert self.duplicated == 0, f"{self.duplicated} extra copies of expected alerts: {self.duplicate_ids[:5]}"

    def assert_exact(self) -> None:
        """Every expected alert exactly once: delivered, no duplicate copy, nothing spurious."""
        self.assert_delivered()
        self.assert_no_duplicates()
        assert not self.unexpected, f"{len(self.unexpected)} alerts for breaches that did not happen: {self.unexpected[:3]}"

    def assert_resends_only_in(self, windows: list[tuple[float, float]], values: list[dict]) -> None:
        """At-least-once bound after crashes (docs/state-and-restarts.md): a duplicate copy may only be
        an alert whose first copy was sent in a window where its "fired" mark could still be missing
        from the changelog (``(start, end)`` wall-clock seconds, e.g. the commit interval before a
        SIGKILL), and it keeps the alert's id (checked by ``second_ids``)."""
        first_sent: dict[str, float] = {}
        for value in values:
            first_sent.setdefault(value["alert_id"], iso(value["detected_at"]))
        outside = [
            alert_id for alert_id in self.duplicate_ids
            if not any(start <= first_sent[alert_id] <= end for start, end in windows)
        ]
        assert not outside, f"alerts re-sent although first sent outside every crash window: {outside[:5]}"


class EventScheduler(threading.Thread):
    """Sends (wall_time, key, value) records at their times with its own producer (call load)."""

    def __init__(self, bootstrap: str, topic: str):
        super().__init__(daemon=True)
        from kafka import KafkaProducer

        self.producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        self.topic = topic
        self._queue: list[tuple[float, int, str | None, bytes, str]] = []
        self._seq = 0
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self.sent = 0
        self.errors: list[BaseException] = []

    def add(self, at: float, key: str | None, value: bytes, topic: str | None = None) -> None:
        with self._lock:
            heapq.heappush(self._queue, (at, self._seq, key, value, topic or self.topic))
            self._seq += 1

    def add_plan(self, plan: CallPlan) -> None:
        for at, value in plan.events():
            self.add(at, plan.call_id, value)

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                now = time.time()
                batch = []
                with self._lock:
                    while self._queue and self._queue[0][0] <= now:
                        batch.append(heapq.heappop(self._queue))
                for _, _, key, value, topic in batch:
                    self.producer.send(topic, key=key.encode() if key is not None else None, value=value)
                    self.sent += 1
                if batch:
                    self.producer.flush()
                time.sleep(0.01)
        except BaseException as exc:  # surfaced by the test
            self.errors.append(exc)

    def drain(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.pending() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not self.pending(), "scheduled events were not all sent"
        assert not self.errors, self.errors

    def close(self) -> None:
        self._halt.set()
        self.join(5)
        self.producer.close()


#: Set per test by tests/conftest.py: figures measured on Apache Kafka go under "<key>@kafka",
#: next to the Tansu figures under "<key>", instead of overwriting them.
BROKER_KIND = {"kind": "tansu"}


def write_figures(name: str, key: str, data: dict) -> Path:
    """Merge ``data`` under ``key`` into test-artifacts/figures/<name>.json."""
    if BROKER_KIND["kind"] != "tansu":
        key = f"{key}@{BROKER_KIND['kind']}"
        data = data | {"broker": BROKER_KIND["kind"]}
    FIGURES.mkdir(parents=True, exist_ok=True)
    path = FIGURES / f"{name}.json"
    try:
        current = json.loads(path.read_text())
    except (OSError, ValueError):
        current = {}
    current[key] = data | {"written_at": datetime.now(timezone.utc).isoformat()}
    path.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    return path


# ----------------------------------------------------------------------------- /proc


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def rss_bytes(pid: int) -> int:
    """Resident set size of a process and its descendants."""
    total = 0
    for member in process_tree(pid):
        try:
            with open(f"/proc/{member}/status") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """(ip, port) of every TCP socket in LISTEN state owned by pid or its descendants."""
    inodes: set[str] = set()
    for member in process_tree(pid):
        try:
            for fd in os.listdir(f"/proc/{member}/fd"):
                try:
                    target = os.readlink(f"/proc/{member}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found: set[tuple[str, int]] = set()
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            local, state, inode = parts[1], parts[3], parts[9]
            if state != "0A" or inode not in inodes:  # 0A = LISTEN
                continue
            address, port = local.split(":")
            found.add((_ip(address, width), int(port, 16)))
    return found


def _ip(hex_address: str, width: int) -> str:
    import ipaddress

    raw = bytes.fromhex(hex_address)
    if width == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    # /proc/net/tcp6: four little-endian 32-bit words
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return str(ipaddress.IPv6Address(words))
