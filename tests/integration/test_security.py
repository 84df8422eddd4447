"""Security and privacy: loopback-only servers, Kafka TLS/SASL pass-through, nothing sensitive in logs.

* every listening socket of a real worker (web server: /metrics, /ready, dashboard) and of the
  embedded broker is on 127.0.0.1 / ::1 by default, and every ``*_host`` setting defaults to loopback;
* the Kafka security settings reach both client stacks: kafka-python (admin, topic readers:
  ``streamproc.kafka_admin.client_security``) and Faust/aiokafka (the app's ``broker_credentials``,
  checked in a fresh process configured only through STREAMPROC_* environment variables);
* a worker at INFO level logs neither transcript text, event payloads, nor secrets.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamproc.config import Settings
from streamproc.kafka_admin import client_security
from tests.conftest import send
from tests.integration.reliability_support import listening_addresses

ROOT = Path(__file__).resolve().parents[2]
CA_FILE = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def test_every_host_setting_defaults_to_loopback(monkeypatch):
    for name in list(os.environ):
        if name.startswith("STREAMPROC_"):
            monkeypatch.delenv(name)
    settings = Settings()
    hosts = {name: getattr(settings, name) for name in Settings.model_fields if name.endswith(("_host", "_bind"))}
    assert hosts, "no bind-address settings found"
    assert all(_loopback(value) for value in hosts.values()), hosts


@pytest.mark.broker
def test_running_worker_and_broker_listen_on_loopback_only(worker_factory, broker):
    worker = worker_factory()  # defaults: dashboard enabled, web server on
    worker_sockets = listening_addresses(worker.process.pid)
    assert (worker.settings.web_host, worker.settings.web_port) in worker_sockets or any(
        port == worker.settings.web_port for _, port in worker_sockets
    ), f"the web server is not among {worker_sockets}"
    broker_sockets = listening_addresses(broker.process.pid)
    assert broker_sockets, "the broker listens somewhere"
    exposed = [(ip, port) for ip, port in worker_sockets | broker_sockets if not _loopback(ip)]
    assert exposed == [], f"servers listening beyond loopback: {exposed}"


@pytest.mark.broker
def test_media_bridge_listens_on_loopback_by_default(broker, tmp_path):
    """`streamproc bridge` (Twilio Media Streams WebSocket server), started with defaults only."""
    if not (ROOT / "streamproc" / "bridge.py").exists():
        pytest.skip("no media bridge in this tree")
    from streamproc.bridge import BridgeConfig
    from streamproc.broker import free_port

    assert _loopback(BridgeConfig().host)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_")} | {
        "STREAMPROC_BROKER": broker.url, "STREAMPROC_TOPIC_PREFIX": "sec-bridge."}
    log = open(tmp_path / "bridge.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "streamproc", "bridge", "--port", str(port)], env=env, cwd=ROOT,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 60
        sockets: set = set()
        while time.time() < deadline and not any(p == port for _, p in sockets):
            assert process.poll() is None, (tmp_path / "bridge.log").read_text()[-3000:]
            time.sleep(0.3)
            sockets = listening_addresses(process.pid)
        assert any(p == port for _, p in sockets), f"bridge not listening on {port}: {sockets}"
        assert all(_loopback(ip) for ip, _ in sockets), sockets
    finally:
        process.terminate()
        process.wait(20)
        log.close()


@pytest.mark.parametrize(
    "protocol, mechanism, expected_python",
    [
        ("PLAINTEXT", None, {}),
        ("SSL", None, {"security_protocol": "SSL", "ssl_cafile": CA_FILE}),
        ("SASL_PLAINTEXT", "PLAIN", {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
                                     "sasl_plain_username": "svc-streamproc", "sasl_plain_password": "pw-123"}),
        ("SASL_SSL", "SCRAM-SHA-512", {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                                       "sasl_plain_username": "svc-streamproc", "sasl_plain_password": "pw-123",
                                       "ssl_cafile": CA_FILE}),
    ],
)
def test_kafka_security_settings_reach_kafka_python_and_faust(protocol, mechanism, expected_python):
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

    env = {"STREAMPROC_SECURITY_PROTOCOL": protocol}
    if protocol.endswith("SSL"):
        env["STREAMPROC_SSL_CAFILE"] = CA_FILE
    if mechanism:
        env |= {"STREAMPROC_SASL_MECHANISM": mechanism, "STREAMPROC_SASL_USERNAME": "svc-streamproc",
                "STREAMPROC_SASL_PASSWORD": "pw-123"}
    settings = Settings(**{k.removeprefix("STREAMPROC_").lower(): v for k, v in env.items()})

    # kafka-python: admin client, topic readers, offset probes.
    options = client_security(settings)
    assert options == expected_python
    for client in (KafkaConsumer, KafkaProducer, KafkaAdminClient):
        unknown = set(options) - set(client.DEFAULT_CONFIG)
        assert not unknown, f"{client.__name__} does not know {unknown}"

    # Faust/aiokafka: the app as a worker builds it, from the environment only, in a fresh process.
    probe = (
        "import json; from agents.app import app; "
        "from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth; "
        "auth = dict(credentials_to_aiokafka_auth(app.conf.broker_credentials)); "
        "ctx = auth.pop('ssl_context', None); "
        "auth['ssl_context'] = None if ctx is None else {'verify': ctx.verify_mode == __import__('ssl').CERT_REQUIRED, "
        "'check_hostname': ctx.check_hostname, 'ca_certs': len(ctx.get_ca_certs()) > 0}; "
        "print('AUTH=' + json.dumps(auth))"
    )
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_")} | env
    child_env |= {"STREAMPROC_BROKER": "kafka://127.0.0.1:1", "STREAMPROC_DATA_DIR": "/tmp/streamproc-security-probe"}
    result = subprocess.run([sys.executable, "-c", probe], env=child_env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    line = next((l for l in result.stdout.splitlines() if l.startswith("AUTH=")), None)
    assert line, result.stderr[-3000:]
    auth = json.loads(line[5:])
    assert auth["security_protocol"] == protocol
    if mechanism:
        assert auth["sasl_mechanism"] == mechanism
        assert auth["sasl_plain_username"] == "svc-streamproc" and auth["sasl_plain_password"] == "pw-123"
    if protocol in ("SSL", "SASL_SSL"):
        assert auth["ssl_context"] == {"verify": True, "check_hostname": True, "ca_certs": True}
    else:
        assert auth["ssl_context"] is None


@pytest.mark.broker
def test_worker_logs_at_info_hold_no_transcript_text_payloads_or_secrets(worker_factory, reader, producer):
    secrets = {"sasl_password": "hunter2-sasl-Zq9", "dashboard_token": "tok-Vx81-dashboard"}
    rules = (ROOT / "streamproc" / "data" / "default_rules.yaml").read_text()  # hold and transcript detection
    worker = worker_factory(rules, sasl_password=secrets["sasl_password"], dashboard_token=secrets["dashboard_token"])
    events, transcripts = worker.topic("events"), worker.topic("transcripts")
    alerts, dead = reader(worker.topic("alerts")), reader(worker.topic("deadletter"))
    now = time.time()
    phrase = "I want to speak to your manager now, my card is 4111 1111 1111 1111 and mail jane dot doe at example dot com"
    send(producer, events, "sec-1", json.dumps(
        {"type": "call_started", "call_id": "sec-1", "ts": now - 5, "agent_id": "a", "queue": "q", "customer_id": "cust-PRIV-77"}
    ).encode())
    send(producer, events, "sec-1", json.dumps({"type": "hold_started", "call_id": "sec-1", "ts": now, "reason": "reason-PRIV-55"}).encode())
    # Poison carrying private text: dead-lettered, and the log line must not echo the payload.
    send(producer, events, "sec-2", b'{"type": "call_started", "call_id": "sec-2", "note": "PAYLOAD-PRIV-31 ' + phrase.encode() + b'"')
    segment = {"segment_id": "sec-1/customer/0/f", "call_id": "sec-1", "speaker": "customer", "utterance": 0,
               "is_final": True, "text": phrase, "start_s": 1.0, "end_s": 4.0, "source": "script"}
    send(producer, transcripts, "sec-1", json.dumps(segment).encode())
    # Three angry utterances (negative-sentiment window): the evidence is a whole utterance, PII included.
    angry = "this is terrible and awful, I hate this horrible useless service, my card 4111 1111 1111 1111 was charged twice, " \
            "write to jane dot doe at example dot com"
    for utterance in (1, 2, 3):
        send(producer, transcripts, "sec-1", json.dumps(segment | {
            "segment_id": f"sec-1/customer/{utterance}/f", "utterance": utterance, "text": angry,
            "start_s": 1.0 + 4 * utterance, "end_s": 4.0 + 4 * utterance}).encode())
    send(producer, transcripts, "sec-3", b'{"segment_id": 5, "text": "TRANSCRIPT-PRIV-19 ' + phrase.encode() + b'"}')

    letters = dead.wait_for(lambda v: len(v) >= 2, timeout_s=20)
    assert sorted(letter["key"] for letter in letters) == ["sec-2", "sec-3"], f"the poison messages were processed: {letters}"
    values = alerts.wait_for(lambda v: {"escalation", "negative_sentiment"} <= {a["kind"] for a in v}, timeout_s=20)
    assert {"escalation", "negative_sentiment"} <= {a["kind"] for a in values}, f"alerts from the transcripts: {values}"
    # Wait until the log holds a line for every alert and dead letter seen (the lines that could leak).
    alerts.poll(300)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        log = worker.log_path.read_text(errors="replace")
        if log.count("dead letter from") >= len(letters) and len(re.findall(r"\balert (?:info|warning|critical) ", log)) >= len(alerts.values()):
            break
        time.sleep(0.1)
    log = worker.log_path.read_text(errors="replace")
    assert "[INFO]" in log and " alert " in log, "the worker logged at INFO level"
    for private in [*secrets.values(), "4111", "jane dot doe", "speak to your manager", "horrible useless", "PAYLOAD-PRIV-31",
                    "TRANSCRIPT-PRIV-19", "reason-PRIV-55", "cust-PRIV-77"]:
        assert private not in log, f"{private!r} appears in the worker log"
    # Alert evidence is redacted by default (STREAMPROC_REDACT_ALERT_EVIDENCE=true).
    for alert in alerts.values():
        text = (alert.get("evidence") or {}).get("text") or ""
        assert "4111" not in text and "jane" not in text.lower(), alert
    sentiment = next(a for a in alerts.values() if a["kind"] == "negative_sentiment")
    assert "[CARD]" in sentiment["evidence"]["text"] and "[EMAIL]" in sentiment["evidence"]["text"], "redacted, not dropped"
    print("\nalerts from the transcript:", [(a["kind"], (a.get("evidence") or {}).get("text")) for a in alerts.values()])
