"""The Twilio Media Streams bridge with a real `websockets` client, on the real broker (and a real worker)."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import textwrap
import threading
import time
import uuid

import pytest
from kafka import KafkaProducer
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from streamproc.bridge import Bridge, BridgeConfig, kafka_sink
from streamproc.config import Settings
from streamproc.kafka_admin import ensure_topics
from streamproc.replay import read_wav
from streamproc.scenario import parse_scenario
from streamproc.schemas import AudioEncoding, AudioFrameMeta, Speaker
from streamproc.synth import synthesize
from tests.conftest import TopicReader

pytestmark = pytest.mark.broker

CALL = textwrap.dedent(
    """
    version: 1
    name: bridged call
    participants: {agent: {id: agent-b}, customer: {id: cust-b}, queue: support}
    timeline:
      - say: agent
        text: {en: "Hello, how can I help?", ko: "안녕하세요 무엇을 도와드릴까요"}
      - say: customer
        text: {en: "I was charged twice.", ko: "이번 달에 요금이 두 번 나왔어요"}
      - end: true
    """
)
MEDIA_MS = 20  # Twilio sends 20 ms of μ-law (160 bytes) per media message


@pytest.fixture(scope="module")
def tracks(tmp_path_factory):
    """The synthesized call as two μ-law 8 kHz mono tracks: outbound = agent, inbound = customer."""
    folder = tmp_path_factory.mktemp("bridge")
    files = synthesize(parse_scenario(CALL), folder / "call.wav", "ko", rate=16000)
    result = {}
    for name, channel in (("outbound", 1), ("inbound", 2)):
        out = folder / f"{name}.wav"
        subprocess.run(["sox", str(files.wav), "-r", "8000", "-e", "u-law", "-b", "8", str(out), "remix", str(channel)], check=True)
        audio = read_wav(out)
        assert audio.encoding is AudioEncoding.mulaw and audio.rate == 8000
        result[name] = audio.data
    return result


class RunningBridge:
    def __init__(self, broker, sink=None, **config):
        self.settings = Settings(broker=broker.url, topic_prefix=f"b{uuid.uuid4().hex[:8]}.")
        ensure_topics(self.settings)
        self.producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=2)
        self.bridge = Bridge(BridgeConfig(port=0, **config), sink or kafka_sink(self.producer, self.settings))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.bridge.start(), self.loop).result(10)
        self.url = f"ws://127.0.0.1:{self.bridge.config.port}/media"

    def stop(self):
        asyncio.run_coroutine_threadsafe(self.bridge.shutdown(), self.loop).result(20)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.producer.close(5)


@pytest.fixture
def bridge_factory(broker):
    running = []

    def make(**config) -> RunningBridge:
        item = RunningBridge(broker, **config)
        running.append(item)
        return item

    yield make
    for item in running:
        item.stop()


def start_message(call_id: str, seq: int = 1, **params) -> str:
    return json.dumps({
        "event": "start", "sequenceNumber": str(seq), "streamSid": "MZ" + call_id,
        "start": {"accountSid": "AC1", "callSid": "CA" + call_id, "streamSid": "MZ" + call_id,
                  "tracks": ["inbound", "outbound"],
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                  "customParameters": {"call_id": call_id, "agent_id": "agent-b", "queue": "support", **params}},
    })


def media_message(seq: int, track: str, chunk: int, payload: bytes) -> str:
    return json.dumps({"event": "media", "sequenceNumber": str(seq), "streamSid": "MZ",
                       "media": {"track": track, "chunk": str(chunk), "timestamp": str(chunk * MEDIA_MS),
                                 "payload": base64.b64encode(payload).decode()}})


async def stream_call(url, call_id, tracks, *, pace: float = 0.0, headers=None, stop=True, **params):
    """Send a whole call like Twilio does; pace = seconds to sleep per 20 ms message pair (0: as fast as possible)."""
    async with connect(url, additional_headers=headers) as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(start_message(call_id, **params))
        seq, size = 2, 8 * MEDIA_MS
        length = max(len(t) for t in tracks.values())
        for chunk, position in enumerate(range(0, length, size), 1):
            for track in ("inbound", "outbound"):
                piece = tracks[track][position:position + size]
                if piece:
                    await ws.send(media_message(seq, track, chunk, piece))
                    seq += 1
            if pace:
                await asyncio.sleep(pace)
        await ws.send(json.dumps({"event": "mark", "sequenceNumber": str(seq), "streamSid": "MZ", "mark": {"name": "end"}}))
        seq += 1
        if stop:
            await ws.send(json.dumps({"event": "stop", "sequenceNumber": str(seq), "streamSid": "MZ", "stop": {"callSid": "CA" + call_id}}))
        try:
            await asyncio.wait_for(ws.recv(), 10)
        except ConnectionClosed:
            pass
        return ws.close_code, ws.close_reason


def read_until(broker, topic, predicate, timeout_s=20.0):
    reader = TopicReader(broker.bootstrap, topic)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not predicate(reader.records):
        reader.poll(200)
    reader.close()
    return reader.records


def events_of(broker, running, call_id, until_type="call_ended", timeout_s=20.0):
    records = read_until(broker, running.settings.topic("events"),
                         lambda rs: any(json.loads(r.value)["type"] == until_type and r.key == call_id.encode() for r in rs), timeout_s)
    return [json.loads(r.value) for r in records if r.key == call_id.encode()]


def test_a_streamed_call_becomes_call_events_and_audio_frames_keyed_by_call_id(broker, bridge_factory, tracks):
    running = bridge_factory(flood_factor=1000, max_messages_per_s=100_000)
    code, reason = asyncio.run(stream_call(running.url, "br-1", tracks, customer_id="cust-9"))
    assert (code, reason) == (1000, "completed")
    events = events_of(broker, running, "br-1")
    assert [e["type"] for e in events] == ["call_started", "call_ended"]
    assert events[0]["agent_id"] == "agent-b" and events[0]["queue"] == "support" and events[0]["customer_id"] == "cust-9"
    assert events[1]["reason"] == "completed"

    expected_frames = sum(-(-len(t) // 2000) for t in tracks.values())  # 250 ms = 2000 μ-law bytes per frame
    audio = read_until(broker, running.settings.topic("audio"), lambda rs: len(rs) >= expected_frames)
    assert len(audio) == expected_frames
    assert {r.key for r in audio} == {b"br-1"}
    by_stream: dict[str, list] = {}
    for record in sorted(audio, key=lambda r: r.offset):
        meta = AudioFrameMeta.from_headers(record.headers)
        by_stream.setdefault(meta.stream, []).append((meta, record.value))
    assert set(by_stream) == {"inbound", "outbound"}
    for stream, speaker in (("inbound", Speaker.customer), ("outbound", Speaker.agent)):
        frames = by_stream[stream]
        assert [m.seq for m, _ in frames] == list(range(len(frames)))
        assert all(m.encoding is AudioEncoding.mulaw and m.rate == 8000 and m.channels == 1 and m.speaker is speaker for m, _ in frames)
        assert [m.offset_ms for m, _ in frames] == [250 * i for i in range(len(frames))]
        payload = b"".join(value for _, value in frames)
        assert payload[: len(tracks[stream])] == tracks[stream]  # byte-exact; the last frame may be padded
    audio_partitions = {r.partition for r in audio}
    assert len(audio_partitions) == 1


def test_with_a_worker_the_bridged_call_comes_out_as_transcripts(broker, bridge_factory, worker_factory, tracks):
    worker = worker_factory(asr_model="lang:ko")
    worker.wait_transcription_ready()
    running = bridge_factory()
    running.settings = worker.settings  # same topics as the worker
    running.bridge.sink = kafka_sink(running.producer, worker.settings)
    # Real-time-ish pace (2x): Twilio streams live audio.
    code, reason = asyncio.run(stream_call(running.url, "br-asr", tracks, pace=MEDIA_MS / 1000 / 2))
    assert (code, reason) == (1000, "completed")
    records = read_until(broker, worker.topic("transcripts"),
                         lambda rs: {json.loads(r.value)["speaker"] for r in rs if json.loads(r.value).get("is_final")} >= {"agent", "customer"},
                         timeout_s=60)
    finals = [json.loads(r.value) for r in records if json.loads(r.value).get("is_final")]
    assert finals, worker.log_tail()
    assert {s["call_id"] for s in finals} == {"br-asr"} and {r.key for r in records} == {b"br-asr"}
    assert {s["speaker"] for s in finals} == {"agent", "customer"}
    assert all(s["source"] == "asr" and s["text"].strip() for s in finals)
    customer = [s for s in finals if s["speaker"] == "customer"]
    # The customer speaks after the agent: their audio time says so (track time, 8 kHz).
    assert min(s["start_s"] for s in customer) > 1.0


async def _send_and_close_code(url, messages, headers=None):
    async with connect(url, additional_headers=headers) as ws:
        for message in messages:
            try:
                await ws.send(message)
            except ConnectionClosed:
                break
        try:
            await asyncio.wait_for(ws.recv(), 10)
        except ConnectionClosed:
            pass
        return ws.close_code, ws.close_reason


@pytest.mark.parametrize(
    "name, messages, code, reason",
    [
        ("not json", ["{oops"], 1003, "protocol_error"),
        ("binary", [b"\x00\x01"], 1003, "protocol_error"),
        ("no event", ['{"hello": 1}'], 1003, "protocol_error"),
        ("media before start", [media_message(1, "inbound", 1, b"\xff" * 160)], 1008, "protocol_error"),
        ("bad base64", ["START", json.dumps({"event": "media", "sequenceNumber": "2", "media": {"track": "inbound", "payload": "@@not base64@@"}})], 1003, "protocol_error"),
        ("unknown event", ["START", json.dumps({"event": "explode", "sequenceNumber": "2"})], 1003, "protocol_error"),
        ("wrong sequence", ["START", media_message(2, "inbound", 1, b"\xff" * 160), media_message(4, "inbound", 2, b"\xff" * 160)], 1008, "bad_sequence"),
        ("repeated sequence", ["START", media_message(2, "inbound", 1, b"\xff" * 160), media_message(2, "inbound", 2, b"\xff" * 160)], 1008, "bad_sequence"),
        ("unknown track", ["START", media_message(2, "sideways", 1, b"\xff" * 160)], 1003, "protocol_error"),
        ("pcm media format", [start_message("fmt").replace('"sampleRate": 8000', '"sampleRate": 16000')], 1003, "protocol_error"),
        ("garbage media format", [start_message("fmt").replace('"sampleRate": 8000', '"sampleRate": "fast"')], 1003, "protocol_error"),
        ("oversized message", ["START", media_message(2, "inbound", 1, b"\xff" * 80_000)], 1009, "message_too_big"),
    ],
)
def test_garbage_gets_a_clean_close_and_the_call_ends_with_the_reason(broker, bridge_factory, name, messages, code, reason):
    running = bridge_factory()
    call_id = f"bad-{uuid.uuid4().hex[:6]}"
    call_started = "START" in messages
    messages = [start_message(call_id) if m == "START" else m for m in messages]
    got_code, got_reason = asyncio.run(_send_and_close_code(running.url, messages))
    assert got_code == code and got_reason.startswith(reason if code != 1009 else "")
    deadline = time.monotonic() + 10  # the bridge records the reason after it has ended the call
    while not running.bridge.closed_reasons and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(running.bridge.closed_reasons) == [reason]
    if call_started:
        events = events_of(broker, running, call_id)
        assert [e["type"] for e in events] == ["call_started", "call_ended"]
        assert events[-1]["reason"] == reason


def test_a_flood_is_cut_off_and_the_call_ended(broker, bridge_factory):
    running = bridge_factory(flood_factor=3.0, flood_burst_ms=2000)
    messages = [start_message("flood-1")] + [media_message(seq, "inbound", seq, b"\xff" * 160) for seq in range(2, 2 + 500)]  # 10 s at once
    code, reason = asyncio.run(_send_and_close_code(running.url, messages))
    assert code == 1008 and reason.startswith("flood")
    events = events_of(broker, running, "flood-1")
    assert events[-1]["type"] == "call_ended" and events[-1]["reason"] == "flood"


def test_too_many_messages_a_second_is_a_flood(broker, bridge_factory):
    running = bridge_factory(max_messages_per_s=50)
    marks = [json.dumps({"event": "mark", "sequenceNumber": str(seq), "mark": {"name": "x"}}) for seq in range(2, 200)]
    code, reason = asyncio.run(_send_and_close_code(running.url, [start_message("flood-2"), *marks]))
    assert code == 1008 and reason.startswith("flood")
    assert events_of(broker, running, "flood-2")[-1]["reason"] == "flood"


def test_an_abrupt_disconnect_flushes_the_audio_and_ends_the_call(broker, bridge_factory, tracks):
    running = bridge_factory(flood_factor=1000, max_messages_per_s=100_000)

    async def go():
        ws = await connect(running.url)
        await ws.send(start_message("cut-1"))
        for seq in range(2, 2 + 30):  # 600 ms of inbound audio: 2 full frames + 100 ms buffered
            await ws.send(media_message(seq, "inbound", seq, tracks["inbound"][(seq - 2) * 160:(seq - 1) * 160]))
        await asyncio.sleep(0.3)
        ws.transport.abort()  # no close frame, no stop: the TCP connection just dies

    asyncio.run(go())
    events = events_of(broker, running, "cut-1")
    assert [e["type"] for e in events] == ["call_started", "call_ended"] and events[-1]["reason"] == "disconnected"
    audio = read_until(broker, running.settings.topic("audio"), lambda rs: len(rs) >= 3)
    metas = [AudioFrameMeta.from_headers(r.headers) for r in audio]
    assert [m.seq for m in metas] == [0, 1, 2] and sum(len(r.value) for r in audio) == 30 * 160


def test_token_is_required_when_configured(broker, bridge_factory, tracks):
    running = bridge_factory(token="s3cret", flood_factor=1000, max_messages_per_s=100_000)
    short = {k: v[:1600] for k, v in tracks.items()}
    with pytest.raises(InvalidStatus) as rejected:
        asyncio.run(stream_call(running.url, "tok-0", short, headers={"Authorization": "Bearer wrong"}))
    assert rejected.value.response.status_code == 401
    code, reason = asyncio.run(_send_and_close_code(running.url, [start_message("tok-1")]))
    assert (code, reason) == (1008, "unauthorized: missing or wrong token")
    assert asyncio.run(stream_call(running.url, "tok-2", short, headers={"Authorization": "Bearer s3cret"})) == (1000, "completed")
    assert asyncio.run(stream_call(running.url, "tok-3", short, token="s3cret")) == (1000, "completed")  # Twilio <Parameter>
    ids = {r.key for r in read_until(broker, running.settings.topic("events"), lambda rs: len(rs) >= 4)}
    assert ids == {b"tok-2", b"tok-3"}  # nothing at all for the refused ones


def test_a_stalled_sink_pushes_back_and_closes_with_backpressure(broker, bridge_factory):
    """A broker that stops taking messages (stand-in: a sink that never returns) → bounded queue fills → close."""
    stalled = asyncio.Event()
    delivered = []

    async def sink(outgoing):
        delivered.append(outgoing)
        await stalled.wait()

    running = bridge_factory(sink=sink, queue_frames=2, send_timeout_s=1.0, flood_factor=1000, chunk_ms=20)
    messages = [start_message("bp-1")] + [media_message(seq, "inbound", seq, b"\xff" * 160) for seq in range(2, 40)]
    started = time.monotonic()
    code, reason = asyncio.run(_send_and_close_code(running.url, messages))
    assert code == 1013 and reason.startswith("backpressure")
    assert time.monotonic() - started < 15
    assert len(delivered) == 1  # the sink got one message and hung; the bridge did not buffer without bound
    assert list(running.bridge.closed_reasons) == ["backpressure"]


def test_the_bridge_command_serves_and_ends_open_calls_on_shutdown(broker, tracks):
    import os
    import re
    import signal
    import sys

    from tests.conftest import ROOT

    from streamproc.broker import free_port
    from tests.conftest import http_get

    settings = Settings(broker=broker.url, topic_prefix=f"c{uuid.uuid4().hex[:8]}.")
    env = dict(os.environ, STREAMPROC_BRIDGE_TOKEN="tok")
    metrics_port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamproc", "bridge", "--port", "0", "--broker", broker.url, "--topic-prefix", settings.topic_prefix,
         "--metrics-port", str(metrics_port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT,
    )
    try:
        seen = ""
        match = None
        while match is None and proc.poll() is None:
            seen += proc.stdout.readline()
            match = re.search(r"ws://127\.0\.0\.1:(\d+)/ .*\(token required\)", seen)
        assert match, seen
        url = f"ws://127.0.0.1:{match.group(1)}/"
        short = {k: v[:4000] for k, v in tracks.items()}
        assert asyncio.run(stream_call(url, "cli-1", short, pace=0.01, token="tok")) == (1000, "completed")
        status, body = http_get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200 and b'streamproc_bridge_closes_total{reason="completed"} 1.0' in body
        assert b"streamproc_bridge_audio_frames_total 4.0" in body  # 2 tracks x 4000 bytes = 2 x 2 frames

        async def left_open():
            ws = await connect(url)
            await ws.send(start_message("cli-2", token="tok"))
            await ws.send(media_message(2, "inbound", 1, b"\xff" * 160))
            return ws

        loop = asyncio.new_event_loop()
        ws = loop.run_until_complete(left_open())
        events = read_until(broker, settings.topic("events"), lambda rs: any(r.key == b"cli-2" for r in rs))
        assert any(r.key == b"cli-2" for r in events)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        loop.run_until_complete(ws.wait_closed())
        assert ws.close_code == 1001  # going away
        loop.close()
    finally:
        if proc.poll() is None:
            proc.kill()
    ended = {json.loads(r.value)["call_id"]: json.loads(r.value)["reason"]
             for r in read_until(broker, settings.topic("events"), lambda rs: len(rs) >= 4) if json.loads(r.value)["type"] == "call_ended"}
    assert ended == {"cli-1": "completed", "cli-2": "bridge_shutdown"}


def test_connections_over_the_limit_are_refused(broker, bridge_factory):
    running = bridge_factory(max_connections=1)

    async def go():
        async with connect(running.url) as first:
            await first.send(start_message("limit-1"))
            with pytest.raises(InvalidStatus) as refused:
                async with connect(running.url):
                    pass
            await first.send(json.dumps({"event": "stop", "sequenceNumber": "2"}))
            return refused.value.response.status_code

    assert asyncio.run(go()) == 503
    assert events_of(broker, running, "limit-1")[-1]["reason"] == "completed"


DEAD_AIR_RULES = """
version: 1
detection:
  dead_air:
    - {id: dead-air-test, after_s: 3, severity: warning}
