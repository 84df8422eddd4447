"""Decoder scheduling: live-call lag while a backlog catches up (fifo vs fair), and what batching does to CPU.

Two measurements, each a pair of configurations run back to back in the same process, ``--runs`` times
(the order alternates between runs, so a drift in the machine's load does not favour one side):

* **fairness** — one real ``streamproc worker`` with one decoder lane (``STREAMPROC_TRANSCRIPTION_THREADS=1``,
  Vosk ``lang:ko``). A backlog call (``--backlog-repeats`` × the ~7 s stereo μ-law speech, captured two minutes
  ago) is dumped on partition 0 at once; ``--live-calls`` calls (one speaker stream each, ``--live-channels 2``
  for stereo) then stream ``--live-repeats`` × the speech in real time behind it on the same partition. Live-call lag, per partial segment: emitted → the
  moment the audio it covers was captured (the producer sends each 250 ms frame once it is captured), so
  queueing in the worker is included. ``fifo`` (the lane before: arrival order, one frame per executor call)
  is the baseline; ``fair`` is the default. Also: when the backlog's last audio was decoded.
* **batching** — the same backlog alone, drained by ``fair`` with ``STREAMPROC_TRANSCRIPTION_BATCH_MAX_FRAMES=1``
  (baseline: one executor call per frame) and with the default batches; worker-process CPU seconds per
  speaker-channel second of audio.

Run: ``python -m bench.scheduling [--runs 3] [--backlog-repeats 4] [--live-calls 1] [--live-repeats 2] [--live-channels 1]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

from bench.transcription import FRAME_MS, Worker, cut, process_cpu_s
from streamproc.broker import EmbeddedBroker
from streamproc.schemas import AudioFrameMeta
from tests.speech import speech_corpus


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def frame_headers(seq: int, sent_at: float, channels: int = 2) -> list:
    layout = dict(layout="agent_customer") if channels == 2 else dict(layout="mono", speaker="agent")
    return AudioFrameMeta(encoding="mulaw", rate=8000, channels=channels, **layout, seq=seq,
                          offset_ms=seq * FRAME_MS, sent_at_ms=int(sent_at * 1000)).to_headers()


def read_transcripts(broker, worker: Worker) -> list[dict]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False)
    topic = worker.settings.topic("transcripts")
    consumer.assign([TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)])
    consumer.seek_to_beginning()
    values: list[dict] = []
    while batch := consumer.poll(timeout_ms=2000, max_records=100000):
        for records in batch.values():
            values += [json.loads(record.value) for record in records]
    consumer.close()
    return values


def dump_backlog(producer, topic: str, variant, repeats: int) -> float:
    """The backlog call's frames, captured two minutes ago, all at once; returns its speaker-channel seconds."""
    chunks = cut(variant.data * repeats, variant.bytes_per_second)
    captured = time.time() - 120 - len(chunks) * FRAME_MS / 1000
    for seq, payload in enumerate(chunks):
        producer.send(topic, key=b"backlog", value=payload, headers=frame_headers(seq, captured + (seq + 1) * FRAME_MS / 1000),
                      partition=0)
    producer.flush()
    return len(variant.data) * repeats / variant.bytes_per_second * 2


def wait_decoded(worker: Worker, total_s: float, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while worker.audio_seconds() < total_s - 1e-6:
        if time.monotonic() > deadline:
            raise RuntimeError(f"worker decoded {worker.audio_seconds():.1f} of {total_s:.1f} s of audio")
        time.sleep(0.2)


def fairness_run(broker, tmp: Path, variant, live_variant, scheduling: str, args) -> dict:
    from kafka import KafkaProducer

    worker = Worker(broker, tmp, threads=1, extra_env={"STREAMPROC_TRANSCRIPTION_SCHEDULING": scheduling})
    try:
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5)
        topic = worker.settings.topic("audio")
        cpu0 = process_cpu_s(worker.process.pid)
        total = dump_backlog(producer, topic, variant, args.backlog_repeats)
        dumped_at = time.time()
        live_chunks = cut(live_variant.data * args.live_repeats, live_variant.bytes_per_second)
        starts: dict[str, float] = {}

        def play(call_id: str, delay: float) -> None:
            time.sleep(delay)
            started = starts[call_id] = time.time()
            for seq, payload in enumerate(live_chunks):
                captured = started + (seq + 1) * FRAME_MS / 1000  # a frame is sent once its audio is captured
                time.sleep(max(0.0, captured - time.time()))
                producer.send(topic, key=call_id.encode(), value=payload, headers=frame_headers(seq, captured, live_variant.channels),
                              partition=0)

        players = [threading.Thread(target=play, args=(f"live-{i}", 0.1 * i)) for i in range(args.live_calls)]
        for player in players:
            player.start()
        for player in players:
            player.join()
        producer.flush()
        producer.close()
        total += args.live_calls * sum(len(chunk) for chunk in live_chunks) / live_variant.bytes_per_second * live_variant.channels
        wait_decoded(worker, total)
        cpu = process_cpu_s(worker.process.pid) - cpu0
        time.sleep(1.0)  # the last segments leave the worker
        values = read_transcripts(broker, worker)
    finally:
        worker.stop()
    live = [v for v in values if v["call_id"].startswith("live-")]
    capture_lag = sorted(ts(v["emitted_at"]) - (starts[v["call_id"]] + v["end_s"]) for v in live if not v["is_final"])
    worker_lag = sorted(ts(v["emitted_at"]) - ts(v["audio_received_at"]) for v in live)
    backlog = [v for v in values if v["call_id"] == "backlog"]
    return {
        "scheduling": scheduling,
        "live_partials": len(capture_lag),
        "live_lag_p50_s": statistics.median(capture_lag),
        "live_lag_p95_s": capture_lag[int(0.95 * (len(capture_lag) - 1))],
        "live_worker_lag_p95_s": worker_lag[int(0.95 * (len(worker_lag) - 1))],
        "backlog_last_segment_s": max(ts(v["emitted_at"]) for v in backlog) - dumped_at,
        "cpu_per_audio_s": cpu / total,
    }


