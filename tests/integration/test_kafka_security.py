"""TLS and SASL_SSL (SCRAM-SHA-256) against Apache Kafka's own listeners, with a CA made here.

The test makes a CA and a broker certificate (SAN IP:127.0.0.1, DNS:localhost) with the
``openssl`` CLI, gives the broker PEM keystores (``ssl.keystore.type=PEM``: no keytool), creates
the SCRAM user at format time (``kafka-storage format --add-scram``), and runs the worker, the
replay CLI, the Twilio bridge and the dashboard reader over SSL and over SASL_SSL: alerts flow.
A third listener
serves a certificate for another host name. A wrong CA, a wrong password and a wrong host name
each fail fast, with a message that says which.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamproc.broker import free_port
from streamproc.config import Settings
from streamproc.kafka_admin import client_security
from tests.conftest import WorkerProcess, http_get, write_rules

pytestmark = [pytest.mark.broker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
USER, PASSWORD = "alice", "alice-secret-1"
RULES = """
version: 1
hold:
  defaults:
    thresholds:
      - {id: hold-warning, after_s: 2, severity: warning}
"""


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(folder: Path, name: str) -> Path:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
             "-days", "2", "-subj", f"/CN=streamproc {name}", cwd=folder)
    return folder / f"{name}.pem"


def make_server_cert(folder: Path, ca: str, name: str, san: str) -> Path:
    """A PEM keystore for Kafka: unencrypted PKCS#8 key + certificate signed by ``ca``."""
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", f"/CN={name}", cwd=folder)
    (folder / f"{name}.ext").write_text(
        f"subjectAltName={san}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
    )
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=folder)
    keystore = folder / f"{name}-keystore.pem"
    keystore.write_text((folder / f"{name}.key").read_text() + (folder / f"{name}.crt").read_text())
    return keystore


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory):
    from tests.kafka_broker import KafkaCluster, Listener, kafka_available

    if not kafka_available():
        pytest.skip("Apache Kafka test broker unavailable: needs java and `make kafka-libs`")
    pki = tmp_path_factory.mktemp("pki")
    ca = make_ca(pki, "ca")
    make_ca(pki, "other-ca")
    keystore = make_server_cert(pki, "ca", "broker", "IP:127.0.0.1,DNS:localhost")
    wrong_host = make_server_cert(pki, "ca", "wronghost", "DNS:kafka.invalid")
    properties = {
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(keystore),
        "ssl.client.auth": "none",
        "sasl.enabled.mechanisms": "SCRAM-SHA-256",
        "listener.name.sasl.scram-sha-256.sasl.jaas.config":
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        "listener.name.badhost.ssl.keystore.type": "PEM",
        "listener.name.badhost.ssl.keystore.location": str(wrong_host),
    }
    cluster = KafkaCluster(
        tmp_path_factory.mktemp("kafka-secure"),
        nodes=1,
        listeners=[Listener("SSL", "SSL"), Listener("SASL", "SASL_SSL"), Listener("BADHOST", "SSL")],
        extra_properties=properties,
        scram_users=[("SCRAM-SHA-256", USER, PASSWORD)],
    )
    with cluster:
        cluster.pki = pki
        cluster.ca = ca
        yield cluster


def _env(cluster, protocol: str, *, cafile: Path | None = None, password: str = PASSWORD, listener: str | None = None) -> dict[str, str]:
    listener = listener or ("SASL" if protocol == "SASL_SSL" else "SSL")
    env = {
        "STREAMPROC_BROKER": cluster.listener_url(listener),
        "STREAMPROC_SECURITY_PROTOCOL": protocol,
        "STREAMPROC_SSL_CAFILE": str(cafile or cluster.ca),
    }
    if protocol.startswith("SASL"):
        env |= {"STREAMPROC_SASL_MECHANISM": "SCRAM-SHA-256", "STREAMPROC_SASL_USERNAME": USER,
                "STREAMPROC_SASL_PASSWORD": password}
    return env


