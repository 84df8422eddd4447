"""Batched Whisper decoding: throughput and latency per batch size, on the CPU or a GPU.

    .venv/bin/python -m bench.whisper_batch [--device cpu|cuda] [--batches 1,2,4,8] [--rounds 3]

Utterances: English lines spoken by flite (four voices) through an 8 kHz μ-law phone line,
16 kHz float, the packaged Whisper tiny.en. For each batch size B, B decoder threads each
decode utterances as the worker's sessions would (a final with word times), first each alone
(the baseline: today's worker, one decode per thread) and then through the engine's
DecodeBatcher (up to B per model call); each round is timed as a whole. Figures per B:
utterance decodes per second, p95 latency of one decode, and batched throughput as a ratio to
the unbatched run with the same threads, measured in the same run. ``--device cuda`` is the GPU run
(docs/deployment.md#gpu); no GPU was available when this bench was written, so only CPU
figures exist so far.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from pathlib import Path

import numpy as np

from streamproc import audio

LINES = (
    ("I want to speak to your supervisor right now, this is the third time I have called.", "slt"),
    ("Please cancel my account today, I am moving to another provider.", "kal16"),
    ("Thank you for calling, my name is John, how can I help you today?", "awb"),
    ("I have been on hold for forty minutes and nobody has called me back.", "rms"),
)
FIGURES = Path("test-artifacts/figures")


def utterances() -> list[np.ndarray]:
    from tests import flite

    return [audio.resample(flite.phone_line(text, voice), 8000, 16000).astype(np.float32) / 32768.0 for text, voice in LINES]


def run(batch: int, device: str, speech: list[np.ndarray], per_thread: int, batched: bool) -> dict:
    from streamproc.asr.models import resolve_model
    from streamproc.asr.whisper import WhisperEngine

    engine = WhisperEngine(resolve_model("lang:en"), workers=batch, device=device, batch_size=batch if batched else 1)
    engine.decode(speech[0], words=True)  # warm-up
    latencies: list[float] = []
    sizes: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(batch)

    def worker(index: int) -> None:
        start.wait()
        for n in range(per_thread):
            began = time.perf_counter()
            decoded = engine.decode(speech[(index + n) % len(speech)], words=True)
            with lock:
                latencies.append(time.perf_counter() - began)
                sizes.append(decoded.batch_size)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(batch)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    latencies.sort()
    return {
        "batch": batch, "decodes": len(latencies), "wall_s": round(wall, 2),
        "decodes_per_s": round(len(latencies) / wall, 2),
        "p95_latency_s": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 3),
        "mean_batch": round(statistics.fmean(sizes), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--batches", default="1,2,4")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per-thread", type=int, default=6, help="decodes per thread per round")
    args = parser.parse_args()
    speech = utterances()
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        row: dict = {"batch": batch}
        for mode in ("alone", "batched"):
            runs = [run(batch, args.device, speech, args.per_thread, mode == "batched") for _ in range(args.rounds)]
            rate = [r["decodes_per_s"] for r in runs]
            row[mode] = {
                "runs": runs, "decodes_per_s": {"min": min(rate), "median": statistics.median(rate), "max": max(rate)},
                "p95_latency_s": statistics.median(r["p95_latency_s"] for r in runs),
                "mean_batch": statistics.median(r["mean_batch"] for r in runs),
            }
        rows.append(row)
    load = os.getloadavg()[0]
    print(f"device {args.device}, load average {load:.2f}, {args.rounds} rounds × {args.per_thread} decodes per thread\n")
    print("| threads = batch B | alone: decodes/s (median) | batched: decodes/s min / median / max | batched ÷ alone | p95 latency alone / batched | mean batch formed |")
    print("|---:|---:|---|---:|---|---:|")
    for row in rows:
        alone, together = row["alone"], row["batched"]
        r = together["decodes_per_s"]
        print(f"| {row['batch']} | {alone['decodes_per_s']['median']:.2f} | {r['min']:.2f} / {r['median']:.2f} / {r['max']:.2f} "
              f"| {r['median'] / alone['decodes_per_s']['median']:.2f} | {alone['p95_latency_s']:.2f} / {together['p95_latency_s']:.2f} s "
              f"| {together['mean_batch']:.2f} |")
    FIGURES.mkdir(parents=True, exist_ok=True)
    (FIGURES / f"whisper_batch_{args.device}.json").write_text(json.dumps({"device": args.device, "load": load, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
