"""Shared fixtures: the real embedded broker (session), real worker processes, Kafka helpers."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator

import pytest

from streamproc.broker import EmbeddedBroker, free_port
from streamproc.config import Settings

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"

# A suite started as a background job of a non-interactive shell (`cmd &`) inherits SIGINT ignored, and
# every process it starts would too: the Ctrl-C tests would then wait for exits that never come. A
# handled signal is reset to the default at exec, so the children get a working Ctrl-C again.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


# ----------------------------------------------------------------------------- brokers
# Every test that uses `broker` runs on the embedded Tansu broker ([tansu]). Tests marked
# `both_brokers` (the ones whose behaviour depends on the broker: restart, rebalance, faults, dead
# letters, transcription, dashboard) also run on a real Apache Kafka 3.9 node ([kafka]);
# `apache_only` tests run only there. `pytest -k "kafka and not tansu"` runs just those. tests/kafka_broker.py starts it from the Maven jars.

BROKER_KINDS = ("tansu", "kafka")


def pytest_generate_tests(metafunc):
    if "broker" in metafunc.fixturenames:
        kinds = ["tansu"]
        if metafunc.definition.get_closest_marker("both_brokers") is not None:
            kinds.append("kafka")
        if metafunc.definition.get_closest_marker("apache_only") is not None:
            kinds = ["kafka"]
        metafunc.parametrize("broker", kinds, indirect=True, scope="session")


@pytest.fixture(scope="session")
def tansu_broker(tmp_path_factory) -> Iterator[EmbeddedBroker]:
    log_dir = tmp_path_factory.mktemp("broker")
    with EmbeddedBroker(log_path=log_dir / "tansu.log") as running:
        yield running


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    """One Apache Kafka 3.9 KRaft node (broker + controller) on 127.0.0.1 for the session."""
    from tests.kafka_broker import KafkaCluster, kafka_available

    if not kafka_available():
        pytest.skip("Apache Kafka test broker unavailable: needs java and `make kafka-libs`")
    with KafkaCluster(tmp_path_factory.mktemp("kafka"), nodes=1) as running:
        yield running


@pytest.fixture(scope="session")
def broker(request):
    """The broker of this test run: Tansu, or Apache Kafka for the [kafka] parameter."""
    kind = getattr(request, "param", "tansu")
    return request.getfixturevalue(f"{kind}_broker")


@pytest.fixture(autouse=True)
def _figures_per_broker(request):
    """Figures written by a [kafka] test go under their own key (reliability_support.write_figures)."""
    from tests.integration import reliability_support

    kind = request.getfixturevalue("broker").kind if "broker" in request.fixturenames else "tansu"
    reliability_support.BROKER_KIND["kind"] = kind
    yield
    reliability_support.BROKER_KIND["kind"] = "tansu"


def http_get(url: str, timeout: float = 5.0, headers: dict | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class WorkerProcess:
    """A real `streamproc worker` subprocess on the embedded broker."""

    settings: Settings
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen | None = None
    starts: int = 0
    extra_args: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.web_port}"

    def topic(self, name: str) -> str:
        return self.settings.topic(name)

    def start(self, wait: bool = True, timeout_s: float = 60.0) -> "WorkerProcess":
        self.starts += 1
        log = open(self.log_path, "ab")
        log.write(f"\n===== start #{self.starts} =====\n".encode())
        log.flush()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streamproc", "worker", "--loglevel", "info", *self.extra_args],
            # Unbuffered: a worker that is SIGKILLed (by a test or by stop's timeout) leaves its whole log.
            env={**self.env, "PYTHONUNBUFFERED": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=ROOT,
        )
        if wait:
            self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                status, _ = http_get(f"{self.base_url}/ready", timeout=1)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"worker not ready after {timeout_s}s:\n{self.log_tail()}")

    def wait_transcription_ready(self, timeout_s: float = 60.0) -> None:
        """/ready covers the speech model (loaded and warmed up); the metric must agree with it."""
        self.wait_ready(timeout_s)
        status, body = http_get(f"{self.base_url}/metrics", timeout=5)
        assert status == 200 and b"\nstreamproc_transcription_ready 1" in body, "ready, but the model metric says not loaded"

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def distinct_warnings(self, limit: int = 40, chars: int = 1500) -> str:
        """Each WARNING/ERROR message of the log once (the first time, with a count): where a tail may show
        only the last repeated warning, this shows what went wrong first."""
        counts: dict[str, int] = {}
        first: dict[str, str] = {}
        for line in self.log_path.read_text(errors="replace").splitlines():
            if "] [WARNING] " in line or "] [ERROR] " in line:
                message = re.sub(r"\d+(\.\d+)?", "N", line.split("] ", 3)[-1])
                counts[message] = counts.get(message, 0) + 1
                first.setdefault(message, line[:chars])
        return "\n".join(f"{counts[m]}x {first[m]}" for m in list(first)[:limit])

    def logged_at(self, message: str) -> float | None:
        """Wall time of the last log line of the current start that contains ``message``."""
        current = self.log_path.read_text(errors="replace").rsplit(f"===== start #{self.starts} =====", 1)[-1]
        stamps = [line[1:24] for line in current.splitlines() if message in line and line.startswith("[")]
        return datetime.strptime(stamps[-1], "%Y-%m-%d %H:%M:%S,%f").timestamp() if stamps else None

    def stop(self, timeout_s: float = 30.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait()

    def kill(self) -> None:
        """SIGKILL: a crash, no clean shutdown, no final commit."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def write_rules(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