"""


def test_a_bridged_call_comes_out_as_an_alert(broker, bridge_factory, worker_factory, tracks):
    """Bridge → audio topic → worker (audio features) → detection → alert: 4 s of dead air after the talk."""
    worker = worker_factory(DEAD_AIR_RULES, asr_model="lang:ko")
    worker.wait_transcription_ready()
    running = bridge_factory()
    running.bridge.sink = kafka_sink(running.producer, worker.settings)
    silence = b"\xff" * 8000 * 4  # μ-law silence, 4 s
    quiet_end = {track: audio + silence for track, audio in tracks.items()}
    code, reason = asyncio.run(stream_call(running.url, "br-alert", quiet_end, pace=MEDIA_MS / 1000 / 2))
    assert (code, reason) == (1000, "completed")
    records = read_until(broker, worker.topic("alerts"), lambda rs: any(r.key == b"br-alert" for r in rs), timeout_s=60)
    alerts = [json.loads(r.value) for r in records if r.key == b"br-alert"]
    assert alerts, worker.log_tail()
    assert alerts[0]["kind"] == "dead_air" and alerts[0]["rule_id"] == "dead-air-test"
    assert alerts[0]["agent_id"] == "agent-b" and alerts[0]["queue"] == "support"  # from the bridge's call_started
    last_speech_s = len(tracks["inbound"]) / 8000 - 1.5  # the scenario ends with 1.5 s of silence
    assert alerts[0]["evidence"]["audio_start_s"] >= last_speech_s - 1.0


def test_a_failing_sink_closes_the_call_instead_of_hanging(bridge_factory):
    """Kafka refusing writes (stand-in: a sink that raises) → close 1011 bridge_error, not a stuck socket."""

    async def sink(outgoing):
        raise RuntimeError("KafkaTimeoutError: stand-in")

    running = bridge_factory(sink=sink, flood_factor=1000, chunk_ms=20)
    messages = [start_message("fail-1")] + [media_message(seq, "inbound", seq, b"\xff" * 160) for seq in range(2, 20)]
    code, reason = asyncio.run(_send_and_close_code(running.url, messages))
    assert code == 1011 and reason.startswith("bridge_error")


# --------------------------------------------------------------------------- Twilio request signatures

AUTH_TOKEN = "12345678901234567890123456789012"  # the shape of a Twilio auth token (32 hex digits)


def twilio_signature(url: str, auth_token: str = AUTH_TOKEN) -> str:
    """Twilio's documented algorithm, written out here (not the bridge's code): Base64(HMAC-SHA1(auth token,
    full URL + sorted POST parameters)); a WebSocket upgrade has no body, so the URL alone."""
    import hashlib
    import hmac

    return base64.b64encode(hmac.new(auth_token.encode(), url.encode(), hashlib.sha1).digest()).decode()


def rejected(reason: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("streamproc_bridge_rejected_total", {"reason": reason}) or 0.0


def refused_status(url: str, headers=None) -> int:
    with pytest.raises(InvalidStatus) as refusal:
        asyncio.run(_send_and_close_code(url, [start_message("never")], headers=headers))
    return refusal.value.response.status_code


def test_twilio_signature_oracle_agrees_with_the_official_validator():
    from twilio.request_validator import RequestValidator

    url = "wss://bridge.example.com/media?tenant=acme"
    assert RequestValidator(AUTH_TOKEN).compute_signature(url, {}) == twilio_signature(url)


def test_twilio_signed_handshakes_are_checked(broker, bridge_factory, tracks):
    running = bridge_factory(twilio_auth_token=AUTH_TOKEN, flood_factor=1000, max_messages_per_s=100_000)
    short = {k: v[:1600] for k, v in tracks.items()}
    port = running.bridge.config.port
    # What Twilio signs: the URL it connects to. Here the bridge is reached directly, so the URL is
    # wss:// + the Host header the client sends (127.0.0.1:port) + the path and query.
    good = {"X-Twilio-Signature": twilio_signature(f"wss://127.0.0.1:{port}/media")}
    assert asyncio.run(stream_call(running.url, "sig-good", short, headers=good)) == (1000, "completed")

    before = {reason: rejected(reason) for reason in ("bad_signature", "missing_signature")}
    wrong = {"X-Twilio-Signature": twilio_signature(f"wss://127.0.0.1:{port}/media", auth_token="0" * 32)}
    assert refused_status(running.url, wrong) == 403
    # A signature captured for one URL, replayed with other query parameters: the URL is what is signed.
    captured = {"X-Twilio-Signature": twilio_signature(f"wss://127.0.0.1:{port}/media?tenant=acme")}
    assert refused_status(running.url + "?tenant=other", captured) == 403
    assert refused_status(running.url + "?tenant=acme&extra=1", captured) == 403
    assert asyncio.run(stream_call(running.url + "?tenant=acme", "sig-query", short, headers=captured)) == (1000, "completed")
    assert rejected("bad_signature") == before["bad_signature"] + 3
    # No header and no token fallback configured: refused before the upgrade.
    assert refused_status(running.url) == 403
    assert refused_status(running.url, {"Authorization": "Bearer anything"}) == 403
    assert rejected("missing_signature") == before["missing_signature"] + 2

    ids = {r.key for r in read_until(broker, running.settings.topic("events"), lambda rs: len(rs) >= 4)}
    assert ids == {b"sig-good", b"sig-query"}, "refused handshakes produce nothing"


def test_behind_a_tls_proxy_the_public_url_is_what_is_signed(broker, bridge_factory, tracks):
    running = bridge_factory(twilio_auth_token=AUTH_TOKEN, public_url="wss://bridge.example.com",
                             flood_factor=1000, max_messages_per_s=100_000)
    short = {k: v[:800] for k, v in tracks.items()}
    public = {"X-Twilio-Signature": twilio_signature("wss://bridge.example.com/media")}
    assert asyncio.run(stream_call(running.url, "proxied", short, headers=public)) == (1000, "completed")
    # Signed for the address the bridge itself listens on: not the URL Twilio was given, refused.
    local = {"X-Twilio-Signature": twilio_signature(f"wss://127.0.0.1:{running.bridge.config.port}/media")}
    assert refused_status(running.url, local) == 403


def test_forks_that_cannot_sign_fall_back_to_the_token(broker, bridge_factory, tracks):
    running = bridge_factory(twilio_auth_token=AUTH_TOKEN, token="fork-secret", flood_factor=1000, max_messages_per_s=100_000)
    short = {k: v[:800] for k, v in tracks.items()}
    before = rejected("bad_token")
    assert asyncio.run(stream_call(running.url, "fork-ok", short, token="fork-secret")) == (1000, "completed")
    code, reason = asyncio.run(_send_and_close_code(running.url, [start_message("fork-bad", token="guess")]))
    assert (code, reason) == (1008, "unauthorized: missing or wrong token")
    assert rejected("bad_token") == before + 1
    # A signature that is present is checked, never bypassed by also sending the token.
    bad = {"X-Twilio-Signature": twilio_signature("wss://elsewhere/media")}
    assert refused_status(running.url, bad) == 403


# --------------------------------------------------------------------------- secure by default


@pytest.mark.parametrize(
    "host, auth, insecure, outcome",
    [
        ("127.0.0.1", {}, False, "ok"),
        ("localhost", {}, False, "ok"),
        ("0.0.0.0", {}, False, "refused"),
        ("::", {}, False, "refused"),
        ("0.0.0.0", {"token": "t"}, False, "ok"),
        ("0.0.0.0", {"twilio_auth_token": AUTH_TOKEN}, False, "ok"),
        ("0.0.0.0", {}, True, "warned"),
    ],
)
def test_the_bridge_refuses_an_open_non_loopback_bind(host, auth, insecure, outcome, caplog):
    from streamproc.exposure import InsecureBind

    config = BridgeConfig(host=host, insecure=insecure, **auth)
    with caplog.at_level("WARNING", logger="streamproc.security"):
        if outcome == "refused":
            with pytest.raises(InsecureBind, match="refusing to start the media bridge on .* --insecure"):
                config.check_exposure()
        else:
            config.check_exposure()
    warnings = [r.getMessage() for r in caplog.records if r.name == "streamproc.security"]
    assert bool(warnings) == (outcome == "warned"), warnings
    if outcome == "warned":
        assert "INSECURE" in warnings[0] and "WITHOUT authentication" in warnings[0]


def test_the_bridge_command_refuses_an_open_public_bind_at_once():
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_")} | {"STREAMPROC_BROKER": "kafka://127.0.0.1:9"}
    result = subprocess.run([sys.executable, "-m", "streamproc", "bridge", "--host", "0.0.0.0", "--port", "0"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "refusing to start the media bridge on 0.0.0.0" in result.stderr.replace("\n", " ")
