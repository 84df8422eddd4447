"""Apache Kafka 3.9 (KRaft) test brokers on 127.0.0.1, from the jars in tests/kafka/libs/.

``make kafka-libs`` (part of ``make test``) fetches the jars once with Maven
(tests/kafka/pom.xml). Each node is ``java -cp 'libs/*' kafka.Kafka server.properties`` with its
own data dir, formatted first with ``kafka.tools.StorageTool format``; no Kafka distribution or
Docker is needed.

    with KafkaCluster(tmp_dir, nodes=1) as kafka:      # one combined broker+controller
        print(kafka.url)                               # kafka://127.0.0.1:PORT
    cluster = KafkaCluster(tmp_dir, nodes=3).start()   # three combined nodes, RF 3, min ISR 2
    cluster.kill(2); cluster.restart(2)                # SIGKILL, then start again on its logs
    cluster.freeze(1); cluster.thaw(1)                 # SIGSTOP / SIGCONT the JVM

Run ``python -m tests.kafka_broker [--nodes 3] [--dir DIR]`` to start one for the demo or the
benchmarks; it prints the bootstrap URL and runs until Ctrl-C.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from streamproc.broker import BrokerError, _die_with_parent, free_port, kafka_answers, terminate

ROOT = Path(__file__).resolve().parents[1]
KAFKA_DIR = ROOT / "tests" / "kafka"
LIBS = KAFKA_DIR / "libs"
KAFKA_VERSION = "3.9.1"

LOG4J = """\
log4j.rootLogger=WARN, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaRaftServer=INFO
log4j.logger.kafka.server.BrokerServer=INFO
log4j.logger.kafka.server.ControllerServer=INFO
"""


def libs_present() -> bool:
    return (LIBS / f"kafka_2.13-{KAFKA_VERSION}.jar").exists()


def java_available() -> bool:
    return shutil.which("java") is not None


def kafka_available() -> bool:
    """The jars are fetched and a JVM is installed: Kafka-parametrised tests can run."""
    return libs_present() and java_available()


def fetch_libs() -> None:
    """Copy Kafka's jars into tests/kafka/libs/ with Maven (no-op when present)."""
    if libs_present():
        return
    subprocess.run(["mvn", "-B", "-q", "-f", str(KAFKA_DIR / "pom.xml"), "dependency:copy-dependencies"], check=True)


def random_cluster_id() -> str:
    """A KRaft cluster id: a UUID in URL-safe base64 without padding (what ``random-uuid`` prints)."""
    while True:  # one starting with "-" would be read as an option by kafka-storage
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _java(main: str, *args: str, heap: str = "512m", log4j: Path | None = None) -> list[str]:
    return [
        "java",
        *([f"-Dlog4j.configuration=file:{log4j}"] if log4j else []),
        f"-Xmx{heap}",
        "-Xms128m",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        "-cp",
        str(LIBS / "*"),
        main,
        *args,
    ]


@dataclass
class Listener:
    """An extra client listener, e.g. Listener("SSL", "SSL") or Listener("SASL", "SASL_SSL")."""

    name: str
    protocol: str


@dataclass
class KafkaNode:
    node_id: int
    data_dir: Path
    port: int
    controller_port: int
    extra_ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen | None = None
    log_file: object = None

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"kafka-{self.node_id}.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.poll() is None else None


