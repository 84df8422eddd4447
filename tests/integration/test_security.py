"""Security and privacy: loopback-only servers, Kafka TLS/SASL pass-through, nothing sensitive in logs.

* every listening socket of a real worker (web server: /metrics, /ready, dashboard) and of the
  embedded broker is on 127.0.0.1 / ::1 by default, and every ``*_host`` setting defaults to loopback;
* the Kafka security settings reach both client stacks: kafka-python (admin, topic readers:
  ``streamproc.kafka_admin.client_security``) and Faust/aiokafka (the app's ``broker_credentials``,
  checked in a fresh process configured only through STREAMPROC_* environment variables);
* a worker at INFO level logs neither transcript text, event payloads, nor secrets.
"""

from __future__ import annotations

import base64
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
from tests.conftest import http_get, send
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
    # ...and so are the dead letters of the poison messages (payload and detail), which carried the card number.
    for letter in letters:
        kept = base64.b64decode(letter["payload_b64"]).decode("utf-8", "replace") + letter["detail"]
        assert "4111" not in kept and "jane dot doe" not in kept and letter["redacted"], letter
    sentiment = next(a for a in alerts.values() if a["kind"] == "negative_sentiment")
    assert "[CARD]" in sentiment["evidence"]["text"] and "[EMAIL]" in sentiment["evidence"]["text"], "redacted, not dropped"
    print("\nalerts from the transcript:", [(a["kind"], (a.get("evidence") or {}).get("text")) for a in alerts.values()])


# --------------------------------------------------------------------------- secure by default


@pytest.mark.parametrize(
    "host, auth, insecure, outcome",
    [
        ("127.0.0.1", {}, False, "ok"),
        ("::1", {}, False, "ok"),
        ("0.0.0.0", {}, False, "refused"),
        ("0.0.0.0", {"dashboard_token": "t"}, False, "ok"),
        ("0.0.0.0", {"dashboard_tokens_file": "supervisors.yaml"}, False, "ok"),
        ("0.0.0.0", {"dashboard_enabled": False}, False, "ok"),  # /metrics alone may stay open
        ("0.0.0.0", {}, True, "warned"),
    ],
)
def test_the_dashboard_refuses_an_open_non_loopback_bind(host, auth, insecure, outcome, caplog, tmp_path, monkeypatch):
    from streamproc.cli import check_dashboard_exposure
    from streamproc.exposure import InsecureBind
    from streamproc.supervisors import add_supervisor

    for name in list(os.environ):
        if name.startswith("STREAMPROC_"):
            monkeypatch.delenv(name)
    if "dashboard_tokens_file" in auth:
        auth = auth | {"dashboard_tokens_file": tmp_path / auth["dashboard_tokens_file"]}
        add_supervisor(auth["dashboard_tokens_file"], "Dana", ["billing"])
    settings = Settings(web_host=host, insecure=insecure, **auth)
    with caplog.at_level("WARNING", logger="streamproc.security"):
        if outcome == "refused":
            with pytest.raises(InsecureBind, match="refusing to start the dashboard on 0.0.0.0"):
                check_dashboard_exposure(settings)
        else:
            check_dashboard_exposure(settings)
    warnings = [r.getMessage() for r in caplog.records if r.name == "streamproc.security"]
    assert bool(warnings) == (outcome == "warned"), warnings