FAST_HOLD_RULES = """
version: 1
hold:
  defaults:
    thresholds:
      - {id: hold-warning, after_s: 2, severity: warning}
      - {id: hold-critical, after_s: 4, severity: critical}
    cumulative:
      - {id: cumulative-hold, after_s: 6, severity: warning}
    repeated:
      - {id: repeated-holds, count: 3, severity: warning}
"""


_PHASE_REPORTS = pytest.StashKey[dict]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    item.stash.setdefault(_PHASE_REPORTS, {})[report.when] = report
    return report


@pytest.fixture
def worker_factory(broker, tmp_path, request) -> Iterator[Callable[..., WorkerProcess]]:
    workers: list[WorkerProcess] = []

    def make(rules_text: str = FAST_HOLD_RULES, *, start: bool = True, shared_with: WorkerProcess | None = None, **overrides) -> WorkerProcess:
        if shared_with is not None:
            # Another process of the same app (same group, same topics).
            env = dict(shared_with.env)
            port = free_port()
            env["STREAMPROC_WEB_PORT"] = str(port)
            env["STREAMPROC_DATA_DIR"] = str(tmp_path / f"data-{port}")
        else:
            suffix = uuid.uuid4().hex[:8]
            rules_path = write_rules(tmp_path / f"rules-{suffix}.yaml", rules_text)
            env = dict(os.environ)
            env.update(
                STREAMPROC_BROKER=broker.url,
                STREAMPROC_APP_ID=f"test-{suffix}",
                STREAMPROC_TOPIC_PREFIX=f"t{suffix}.",
                STREAMPROC_RULES_FILE=str(rules_path),
                STREAMPROC_WEB_PORT=str(free_port()),
                STREAMPROC_DATA_DIR=str(tmp_path / f"data-{suffix}"),
            )
            env.update({f"STREAMPROC_{key.upper()}": str(value) for key, value in overrides.items()})
        settings = Settings(**{k.removeprefix("STREAMPROC_").lower(): v for k, v in env.items() if k.startswith("STREAMPROC_")})
        worker = WorkerProcess(settings=settings, env=env, log_path=tmp_path / f"worker-{settings.web_port}.log")
        workers.append(worker)
        if start:
            worker.start()
        return worker

    yield make
    for worker in workers:
        worker.stop(timeout_s=10)
    call_report = request.node.stash.get(_PHASE_REPORTS, {}).get("call")
    if call_report is not None and call_report.failed:  # the CI log is all there is to go on
        for worker in workers:
            print(f"\n----- {worker.log_path.name}: warnings and errors, once each -----\n{worker.distinct_warnings()}")
            print(f"\n----- {worker.log_path.name} (last 5000 characters) -----\n{worker.log_tail(5000)}")


class TopicReader:
    """Reads a topic from the beginning with kafka-python (all partitions, no group)."""

    def __init__(self, bootstrap: str, topic: str, isolation_level: str = "read_uncommitted"):
        from kafka import KafkaConsumer, TopicPartition

        self.topic = topic
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100, isolation_level=isolation_level
        )
        partitions = None
        deadline = time.monotonic() + 10
        while not partitions and time.monotonic() < deadline:
            partitions = self.consumer.partitions_for_topic(topic)
            if not partitions:
                time.sleep(0.1)
        assert partitions, f"topic {topic} does not exist"
        self.consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        self.consumer.seek_to_beginning()
        self.records: list = []

    def poll(self, timeout_ms: int = 100) -> list:
        fresh = []
        for batch in self.consumer.poll(timeout_ms=timeout_ms).values():
            fresh.extend(batch)
        self.records.extend(fresh)
        return fresh

    def values(self) -> list[dict]:
        return [json.loads(record.value) for record in self.records]

    def wait_for(self, predicate: Callable[[list[dict]], bool], timeout_s: float = 20.0) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.poll(100)
            values = self.values()
            if predicate(values):
                return values
        return self.values()

    def close(self) -> None:
        self.consumer.close()


def reader_isolation() -> str:
    """How the tests read the workers' outputs: as a downstream consumer of that guarantee must.

    Under exactly_once a killed or fenced worker's open transaction is aborted; its records stay in
    the log, and only a read_committed consumer skips them (STREAMPROC_TEST_READER_ISOLATION overrides,
    to see what a read_uncommitted consumer would get). Without transactions both read the same.
    """
    exactly_once = os.environ.get("STREAMPROC_PROCESSING_GUARANTEE", "").lower() == "exactly_once"
    return os.environ.get("STREAMPROC_TEST_READER_ISOLATION") or ("read_committed" if exactly_once else "read_uncommitted")


@pytest.fixture
def reader(broker):
    readers: list[TopicReader] = []

    def make(topic: str) -> TopicReader:
        topic_reader = TopicReader(broker.bootstrap, topic, reader_isolation())
        readers.append(topic_reader)
        return topic_reader

    yield make
    for topic_reader in readers:
        topic_reader.close()


@pytest.fixture
def producer(broker):
    from kafka import KafkaProducer

    kafka_producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=0)
    yield kafka_producer
    kafka_producer.close()


def event(call_id: str, type_: str, ts: float | None = None, **fields) -> bytes:
    body = {"type": type_, "call_id": call_id, "ts": time.time() if ts is None else ts} | fields
    return json.dumps(body).encode()


def send(producer, topic: str, call_id: str | None, value: bytes) -> None:
    producer.send(topic, key=call_id.encode() if call_id is not None else None, value=value)
    producer.flush()