def _settings(env: dict[str, str]) -> Settings:
    return Settings(**{k.removeprefix("STREAMPROC_").lower(): v for k, v in env.items() if k.startswith("STREAMPROC_")})


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
def test_worker_replay_bridge_and_dashboard_reader_over_tls(secure_kafka, protocol, tmp_path):
    from kafka import KafkaConsumer, TopicPartition

    security = _env(secure_kafka, protocol)
    prefix = f"sec{protocol.lower().replace('_', '')}."
    env = dict(os.environ) | security | {
        "STREAMPROC_APP_ID": f"secure-{protocol.lower()}",
        "STREAMPROC_TOPIC_PREFIX": prefix,
        "STREAMPROC_RULES_FILE": str(write_rules(tmp_path / "rules.yaml", RULES)),
        "STREAMPROC_WEB_PORT": str(free_port()),
        "STREAMPROC_DATA_DIR": str(tmp_path / "data"),
        "STREAMPROC_AUDIO_ENABLED": "false",
    }
    settings = _settings(env)
    worker = WorkerProcess(settings=settings, env=env, log_path=tmp_path / "worker.log")
    try:
        worker.start(timeout_s=90)
        # The replay CLI produces the call over the same listener (events only).
        events = tmp_path / "call.events.jsonl"
        events.write_text("\n".join(json.dumps(e) for e in (
            {"type": "call_started", "offset_s": 0, "agent_id": "a1", "queue": "q"},
            {"type": "hold_started", "offset_s": 0.1},
        )) + "\n")
        replay = subprocess.run(
            [sys.executable, "-m", "streamproc", "replay", "--events", str(events), "--no-audio", "--fast",
             "--call-id", "tls-call"],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
        )
        assert replay.returncode == 0, replay.stderr[-2000:]
        consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False,
                                 **client_security(settings))
        try:
            partitions = [TopicPartition(settings.topic("alerts"), p) for p in range(settings.partitions)]
            consumer.assign(partitions)
            consumer.seek_to_beginning()
            alerts: list[dict] = []
            deadline = time.monotonic() + 20
            while not alerts and time.monotonic() < deadline:
                for batch in consumer.poll(200).values():
                    alerts += [json.loads(r.value) for r in batch]
        finally:
            consumer.close()
        assert [(a["call_id"], a["rule_id"]) for a in alerts] == [("tls-call", "hold-warning")]
        # The dashboard's own reader (aiokafka, with the worker's credentials) sees call and alert.
        deadline = time.monotonic() + 10
        state: dict = {}
        while time.monotonic() < deadline:
            state = json.loads(http_get(f"{worker.base_url}/dashboard/api/state")[1])
            if state["alerts"] and any(c["call_id"] == "tls-call" for c in state["calls"]):
                break
            time.sleep(0.3)
        assert any(c["call_id"] == "tls-call" for c in state["calls"]) and state["alerts"], state
        # The Twilio Media Streams bridge (`streamproc bridge`) produces a call over the same listener.
        from tests.integration.test_bridge import stream_call

        bridge_port = free_port()
        bridge = subprocess.Popen([sys.executable, "-m", "streamproc", "bridge", "--port", str(bridge_port)], env=env,
                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and bridge.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", bridge_port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.2)
            assert bridge.poll() is None, bridge.communicate()[0][-2000:]
            silence = b"\xff" * 8000  # 1 s of μ-law silence per track
            code, reason = asyncio.run(stream_call(f"ws://127.0.0.1:{bridge_port}/media", "tls-bridged",
                                                   {"inbound": silence, "outbound": silence}))
            assert (code, reason) == (1000, "completed")
        finally:
            bridge.terminate()
            bridge.wait(20)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            state = json.loads(http_get(f"{worker.base_url}/dashboard/api/state")[1])
            if any(c["call_id"] == "tls-bridged" for c in state["calls"]):
                break
            time.sleep(0.3)
        assert any(c["call_id"] == "tls-bridged" for c in state["calls"]), state["calls"]
        assert worker.process.poll() is None
    finally:
        worker.stop(timeout_s=15)


#: Every command that talks to Kafka: the worker and the CLI clients.
COMMANDS = {
    "topics create": ["topics", "create"],
    "replay": ["replay", "--events", "{events}", "--no-audio", "--fast", "--call-id", "bad-tls"],
    "bridge": ["bridge", "--port", "0"],
    "worker": ["worker"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize(
    "case, protocol, change, message",
    [
        ("wrong CA", "SSL", {"cafile": "other-ca"}, "not signed by the CA in STREAMPROC_SSL_CAFILE"),
        ("wrong password", "SASL_SSL", {"password": "not-the-password"}, "SASL authentication failed"),
        ("wrong host name", "SSL", {"listener": "BADHOST"}, "does not match the host name"),
    ],
)
def test_misconfigured_security_fails_fast_with_a_clear_message(secure_kafka, command, case, protocol, change, message, tmp_path):
    """Fails at once (no client retrying until its bootstrap timeout), exit 2, a few lines at most
    (no retry storm in the log), naming the broker and the setting to fix."""
    options = dict(change)
    if "cafile" in options:
        options["cafile"] = secure_kafka.pki / f"{options['cafile']}.pem"
    security = _env(secure_kafka, protocol, **options)
    env = dict(os.environ) | security | {
        "STREAMPROC_TOPIC_PREFIX": "secbad.", "STREAMPROC_WEB_PORT": str(free_port()),
        "STREAMPROC_DATA_DIR": str(tmp_path / "data"), "STREAMPROC_AUDIO_ENABLED": "false"}
    events = tmp_path / "call.events.jsonl"
    events.write_text(json.dumps({"type": "call_started", "offset_s": 0, "agent_id": "a1", "queue": "q"}) + "\n")
    args = [a.replace("{events}", str(events)) for a in COMMANDS[command]]
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "streamproc", *args], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    took = time.monotonic() - started
    output = result.stdout + result.stderr
    lines = [line for line in output.splitlines() if line.strip()]
    flat = output.replace("\n", " ")
    print(f"\n{command} / {case}: exit {result.returncode} after {took:.1f}s, {len(lines)} lines: {lines[-1] if lines else ''}")
    assert result.returncode == 2, output[-3000:]
    assert message in flat, output[-3000:]
    broker = security["STREAMPROC_BROKER"].removeprefix("kafka://")
    assert f"the broker at {broker}" in flat, output[-3000:]
    assert took < 20, f"took {took:.1f}s to fail"
    assert len(lines) <= 6, f"{len(lines)} lines of output (a retry storm?):\n" + "\n".join(lines[:40])
    assert "Traceback" not in output


def test_worker_with_a_wrong_ca_exits_at_once_with_the_reason(secure_kafka, tmp_path):
    env = dict(os.environ) | _env(secure_kafka, "SSL", cafile=secure_kafka.pki / "other-ca.pem") | {
        "STREAMPROC_WEB_PORT": str(free_port()), "STREAMPROC_DATA_DIR": str(tmp_path / "data")}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "streamproc", "worker"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and time.monotonic() - started < 20
    assert "not signed by the CA in STREAMPROC_SSL_CAFILE" in result.stderr.replace("\n", " "), result.stderr[-2000:]


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
def test_alerts_tail_reads_over_tls(secure_kafka, protocol):
    """`streamproc alerts tail` takes the same STREAMPROC_* security settings as the worker."""
    from kafka import KafkaAdminClient, KafkaProducer
    from kafka.admin import NewTopic

    from tests.integration.test_alerts_tail import TailProcess, alert

    security = _env(secure_kafka, protocol)
    settings = _settings(security)
    prefix = f"tail{protocol.lower().replace('_', '')}."
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, **client_security(settings))
    admin.create_topics([NewTopic(f"{prefix}calls.alerts", 1, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, **client_security(settings))
    for call_id in ("tls-1", "tls-1", "tls-2"):  # the second is a redelivery: shown once
        producer.send(f"{prefix}calls.alerts", key=call_id.encode(), value=alert(call_id, "hold-warning", "warning", "q"))
    producer.flush()
    producer.close()
    tail = TailProcess(security["STREAMPROC_BROKER"], prefix, "--from-beginning", "--json", env=security)
    try:
        assert [r["call_id"] for r in tail.read_until(lambda r: len(r) >= 2, timeout_s=60)] == ["tls-1", "tls-2"]
        assert tail.interrupt() == 0
        assert "2 shown, 1 duplicates dropped" in "".join(tail.stderr)
    finally:
        tail.kill()