def batching_run(broker, tmp: Path, variant, max_frames: int, args) -> dict:
    from kafka import KafkaProducer

    worker = Worker(broker, tmp, threads=1, extra_env={"STREAMPROC_TRANSCRIPTION_BATCH_MAX_FRAMES": str(max_frames)})
    try:
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=20)
        cpu0 = process_cpu_s(worker.process.pid)
        total = dump_backlog(producer, worker.settings.topic("audio"), variant, args.backlog_repeats)
        producer.close()
        wall0 = time.perf_counter()
        wait_decoded(worker, total)
        return {"max_frames": max_frames, "cpu_per_audio_s": (process_cpu_s(worker.process.pid) - cpu0) / total,
                "wall_s": time.perf_counter() - wall0, "audio_s": total}
    finally:
        worker.stop()


def spread(values: list[float]) -> str:
    return f"{min(values):.3f} / {statistics.median(values):.3f} / {max(values):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backlog-repeats", type=int, default=4, help="~7 s of stereo speech each (backlog call)")
    parser.add_argument("--live-calls", type=int, default=1)
    parser.add_argument("--live-repeats", type=int, default=2)
    parser.add_argument("--live-channels", type=int, choices=(1, 2), default=1,
                        help="1: each live call is one speaker stream (agent side, mono); 2: stereo calls")
    parser.add_argument("--skip-batching", action="store_true")
    parser.add_argument("--skip-fairness", action="store_true")
    parser.add_argument("--json", type=Path, help="also write every run's figures here")
    args = parser.parse_args()
    corpus = speech_corpus()
    variant = corpus.get("mulaw", 8000, 2)
    live_variant = corpus.get("mulaw", 8000, args.live_channels)
    loads: list[float] = [os.getloadavg()[0]]
    fairness: list[tuple[dict, dict]] = []
    batching: list[tuple[dict, dict]] = []
    with tempfile.TemporaryDirectory() as tmp_dir, EmbeddedBroker(log_path=Path(tmp_dir) / "broker.log") as broker:
        tmp = Path(tmp_dir)
        for run in range(args.runs):
            flip = run % 2 == 1  # alternate which side runs first
            if not args.skip_fairness:
                order = ["fair", "fifo"] if flip else ["fifo", "fair"]
                got = {s: fairness_run(broker, tmp, variant, live_variant, s, args) for s in order}
                fairness.append((got["fifo"], got["fair"]))
                print("fairness", run, json.dumps(got), flush=True)
                loads.append(os.getloadavg()[0])
            if not args.skip_batching:
                sizes = [16, 1] if flip else [1, 16]
                got_b = {n: batching_run(broker, tmp, variant, n, args) for n in sizes}
                batching.append((got_b[1], got_b[16]))
                print("batching", run, json.dumps(got_b), flush=True)
                loads.append(os.getloadavg()[0])
    print(f"\nload average (1 min) sampled between runs: {' '.join(f'{x:.2f}' for x in loads)}")
    if fairness:
        print(f"\nfairness: 1 lane, backlog {args.backlog_repeats} × speech dumped at once + {args.live_calls} live "
              f"{'stereo' if args.live_channels == 2 else 'mono'} call(s) "
              f"of {args.live_repeats} × speech; {len(fairness)} run(s); min / median / max")
        print("| figure | fifo (baseline) | fair | fair / fifo |")
        print("|---|---|---|---|")
        for key in ("live_lag_p50_s", "live_lag_p95_s", "live_worker_lag_p95_s", "backlog_last_segment_s", "cpu_per_audio_s"):
            base, new = [f[key] for f, _ in fairness], [g[key] for _, g in fairness]
            ratios = [n / b for b, n in zip(base, new) if b > 0]
            print(f"| {key} | {spread(base)} | {spread(new)} | {spread(ratios) if ratios else '-'} |")
    if batching:
        print(f"\nbatching: backlog {args.backlog_repeats} × speech drained by fair, one frame per executor call vs batches; "
              f"{len(batching)} run(s); min / median / max")
        print("| figure | 1 frame per call (baseline) | batches of ≤ 16 | batches / baseline |")
        print("|---|---|---|---|")
        for key in ("cpu_per_audio_s", "wall_s"):
            base, new = [f[key] for f, _ in batching], [g[key] for _, g in batching]
            print(f"| {key} | {spread(base)} | {spread(new)} | {spread([n / b for b, n in zip(base, new)])} |")
    if args.json:
        args.json.write_text(json.dumps({"fairness": fairness, "batching": batching, "loads": loads}, indent=2))


if __name__ == "__main__":
    main()
