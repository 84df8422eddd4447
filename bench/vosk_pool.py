"""The Vosk recogniser pool, in-process: decoding CPU and first-audio stalls with and without it.

    python -m bench.vosk_pool [--rounds 2] [--gate both|on|off] [--max-audio-s 3600,600]

The sizing calls (bench/sizing_calls, Korean, cached by bench.sizing) go through the worker's
``Transcriber`` one after another, ``--rounds`` times, with ``STREAMPROC_VOSK_IDLE_RECOGNIZERS`` 0
(a new recogniser per session, the behaviour before the pool) and 8, speech gate on and off, in
one process on one engine; with the pool, once per ``--max-audio-s`` budget
(``STREAMPROC_VOSK_RECOGNIZER_MAX_AUDIO_S``: a recogniser that has decoded that much is freed and
a new one built, which pays the first-audio stall and a cold graph cache again). Reported: process CPU seconds, the slowest single frame (a new
recogniser's first-audio stall shows there), finals that differ between the two (text), and the
pool's counters. Pinned to one core when it can be, so the CPU figures do not depend on a second
decoder thread.
"""

from __future__ import annotations

import argparse
import os
import time

from bench.sizing import load_calls
from streamproc.asr.vosk import RecognizerPool
from streamproc.transcribe import Transcriber, TranscriberConfig, load_model

SCENARIOS = ["billing_dispute", "hold_music", "router_setup"]


def decode_all(engine, calls, rounds: int, gate: bool, idle: int, max_audio_s: float) -> dict:
    finals, cpu, slowest = [], 0.0, 0.0
    for index, call in enumerate(calls * rounds):
        config = TranscriberConfig(speech_gate=gate, idle_recognizers=idle, recognizer_max_audio_s=max_audio_s)
        transcriber = Transcriber(engine, config)
        started = time.process_time()
        for meta, payload in zip(call.metas(), call.payloads()):
            frame_started = time.process_time()
            finals += [s.text for s in transcriber.process_frame(f"c{index}", meta, payload).segments if s.is_final]
            slowest = max(slowest, time.process_time() - frame_started)
        finals += [s.text for s in transcriber.end_call(f"c{index}") if s.is_final]
        cpu += time.process_time() - started
    return {"cpu_s": cpu, "slowest_frame_s": slowest, "finals": finals}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="times each call is decoded per configuration")
    parser.add_argument("--gate", choices=("both", "on", "off"), default="both")
    parser.add_argument("--max-audio-s", default="3600,600", help="pooled recogniser audio budgets, comma-separated")
    args = parser.parse_args()
    budgets = [float(b) for b in args.max_audio_s.split(",")]
    if len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    calls = load_calls("ko", SCENARIOS)
    audio_s = sum(2 * c.duration_s for c in calls) * args.rounds
    print(f"bench.vosk_pool: {len(calls)} calls × {args.rounds} rounds ({audio_s:.0f} speaker-channel s per run); "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| speech gate | pool | CPU s | speaker-channel s per CPU s | slowest frame s | recognisers created / lent again / freed |")
    print("|---|---|---:|---:|---:|---:|")
    engine = load_model("lang:ko")
    for gate in {"both": (True, False), "on": (True,), "off": (False,)}[args.gate]:
        results = {}
        for idle, budget in [(0, budgets[0])] + [(8, b) for b in budgets]:
            engine.pool = RecognizerPool(engine.model, spares=1 if idle else 0)  # each configuration starts from the warm-up
            engine.warm_up()
            before = engine.pool.stats()
            results[idle, budget] = r = decode_all(engine, calls, args.rounds, gate, idle, budget)
            after = engine.pool.stats()
            pool = f"8 idle, {budget:.0f} s" if idle else "off"
            print(f"| {'on' if gate else 'off'} | {pool} | {r['cpu_s']:.1f} | {audio_s / r['cpu_s']:.1f} | "
                  f"{r['slowest_frame_s']:.2f} | {after['created'] - before['created']} / {after['reused'] - before['reused']} "
                  f"/ {after['dropped'] - before['dropped']} |", flush=True)
        off = results[0, budgets[0]]
        for budget in budgets:
            on = results[8, budget]
            differ = sum(a != b for a, b in zip(off["finals"], on["finals"]))
            print(f"|  | gate {'on' if gate else 'off'}, {budget:.0f} s: pool saves ×{off['cpu_s'] / on['cpu_s']:.2f} CPU; "
                  f"finals differing {differ} of {len(off['finals'])} ({len(on['finals'])} with the pool) | | | | |")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
