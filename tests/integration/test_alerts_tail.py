"""`streamproc alerts tail` as a downstream user runs it: a subprocess on a real broker."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
from kafka.admin import KafkaAdminClient, NewTopic

from streamproc.broker import free_port
from streamproc.schemas import Alert
from tests.conftest import ROOT
from tests.unit.test_alerts_tail import summary_record

pytestmark = pytest.mark.broker


def alert(call_id: str, rule_id: str, severity: str, queue_name: str, occurrence: int = 1) -> bytes:
    return json.dumps({
        "alert_id": Alert.make_id(call_id, rule_id, occurrence), "call_id": call_id, "agent_id": "agent-1",
        "queue": queue_name, "kind": "hold_breach", "rule_id": rule_id, "severity": severity,
        "occurrence": occurrence, "title": f"{rule_id} on {call_id}",
        "event_time": "2026-11-24T10:02:00Z", "detected_at": "2026-11-24T10:02:01Z",
    }).encode()


class TailProcess:
    """`streamproc alerts tail ...` with stdout lines and stderr collected by threads."""

    def __init__(self, broker_url: str, prefix: str, *args: str, env: dict[str, str] | None = None):
        env = dict(os.environ, STREAMPROC_BROKER=broker_url, STREAMPROC_TOPIC_PREFIX=prefix) | (env or {})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streamproc", "alerts", "tail", *args],
            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line)
            if line.startswith("following "):
                self.ready.set()

    def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ready.wait(0.2):
            assert self.process.poll() is None, "".join(self.stderr)
            assert time.monotonic() < deadline, "tail not ready:\n" + "".join(self.stderr)

    def read_until(self, done, timeout_s: float = 30) -> list[dict]:
        """JSON lines until ``done(records)``; fails on timeout with what came."""
        records: list[dict] = []
        deadline = time.monotonic() + timeout_s
        while not done(records):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"got {records}\nstderr: {''.join(self.stderr)}"
            try:
                records.append(json.loads(self.lines.get(timeout=min(remaining, 0.5))))
            except queue.Empty:
                assert self.process.poll() is None, "".join(self.stderr)
        return records

    def interrupt(self, timeout_s: float = 20) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout_s)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def topics(broker):
    """A fresh prefix with calls.alerts and calls.summaries, one partition each: produce order is read order,
    so the last record of a batch tells the test everything before it was read."""
    prefix = f"tail{uuid.uuid4().hex[:8]}."
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    admin.create_topics([NewTopic(f"{prefix}calls.{name}", 1, 1) for name in ("alerts", "summaries")])
    admin.close()
    return prefix


@pytest.fixture
def tails():
    started: list[TailProcess] = []

    def start(broker, prefix: str, *args: str) -> TailProcess:
        tail = TailProcess(broker.url, prefix, *args)
        started.append(tail)
        return tail

    yield start
    for tail in started:
        tail.kill()


def produce(producer, topic: str, records: list[tuple[str, bytes]], timestamp_ms: int | None = None) -> None:
    for key, value in records:
        producer.send(topic, key=key.encode(), value=value, timestamp_ms=timestamp_ms)
    producer.flush()


def test_tail_filters_dedupes_follows_and_stops_cleanly_on_ctrl_c(broker, producer, topics, tails):
    alerts, summaries = f"{topics}calls.alerts", f"{topics}calls.summaries"
    produce(producer, alerts, [
        ("c1", alert("c1", "hold-warning", "warning", "billing")),
        ("c1", alert("c1", "hold-warning", "warning", "billing")),  # redelivered after a crash: same alert_id
        ("c2", alert("c2", "hold-critical", "critical", "vip")),  # other queue
        ("c3", alert("c3", "dead-air", "info", "billing")),  # below the minimum severity
        ("c4", b"{not json"),  # unreadable: counted, never fatal
        ("c5", alert("c5", "hold-critical", "critical", "billing")),
    ])
    summary = summary_record("c1", "billing")
    produce(producer, summaries, [("c1", summary), ("c1", summary), ("c2", summary_record("c2", "vip")),
                                  ("c6", summary_record("c6", "billing"))])
    tail = tails(broker, topics, "--from-beginning", "--json", "--summaries", "--queue", "billing",
                 "--severity", "warning")
    seen = tail.read_until(lambda r: {"c5", "c6"} <= {x["call_id"] for x in r})
    # c5 and s-c6 were the last of their (single-partition) topics: everything before them was read.
    assert sorted((r["topic"], r["call_id"]) for r in seen) == [
        ("alerts", "c1"), ("alerts", "c5"), ("summaries", "c1"), ("summaries", "c6")]
    assert [r["rule_id"] for r in seen if r["topic"] == "alerts" and r["call_id"] == "c1"] == ["hold-warning"]
    # Live: a record produced now shows up; its redelivery does not.
    tail.wait_ready()
    produce(producer, alerts, [("c7", alert("c7", "hold-warning", "warning", "billing"))] * 2
            + [("c8", alert("c8", "hold-warning", "warning", "billing"))])
    live = tail.read_until(lambda r: any(x["call_id"] == "c8" for x in r))
    assert [r["call_id"] for r in live] == ["c7", "c8"]
    assert tail.interrupt() == 0, "".join(tail.stderr)
    stderr = "".join(tail.stderr)
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert "6 shown, 3 duplicates dropped" in stderr and "3 filtered out, 1 unreadable" in stderr, stderr


def test_tail_starts_now_by_default_and_prints_a_table(broker, producer, topics, tails):
    alerts = f"{topics}calls.alerts"
    produce(producer, alerts, [("old", alert("old", "hold-warning", "warning", "billing"))])
    tail = tails(broker, topics, "--rule", "hold-critical")
    tail.wait_ready()
    produce(producer, alerts, [("n1", alert("n1", "hold-warning", "warning", "billing")),
                               ("n2", alert("n2", "hold-critical", "critical", "billing"))])
    lines: list[str] = []
    deadline = time.monotonic() + 30
    while not any("n2" in line for line in lines):
        assert time.monotonic() < deadline, f"{lines}\n{''.join(tail.stderr)}"
        try:
            lines.append(tail.lines.get(timeout=0.5))
        except queue.Empty:
            pass
    header, *rows = lines
    assert header.split() == ["TIME", "SEVERITY", "QUEUE", "CALL", "AGENT", "RULE", "TITLE"]
    assert len(rows) == 1 and rows[0].split()[:6] == ["10:02:00", "critical", "billing", "n2", "agent-1", "hold-critical"]
    assert rows[0].endswith("hold-critical on n2")
    assert tail.interrupt() == 0
    assert "Traceback" not in "".join(tail.stderr)


@pytest.mark.both_brokers
def test_since_starts_at_that_time_with_offsets_for_times(broker, producer, topics, tails):
    alerts = f"{topics}calls.alerts"
    hour_ago = int((time.time() - 3600) * 1000)
    produce(producer, alerts, [("h1", alert("h1", "hold-warning", "warning", "billing")),
                               ("h2", alert("h2", "hold-warning", "warning", "billing"))], timestamp_ms=hour_ago)
    produce(producer, alerts, [("m1", alert("m1", "hold-warning", "warning", "billing")),
                               ("m2", alert("m2", "hold-warning", "warning", "billing"))],
            timestamp_ms=int((time.time() - 300) * 1000))
    tail = tails(broker, topics, "--since", "15m", "--json")
    seen = tail.read_until(lambda r: any(x["call_id"] == "m2" for x in r))
    assert [r["call_id"] for r in seen] == ["m1", "m2"]
    assert tail.interrupt() == 0
    # An ISO time between the two batches gives the same; one before both gives all four.
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1800))
    tail = tails(broker, topics, "--since", iso, "--json")
    assert [r["call_id"] for r in tail.read_until(lambda r: len(r) >= 2)] == ["m1", "m2"]
    assert tail.interrupt() == 0
    tail = tails(broker, topics, "--since", "2h", "--json")
    assert [r["call_id"] for r in tail.read_until(lambda r: len(r) >= 4)] == ["h1", "h2", "m1", "m2"]
    assert tail.interrupt() == 0


def test_tail_refuses_a_missing_topic_without_creating_it(broker, tails):
    prefix = f"none{uuid.uuid4().hex[:8]}."
    env = dict(os.environ, STREAMPROC_BROKER=broker.url, STREAMPROC_TOPIC_PREFIX=prefix)
    # Internal wait shortened through the same code path: the topic never appears.
    result = subprocess.run(
        [sys.executable, "-c", "from streamproc.alerts_tail import follow, Tail, contract_for; "
         "from streamproc.config import Settings; "
         "follow(Settings(), [contract_for('alerts')], Tail(), print, wait_for_topics_s=1)"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0 and "do not exist" in result.stderr
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        assert f"{prefix}calls.alerts" not in admin.list_topics(), "asking for the topic must not auto-create it"
    finally:
        admin.close()


def test_ctrl_c_while_still_connecting_exits_0_without_a_traceback():
    port = free_port()  # nothing listens there
    env = dict(os.environ, STREAMPROC_BROKER=f"127.0.0.1:{port}")
    process = subprocess.Popen([sys.executable, "-m", "streamproc", "alerts", "tail"], env=env, cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    lines = []
    for line in process.stderr:  # wait until it is trying to connect
        lines.append(line)
        if "ECONNREFUSED" in line or "not ready" in line:
            break
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 0
    assert "Traceback" not in "".join(lines) + process.stderr.read()