def _worker_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_")}
    # A broker nobody listens on: the refusal must come before any Kafka connection.
    clean |= {"STREAMPROC_BROKER": "kafka://127.0.0.1:9", **env}
    return subprocess.run([sys.executable, "-m", "streamproc", "worker", *args], env=clean, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_the_worker_refuses_an_open_dashboard_on_a_public_address_at_once():
    result = _worker_cli("--web-host", "0.0.0.0")
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    message = result.stderr.replace("\n", " ")
    assert "refusing to start the dashboard on 0.0.0.0" in message and "--insecure" in message


def test_insecure_lets_the_worker_past_the_check_and_says_so_loudly(tmp_path):
    # A missing rules file stops it right after the exposure check: nothing gets bound anywhere.
    result = _worker_cli("--web-host", "0.0.0.0", "--insecure", "--rules", str(tmp_path / "missing.yaml"))
    message = result.stderr.replace("\n", " ")
    assert result.returncode == 2 and "refusing" not in message, message[-2000:]
    assert "WARNING streamproc.security: INSECURE: dashboard listens on 0.0.0.0 WITHOUT authentication" in message
    assert "missing.yaml" in message, "it went on to the next check"


def test_a_broken_supervisors_file_stops_the_worker_with_its_line(tmp_path):
    bad = tmp_path / "supervisors.yaml"
    bad.write_text("version: 1\nsupervisors:\n  - name: Dana\n    token_sha256: short\n    queues: [billing]\n")
    result = _worker_cli(STREAMPROC_DASHBOARD_TOKENS_FILE=str(bad))
    assert result.returncode == 2
    assert "line 4, supervisors.0.token_sha256" in result.stderr.replace("\n", " "), result.stderr[-2000:]


@pytest.mark.broker
def test_metrics_say_nothing_secret(worker_factory, tmp_path):
    """/metrics stays open (Prometheus convention): no token, hash, name of a supervisor or setting value in it."""
    from streamproc.supervisors import add_supervisor, token_hash

    tokens_file = tmp_path / "supervisors.yaml"
    token = add_supervisor(tokens_file, "Dana Park", ["billing"])
    worker = worker_factory(dashboard_tokens_file=tokens_file, dashboard_session_secret="session-secret-xyz",
                            dashboard_token="shared-secret-abc")
    from tests.conftest import http_get

    assert http_get(worker.base_url + "/dashboard/api/state", headers={"Authorization": f"Bearer {token}"})[0] == 200
    status, body = http_get(worker.base_url + "/metrics")
    assert status == 200 and b"streamproc_" in body
    text = body.decode()
    for secret in (token, token_hash(token), "Dana Park", "session-secret-xyz", "shared-secret-abc", str(tokens_file)):
        assert secret not in text, f"/metrics shows {secret!r}"


# ----------------------------------------------------------------------------- PII: every place it can land

CARD = "4539 1488 0343 6467"  # Luhn-valid test Visa number
PHONE = "555 867 5309"
EMAIL = "jane.doe@example.com"
SPOKEN = [  # (voice, channel, sentence): tiny.en hears these digits whole on flite voices (offline check, 29 Nov 2026)
    ("kal16", 1, f"I want to speak to a manager. My card number is {CARD}."),
    ("kal16", 0, f"Please call me back on {PHONE}."),
]


def pii_leaks(text: str) -> list[str]:
    """What of CARD, PHONE or EMAIL survives in ``text``: the oracle is the secrets themselves, not
    streamproc.redact. Any 7 digits in a row of a secret number (separators ignored) is a leak."""
    digits = re.sub(r"\D", "", text)
    leaks = []
    for secret in (CARD, PHONE):
        secret_digits = re.sub(r"\D", "", secret)
        leaks += [f"{secret}[{i}:{i + 7}]" for i in range(len(secret_digits) - 6) if secret_digits[i:i + 7] in digits]
    lowered = text.lower()
    leaks += [part for part in ("jane.doe", "jane dot doe", "example.com", "example dot com") if part in lowered]
    return leaks


@pytest.mark.slow
def test_worker_with_redaction_on_leaks_no_pii(worker_factory, reader, producer):
    """A real worker with STREAMPROC_REDACT_TRANSCRIPTS=true (evidence redaction is on by default).

    PII goes in every way it can: spoken on the audio of a call (Whisper transcribes it), in a
    poison call event, a poison transcript and a malformed audio frame (dead letters). None of
    it may come out in calls.transcripts, calls.alerts, calls.deadletter, the worker's log, or the
    dashboard's event stream and state.
    """
    import threading

    import numpy as np

    from streamproc.audio import encode
    from streamproc.schemas import AudioEncoding, AudioFrameMeta
    from tests import flite

    if not flite.available():
        pytest.skip("needs flite and sox")
    rules = (ROOT / "streamproc" / "data" / "default_rules.yaml").read_text()
    worker = worker_factory(rules, redact_transcripts="true")
    worker.wait_transcription_ready()
    events, transcripts_topic, audio_topic = worker.topic("events"), worker.topic("transcripts"), worker.topic("audio")
    transcripts, alerts, dead = reader(transcripts_topic), reader(worker.topic("alerts")), reader(worker.topic("deadletter"))

    stream = bytearray()

    def read_stream() -> None:
        import urllib.request

        try:
            with urllib.request.urlopen(worker.base_url + "/dashboard/events", timeout=120) as response:
                while chunk := response.read1(65536):
                    stream.extend(chunk)
        except OSError:
            pass  # the worker stopped: the test is over

    threading.Thread(target=read_stream, daemon=True).start()

    call_id = "pii-1"
    send(producer, events, call_id, json.dumps(
        {"type": "call_started", "call_id": call_id, "ts": time.time(), "agent_id": "agent-3", "queue": "billing"}).encode())
    poison_text = f"card {CARD}, phone {PHONE}, mail {EMAIL}"
    send(producer, events, "pii-bad-event", b'{"type": "call_started", "call_id": "pii-bad-event", "note": "' + poison_text.encode() + b'"')
    send(producer, transcripts_topic, "pii-bad-segment", json.dumps(
        {"segment_id": 5, "call_id": "pii-bad-segment", "text": poison_text}).encode())
    spoken_card = flite.phone_line(SPOKEN[0][2], SPOKEN[0][0])
    producer.send(audio_topic, key=b"pii-bad-audio", value=encode(spoken_card[:8000], AudioEncoding.mulaw),
                  headers=[("sp-encoding", b"mulaw"), ("sp-rate", b"not-a-rate")])
    producer.flush()

    rate, step = 8000, 2000
    lines = [flite.phone_line(sentence, voice) for voice, _, sentence in SPOKEN]
    length = rate + sum(len(line) + rate for line in lines) + rate
    stereo = np.zeros((length, 2), dtype=np.int16)
    at = rate
    for (_, channel, _), line in zip(SPOKEN, lines):
        stereo[at:at + len(line), channel] = line
        at += len(line) + rate
    for seq, i in enumerate(range(0, length, step)):
        meta = AudioFrameMeta(encoding="mulaw", rate=rate, channels=2, layout="agent_customer", seq=seq,
                              offset_ms=seq * 250, sent_at_ms=int(time.time() * 1000))
        producer.send(audio_topic, key=call_id.encode(), value=encode(stereo[i:i + step].reshape(-1), AudioEncoding.mulaw),
                      headers=meta.to_headers())
    producer.flush()
    send(producer, events, call_id, json.dumps({"type": "call_ended", "call_id": call_id, "ts": time.time()}).encode())

    def finals(values):
        return [v for v in values if v["call_id"] == call_id and v["is_final"] and v["text"]]

    heard = transcripts.wait_for(lambda v: {s["speaker"] for s in finals(v)} >= {"agent", "customer"}, timeout_s=120)
    assert {s["speaker"] for s in finals(heard)} >= {"agent", "customer"}, f"both sentences transcribed: {heard}"
    letters = dead.wait_for(lambda v: len(v) >= 3, timeout_s=30)
    assert sorted(letter["key"] for letter in letters) == ["pii-bad-audio", "pii-bad-event", "pii-bad-segment"], letters
    raised = alerts.wait_for(lambda v: any(a["rule_id"] == "manager-request" for a in v), timeout_s=30)
    assert any(a["rule_id"] == "manager-request" for a in raised), "the customer's manager request alerts"
    # The dashboard has shown the alert (its state is what the stream sends).
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and b"manager-request" not in bytes(stream):
        time.sleep(0.2)
    status, state = http_get(worker.base_url + "/dashboard/api/state")
    assert status == 200 and b"manager-request" in bytes(stream), "the dashboard stream carried the alert"

    # Redacted, not dropped: the spoken phone number became a token in the transcript.
    assert any("[PHONE]" in s["text"] for s in finals(heard)), [s["text"] for s in finals(heard)]
    by_key = {letter["key"]: letter for letter in letters}
    assert by_key["pii-bad-audio"]["redacted"] and by_key["pii-bad-audio"]["payload_b64"] == "", "audio is not kept"
    places = {
        # What the worker published (partials too); the poison segment on that topic is the test's own input.
        "calls.transcripts": json.dumps([v for v in transcripts.values() if v.get("call_id") == call_id]),
        "calls.alerts": json.dumps(alerts.values()),
        "calls.deadletter": json.dumps(letters) + " ".join(
            base64.b64decode(letter["payload_b64"]).decode("utf-8", "replace") for letter in letters),
        "worker log": worker.log_path.read_text(errors="replace"),
        "dashboard stream": bytes(stream).decode("utf-8", "replace"),
        "dashboard state": state.decode("utf-8", "replace"),
    }
    leaks = {place: pii_leaks(text) for place, text in places.items() if pii_leaks(text)}
    print("\nfinal transcripts:", [(s["speaker"], s["text"]) for s in finals(heard)])
    assert not leaks, f"PII leaked: {leaks}"
