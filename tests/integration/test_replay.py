"""`streamproc replay` / Replayer on the real broker: frames and events, counts, order, headers, pacing."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import uuid

import pytest
from kafka import KafkaProducer

from streamproc.config import Settings
from streamproc.kafka_admin import ensure_topics
from streamproc.replay import Replayer, audio_frames, kafka_sender, load_recording
from streamproc.scenario import parse_scenario
from streamproc.schemas import AudioEncoding, AudioFrameMeta, AudioLayout, Speaker, parse_call_event
from streamproc.synth import synthesize
from tests.conftest import ROOT, TopicReader

pytestmark = pytest.mark.broker

SHORT_CALL = textwrap.dedent(
    """
    version: 1
    name: short call
    participants: {agent: {id: agent-r}, customer: {id: cust-r}, queue: support}
    timeline:
      - say: agent
        text: {en: "Hello, support.", ko: "안녕하세요"}
      - say: customer
        text: {en: "Please hold on.", ko: "잠시만요"}
      - hold: 1.5
      - say: agent
        text: {en: "Back again.", ko: "네"}
      - end: true
        reason: completed
    """
)


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    folder = tmp_path_factory.mktemp("replay")
    files = synthesize(parse_scenario(SHORT_CALL), folder / "short.wav", "en", rate=16000)
    return files


def _settings(broker) -> Settings:
    settings = Settings(broker=broker.url, topic_prefix=f"r{uuid.uuid4().hex[:8]}.")
    ensure_topics(settings)
    return settings


def _records(broker, settings, kind: str, expected: int, timeout_s: float = 20):
    reader = TopicReader(broker.bootstrap, settings.topic(kind))
    deadline = time.monotonic() + timeout_s
    while len(reader.records) < expected and time.monotonic() < deadline:
        reader.poll(200)
    reader.poll(300)  # and nothing more
    reader.close()
    return reader.records


def test_realtime_replay_sends_every_frame_and_event_in_order_at_the_pace_of_the_call(broker, recording):
    settings = _settings(broker)
    call = load_recording(recording.wav)
    frames_expected = list(audio_frames(call.audio, 250))
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=0)
    player = Replayer(kafka_sender(producer, settings), realtime=True)
    start = time.time() + 0.3
    player.add(call, "rt-1", start, chunk_ms=250)
    player.run()
    finished = time.time()
    producer.flush()
    producer.close()

    audio = _records(broker, settings, "audio", len(frames_expected))
    events = _records(broker, settings, "events", len(call.events))
    assert len(audio) == len(frames_expected) == pytest.approx(call.audio.duration_s / 0.25, abs=1)
    assert {r.key for r in audio} == {b"rt-1"} and {r.key for r in events} == {b"rt-1"}
    # One partition for the whole call: its events and audio co-locate.
    assert len({r.partition for r in audio} | {r.partition for r in events}) == 1
    metas = [AudioFrameMeta.from_headers(r.headers) for r in sorted(audio, key=lambda r: r.offset)]
    assert [m.seq for m in metas] == list(range(len(metas)))
    assert [m.offset_ms for m in metas] == [offset for offset, _, _ in frames_expected]
    assert all(m.encoding is AudioEncoding.pcm16 and m.rate == 16000 and m.channels == 2 and m.layout is AudioLayout.agent_customer for m in metas)
    assert b"".join(r.value for r in sorted(audio, key=lambda r: r.offset)) == call.audio.data
    assert all(len(r.value) == 16000 for r in audio[:-1])  # 250 ms of 16 kHz stereo PCM16

    parsed = [parse_call_event(r.value) for r in sorted(events, key=lambda r: r.offset)]
    assert [e.type for e in parsed] == ["call_started", "hold_started", "hold_ended", "call_ended"]
    assert parsed[0].agent_id == "agent-r" and parsed[0].queue == "support"
    # Pacing without a wall-clock tolerance the test does not own: nothing is sent before its time
    # (that is the replayer's contract), and any lateness (a loaded machine delays a send) is what the
    # replayer itself measured and reports (max_lag_s; the figure, not a bound, is what varies).
    lag = player.max_lag_s + 0.01  # + ms rounding of the timestamps
    # Event times follow the recording's offsets (real clock at send).
    for event, source in zip(parsed, call.events):
        assert -0.01 <= event.ts.timestamp() - start - source["offset_s"] <= lag, (event, source)
    # Real-time pacing: each frame leaves when its audio has been "spoken" (end of the frame), never earlier.
    for meta, (offset_ms, duration_ms, _) in zip(metas, frames_expected):
        late = meta.sent_at_ms / 1000 - start - (offset_ms + duration_ms) / 1000
        assert -0.01 <= late <= lag, f"frame {meta.seq} sent {late:+.3f} s against its schedule (max lag {player.max_lag_s:.3f} s)"
    assert call.duration_s - 0.01 <= finished - start <= call.duration_s + lag + 0.3
    # Not sent all at once at the end (which would also never be early): the send times spread over the call.
    spread = (metas[-1].sent_at_ms - metas[0].sent_at_ms) / 1000
    assert spread >= (frames_expected[-1][0] - frames_expected[0][0]) / 1000 - 0.01
    print(f"\nreplay max send lag {player.max_lag_s * 1000:.0f} ms")
    assert player.max_lag_s < 5.0, "sanity only: a pacer that runs whole seconds behind is broken, not loaded"


def test_cli_replays_concurrent_copies_with_distinct_ids_and_a_mono_mulaw_recording(broker, recording, tmp_path):
    settings = _settings(broker)
    mulaw = tmp_path / "customer.wav"
    # A mono μ-law 8 kHz recording of the customer side (channel 2), the format telephony often stores.
    subprocess.run(["sox", str(recording.wav), "-r", "8000", "-e", "u-law", "-b", "8", str(mulaw), "remix", "2"], check=True)
    (tmp_path / "customer.events.jsonl").write_text(recording.events.read_text())
    env_args = ["--broker", broker.url, "--topic-prefix", settings.topic_prefix]
    result = subprocess.run(
        [sys.executable, "-m", "streamproc", "replay", str(mulaw), "--speaker", "customer", "--calls", "3",
         "--call-id", "load", "--fast", "--chunk-ms", "500", *env_args],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "3 call(s)" in result.stdout and "load-001" in result.stdout
    call = load_recording(mulaw, speaker=Speaker.customer)
    per_call = len(list(audio_frames(call.audio, 500)))
    audio = _records(broker, settings, "audio", per_call * 3)
    events = _records(broker, settings, "events", 4 * 3)
    assert len(audio) == per_call * 3 and len(events) == 12
    by_call: dict[bytes, list] = {}
    for record in sorted(audio, key=lambda r: (r.partition, r.offset)):
        by_call.setdefault(record.key, []).append(AudioFrameMeta.from_headers(record.headers))
    assert set(by_call) == {b"load-001", b"load-002", b"load-003"}
    for metas in by_call.values():
        assert [m.seq for m in metas] == list(range(per_call))
        assert all(m.encoding is AudioEncoding.mulaw and m.rate == 8000 and m.layout is AudioLayout.mono
                   and m.speaker is Speaker.customer and m.stream == "customer" for m in metas)
    assert all(len(r.value) == 4000 for r in audio if AudioFrameMeta.from_headers(r.headers).seq < per_call - 1)
    ids = {json.loads(r.value)["call_id"] for r in events}
    assert ids == {"load-001", "load-002", "load-003"}


def test_cli_rejects_a_mono_file_without_a_speaker_and_a_bad_wav(broker, recording, tmp_path):
    mono = tmp_path / "mono.wav"
    subprocess.run(["sox", str(recording.wav), str(mono), "remix", "1"], check=True)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    for path, words in ((mono, "--speaker"), (bad, "missing fmt")):
        result = subprocess.run([sys.executable, "-m", "streamproc", "replay", str(path), "--broker", broker.url],
                                capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert result.returncode == 1 and words in result.stderr and "Traceback" not in result.stderr


def test_script_replay_publishes_scripted_transcripts_without_audio(broker, recording):
    settings = _settings(broker)
    result = subprocess.run(
        [sys.executable, "-m", "streamproc", "replay", "--events", str(recording.events), "--script", str(recording.script),
         "--text", "--no-audio", "--fast", "--call-id", "scripted", "--broker", broker.url, "--topic-prefix", settings.topic_prefix],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    script = [json.loads(line) for line in recording.script.read_text().splitlines()]
    multiword = sum(1 for line in script if len(line["text"].split()) > 1)
    segments = [json.loads(r.value) for r in sorted(_records(broker, settings, "transcripts", len(script) + multiword), key=lambda r: r.offset)]
    assert _records(broker, settings, "audio", 0, timeout_s=1) == []
    finals = [s for s in segments if s["is_final"]]
    assert [(s["speaker"], s["text"], s["start_s"], s["end_s"]) for s in finals] == [
        (line["speaker"], line["text"], line["start_s"], line["end_s"]) for line in script]
    assert all(s["source"] == "script" and s["call_id"] == "scripted" for s in segments)
    assert [s["utterance"] for s in finals if s["speaker"] == "agent"] == [0, 1]
    partials = [s for s in segments if not s["is_final"]]
    assert len(partials) == multiword and all(p["text"] and p["text"] in script[0]["text"] + script[1]["text"] + script[2]["text"] for p in partials)