class KafkaCluster:
    """One combined node, or ``nodes`` combined broker+controller nodes forming one KRaft quorum.

    ``extra_properties`` go into every node's server.properties (e.g. SSL keystores);
    ``listeners`` adds client listeners beside PLAINTEXT (which stays for inter-broker traffic and
    the tests' own clients); ``scram_users`` are created at format time (SCRAM-SHA-256/512).
    """

    kind = "kafka"

    def __init__(
        self,
        base_dir: Path,
        nodes: int = 1,
        *,
        extra_properties: dict[str, str] | None = None,
        listeners: list[Listener] | None = None,
        scram_users: list[tuple[str, str, str]] | None = None,  # (mechanism, name, password)
        heap: str = "512m",
    ):
        self.base_dir = Path(base_dir)
        self.cluster_id = random_cluster_id()
        self.listeners = listeners or []
        self.extra_properties = extra_properties or {}
        self.scram_users = scram_users or []
        self.heap = heap
        self.nodes = [
            KafkaNode(
                node_id=i,
                data_dir=self.base_dir / f"node-{i}" / "data",
                port=free_port(),
                controller_port=free_port(),
                extra_ports={listener.name: free_port() for listener in self.listeners},
            )
            for i in range(1, nodes + 1)
        ]
        self.formatted = False
        self.start_seconds: list[float] = []

    # ------------------------------------------------------------------ addresses
    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def url(self) -> str:
        return "kafka://" + ";".join(node.bootstrap for node in self.nodes)

    def listener_bootstrap(self, name: str) -> str:
        return ",".join(f"127.0.0.1:{node.extra_ports[name]}" for node in self.nodes)

    def listener_url(self, name: str) -> str:
        return "kafka://" + ";".join(f"127.0.0.1:{node.extra_ports[name]}" for node in self.nodes)

    @property
    def process(self) -> subprocess.Popen | None:
        """The first node's process (what EmbeddedBroker.process is for the single-node case)."""
        return self.nodes[0].process

    def node(self, node_id: int) -> KafkaNode:
        return self.nodes[node_id - 1]

    # ------------------------------------------------------------------ configuration
    def properties(self, node: KafkaNode) -> str:
        return "".join(f"{key}={value}\n" for key, value in self.property_map(node).items())

    def property_map(self, node: KafkaNode) -> dict[str, str]:
        replication = min(3, len(self.nodes))
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        listeners = [f"PLAINTEXT://127.0.0.1:{node.port}", f"CONTROLLER://127.0.0.1:{node.controller_port}"]
        advertised = [f"PLAINTEXT://127.0.0.1:{node.port}"]
        protocol_map = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        for listener in self.listeners:
            port = node.extra_ports[listener.name]
            listeners.append(f"{listener.name}://127.0.0.1:{port}")
            advertised.append(f"{listener.name}://127.0.0.1:{port}")
            protocol_map.append(f"{listener.name}:{listener.protocol}")
        props = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listeners": ",".join(listeners),
            "advertised.listeners": ",".join(advertised),
            "listener.security.protocol.map": ",".join(protocol_map),
            "log.dirs": str(node.data_dir),
            "num.partitions": "1",
            "default.replication.factor": str(replication),
            "min.insync.replicas": str(min(2, replication)),
            "offsets.topic.replication.factor": str(replication),
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": str(replication),
            "transaction.state.log.min.isr": str(min(2, replication)),
            "transaction.state.log.num.partitions": "10",
            "group.initial.rebalance.delay.ms": "0",
            "unclean.leader.election.enable": "false",
            # Tests kill and freeze brokers: notice it in seconds, not the 9 s/18 s defaults.
            "broker.session.timeout.ms": "6000",
            "broker.heartbeat.interval.ms": "1000",
            "replica.lag.time.max.ms": "10000",
            "log.flush.interval.messages": str(2**62),  # Kafka's default: rely on replication, not fsync
            "auto.create.topics.enable": "true",
        } | self.extra_properties
        return props

    def _write_config(self, node: KafkaNode) -> Path:
        node_dir = node.data_dir.parent
        node_dir.mkdir(parents=True, exist_ok=True)
        (node_dir / "log4j.properties").write_text(LOG4J)
        path = node_dir / "server.properties"
        path.write_text(self.properties(node))
        return path

    def format(self) -> None:
        if not kafka_available():
            raise BrokerError("Apache Kafka test broker needs `java` and the jars: run `make kafka-libs`")
        for node in self.nodes:
            config = self._write_config(node)
            scram = []
            for mechanism, name, password in self.scram_users:
                scram += ["--add-scram", f"{mechanism}=[name={name},password={password}]"]
            result = subprocess.run(
                _java("kafka.tools.StorageTool", "format", "-t", self.cluster_id, "-c", str(config), *scram,
                      heap="256m", log4j=node.data_dir.parent / "log4j.properties"),
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                raise BrokerError(f"kafka-storage format failed for node {node.node_id}:\n{result.stdout}{result.stderr}")
        self.formatted = True

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout_s: float = 90.0) -> "KafkaCluster":
        if not self.formatted:
            self.format()
        started = time.monotonic()
        for node in self.nodes:
            self._spawn(node)
        for node in self.nodes:
            self.wait_ready(node.node_id, timeout_s - (time.monotonic() - started))
        self.start_seconds.append(time.monotonic() - started)
        return self

    def _spawn(self, node: KafkaNode) -> None:
        if node.pid is not None:
            return
        config = self._write_config(node)
        node.log_file = open(node.log_path, "ab")
        node.log_file.write(f"\n===== start {time.strftime('%H:%M:%S')} =====\n".encode())
        node.log_file.flush()
        node.process = subprocess.Popen(
            _java("kafka.Kafka", str(config), heap=self.heap, log4j=node.data_dir.parent / "log4j.properties"),
            stdout=node.log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    def wait_ready(self, node_id: int, timeout_s: float = 60.0) -> float:
        """Wait until node ``node_id`` answers Metadata on its PLAINTEXT listener; return the wait."""
        node = self.node(node_id)
        started = time.monotonic()
        deadline = started + max(timeout_s, 1.0)
        while time.monotonic() < deadline:
            if node.process is None or node.process.poll() is not None:
                raise BrokerError(f"Kafka node {node_id} exited during start-up; log tail:\n{self.log_tail(node_id)}")
            try:
                with socket.create_connection(("127.0.0.1", node.port), timeout=0.2):
                    pass
            except OSError:
                time.sleep(0.1)
                continue
            if self._registered(node):
                return time.monotonic() - started
            time.sleep(0.2)
        raise BrokerError(f"Kafka node {node_id} not ready within {timeout_s:.0f}s; log tail:\n{self.log_tail(node_id)}")

    def _registered(self, node: KafkaNode) -> bool:
        """The node answers Metadata and lists itself among the live brokers (it is unfenced)."""
        if not kafka_answers(node.bootstrap, timeout_s=2.0):
            return False
        from kafka import KafkaAdminClient

        try:
            admin = KafkaAdminClient(bootstrap_servers=node.bootstrap, request_timeout_ms=2000)
        except Exception:
            return False
        try:
            return node.node_id in {b["broker_id"] for b in admin.describe_cluster()["brokers"]}
        except Exception:
            return False
        finally:
            admin.close()

    def stop_node(self, node_id: int, timeout_s: float = 30.0) -> int | None:
        """SIGTERM: Kafka's controlled shutdown (leaders move away first); SIGKILL after timeout_s."""
        node = self.node(node_id)
        proc, node.process = node.process, None
        code = None
        if proc is not None:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)  # a frozen JVM cannot shut down
            code = terminate(proc, timeout_s)
        if node.log_file is not None:
            node.log_file.close()
            node.log_file = None
        return code

    def kill(self, node_id: int) -> None:
        """SIGKILL the node's JVM: no controlled shutdown, no flush."""
        node = self.node(node_id)
        if node.process is not None and node.process.poll() is None:
            node.process.kill()
            node.process.wait()
        node.process = None

    def restart(self, node_id: int, timeout_s: float = 60.0) -> float:
        """Start a stopped or killed node again on its logs; return seconds until it is ready."""
        node = self.node(node_id)
        started = time.monotonic()
        self._spawn(node)
        self.wait_ready(node_id, timeout_s)
        return time.monotonic() - started

    def freeze(self, node_id: int) -> None:
        """SIGSTOP the JVM: the node is cut off (no heartbeats, no replies) until thaw()."""
        os.kill(self.node(node_id).process.pid, signal.SIGSTOP)

    def thaw(self, node_id: int) -> None:
        os.kill(self.node(node_id).process.pid, signal.SIGCONT)

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM every node at once (one by one, the last ones wait for a lost quorum), SIGKILL stragglers."""
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                os.kill(node.process.pid, signal.SIGCONT)
                node.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for node in self.nodes:
            self.stop_node(node.node_id, max(0.1, deadline - time.monotonic()))

    def is_running(self) -> bool:
        return all(node.pid is not None for node in self.nodes)

    def log_tail(self, node_id: int = 1, max_bytes: int = 4000) -> str:
        try:
            data = self.node(node_id).log_path.read_bytes()
        except OSError:
            return ""
        return data[-max_bytes:].decode("utf-8", "replace")

    # ------------------------------------------------------------------ metadata helpers
    def leader_of(self, topic: str, partition: int) -> int:
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=self._live_bootstrap(), request_timeout_ms=5000)
        try:
            for description in admin.describe_topics([topic]):
                for p in description["partitions"]:
                    if p["partition_index"] == partition:
                        return p["leader_id"]
        finally:
            admin.close()
        raise KeyError((topic, partition))

    def _live_bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes if node.pid is not None)

    def __enter__(self) -> "KafkaCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:  # pragma: no cover - a developer tool
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description="Run an Apache Kafka 3.9 broker (or 3-node cluster) on 127.0.0.1")
    parser.add_argument("--nodes", type=int, default=1, choices=(1, 3))
    parser.add_argument("--dir", type=Path, default=None, help="data dir (kept); a temporary one when unset")
    args = parser.parse_args()
    # Ctrl-C, or SIGTERM / SIGINT from a script (a background job ignores SIGINT unless told): stop cleanly.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    fetch_libs()
    base = args.dir or Path(tempfile.mkdtemp(prefix="streamproc-kafka-"))
    cluster = KafkaCluster(base, nodes=args.nodes)
    started = time.monotonic()
    cluster.start()
    print(f"Apache Kafka {KAFKA_VERSION} ready in {time.monotonic() - started:.1f}s: {cluster.url}  (data: {base})", flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
