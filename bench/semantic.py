"""Per-segment cost of semantic detection vs lexicon-only detection, measured in the same run.

    .venv/bin/python -m bench.semantic [--utterances N] [--rules FILE] [--sparse-weight W] [--encoder int8|tuned|base]

(``--rules``, ``--sparse-weight`` and ``--encoder``: another rules file, or the sparse head's weight
or the encoder overridden, e.g. ``--sparse-weight 0`` for the embeddings alone, the cost before the
seventh tuning, or ``--encoder base`` for the general model, the one before the tenth.)

Feeds the same stream of transcript segments — every utterance of the labelled sets as a
recogniser would send it, partials growing word by word, then the final — through two
engines: the packaged default rules with the semantic examples stripped (lexicon-only, the
baseline) and the packaged default rules as shipped (lexicon + semantic intents + windows +
risk). Each segment's ``on_transcript`` call is timed, as wall-clock time (what a segment waits,
inflated by whatever else runs on the machine) and as this thread's CPU time (what contention
cannot inflate); both are reported with the load average before and after. The embedding
cache is emptied after training (the development lines are training examples now, and a final
that equals one must not be served from the cache): every segment is embedded, as in
production. The semantic heads are trained before the clock starts (the worker does that at
start, in its executor; ``train_s`` is that cold cost). onnxruntime runs on one thread. ``added_cpu_ms_per_segment``:
each segment's semantic CPU time minus its lexicon-only CPU time, the issue's "added per segment"; ``encoder_pass_cpu_ms``:
one uncached encoder pass over each segment's text, the floor under the added cost, measured in the same run
(this shared machine's speed moves from day to day, the pass with it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import yaml

from streamproc.detect.engine import CallInfo, DetectionEngine
from streamproc.rules import load_rules
from streamproc.schemas import Speaker, TranscriptSegment

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def segments(limit: int):
    items = []
    for name in ("intents_dev.yaml", "labelled_utterances.yaml"):
        data = yaml.safe_load((DATA / name).read_text())
        for section in ("utterances", "holdout", "holdout2"):
            items += data.get(section) or []
    out = []
    for n, item in enumerate(items[:limit]):
        words = item["text"].split()
        call = f"bench-{n % 50}"
        for k in range(1, len(words) + 1):
            final = k == len(words)
            out.append(TranscriptSegment(
                segment_id=TranscriptSegment.make_id(call, item["speaker"], n, k, final), call_id=call,
                speaker=Speaker(item["speaker"]), utterance=n, revision=k, is_final=final, text=" ".join(words[:k]),
                start_s=float(n * 4), end_s=float(n * 4 + 0.4 * k), source="script",
            ))
    return out


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def measure(engine: DetectionEngine, stream) -> tuple[list[float], list[float]]:
    """Wall time and this thread's CPU time per segment, ms (CPU time is what contention cannot inflate)."""
    wall, cpu = [], []
    for segment in stream:
        started, started_cpu = time.perf_counter(), time.thread_time()
        engine.on_transcript(segment, CallInfo(), now=0.0)
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.thread_time() - started_cpu) * 1000)
    return wall, cpu


def encoder_passes(encoder, stream) -> list[float]:
    """This thread's CPU time of one uncached encoder pass over each segment's text, ms."""
    cpu = []
    for segment in stream:
        encoder.clear_cache()
        started_cpu = time.thread_time()
        encoder.encode([segment.text])
        cpu.append((time.thread_time() - started_cpu) * 1000)
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--utterances", type=int, default=300)
    parser.add_argument("--rules", default=None, help="rules file (default: the packaged rules)")
    parser.add_argument("--sparse-weight", type=float, default=None, help="override detection.semantic.sparse_weight")
    parser.add_argument("--encoder", choices=("int8", "tuned", "base"), default=None, help="override detection.semantic.encoder")
    args = parser.parse_args()
    rules = load_rules(args.rules)
    detection = rules.detection
    overrides = {k: v for k, v in (("sparse_weight", args.sparse_weight), ("encoder", args.encoder)) if v is not None}
    if overrides:
        detection = detection.model_copy(update={"semantic": detection.semantic.model_copy(update=overrides)})
        rules = rules.model_copy(update={"detection": detection})
    lexicon = rules.model_copy(update={"detection": detection.model_copy(update={
        "phrases": tuple(p.model_copy(update={"like": (), "not_like": ()}) for p in detection.phrases if p.phrases),
        "windows": (), "risk": ()})})
    baseline = DetectionEngine(lambda: lexicon)
    semantic = DetectionEngine(lambda: rules)
    load_before = [round(x, 2) for x in os.getloadavg()]
    started = time.perf_counter()
    model = semantic.semantic_model()
    train_s = time.perf_counter() - started
    stream = segments(args.utterances)
    measure(semantic, segments(20))  # warm-up (onnxruntime allocations), other call ids' bookkeeping aside
    model.encoder.clear_cache()
    base, base_cpu = measure(baseline, stream)
    sem, sem_cpu = measure(semantic, stream)
    encoder_cpu = encoder_passes(model.encoder, stream)
    def stats(v):
        return {"p50": round(statistics.median(v), 3), "p99": round(percentile(v, 99), 3)}
    result = {
        "segments": len(stream),
        "heads": len(model.heads),
        "train_s": round(train_s, 2),
        "wall_clock": "lexicon_ms / semantic_ms / added_ms; *_cpu_ms are thread CPU time",
        "lexicon_ms": {"p50": round(statistics.median(base), 3), "p99": round(percentile(base, 99), 3)},
        "semantic_ms": {"p50": round(statistics.median(sem), 3), "p99": round(percentile(sem, 99), 3)},
    }
    result["added_ms"] = {k: round(result["semantic_ms"][k] - result["lexicon_ms"][k], 3) for k in ("p50", "p99")}
    result["ratio_p50"] = round(result["semantic_ms"]["p50"] / max(result["lexicon_ms"]["p50"], 1e-6), 1)
    result["lexicon_cpu_ms"] = stats(base_cpu)
    result["semantic_cpu_ms"] = stats(sem_cpu)
    result["added_cpu_ms"] = {k: round(result["semantic_cpu_ms"][k] - result["lexicon_cpu_ms"][k], 3) for k in ("p50", "p99")}
    # per segment, semantic minus lexicon on the same segment: what each segment pays (the difference of two p99s
    # above compares two different sets of ~19 slowest segments and moved by ±2.5 ms between runs)
    result["added_cpu_ms_per_segment"] = stats([s - b for s, b in zip(sem_cpu, base_cpu)])
    # the floor under the added cost: one pass of the encoder over each segment's text, in the same run (this
    # machine's speed moves from day to day; the rest of the added cost is scoring, windows and bookkeeping)
    result["encoder_pass_cpu_ms"] = stats(encoder_cpu)
    result["added_over_encoder_pass_p99_ms"] = round(result["added_cpu_ms"]["p99"] - result["encoder_pass_cpu_ms"]["p99"], 3)
    result["load_average_before"] = load_before
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
