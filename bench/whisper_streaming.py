"""Streaming Whisper: how to set it, measured on English phone speech (flite, 8 kHz μ-law).

One run, one machine, the same audio for every row:

* **window** — the encoder window per decode: stock Whisper (30 s) against the utterance plus
  2 s padding with a floor of 6/10/15 s. Word error rate and decoder CPU per utterance.
* **raw vs pipeline** — faster-whisper's own ``WhisperModel.transcribe`` on each utterance
  (the baseline, stock settings: 30 s window, greedy) against streamproc's full streaming
  path (``Transcriber.process_frame``: μ-law decode, resampling, VAD, endpointing, partials,
  finals with word times) over the same utterances played as one call: audio seconds per
  CPU second, and the ratio.
* **partial interval** — for 0.5/1/2 s and partials off: CPU per audio second (RTF), the
  share spent on partial re-decodes, and how long after the end of a key phrase its words
  first appear in a stable partial or final (audio time plus decode time: the alert latency
  floor before Kafka hops).
* **streams per core** — ``1 / RTF`` of the pipeline at the chosen defaults, and live: N speaker
  streams of the utterances (1 s pauses, staggered starts) arrive in real time and one decoder
  thread serves them in arrival order, as one worker lane does; lag = segment out − audio in.
  N grows until the p95 lag passes 1 s.

Run: ``python -m bench.whisper_streaming [--quick]``. CPU is process CPU time with one
CTranslate2 thread, so it counts the decoder's own threads too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from streamproc import audio
from streamproc.asr import load_engine
from streamproc.schemas import AudioEncoding, Speaker
from streamproc.transcribe import Transcriber, TranscriberConfig, file_frames
from tests import flite

VOICES = ("slt", "kal16", "awb", "rms")
#: Ordinary call talk plus the phrases the packaged rules look for (key phrase after the bar).
SENTENCES = [
    "Thank you for calling customer support, my name is Sarah. | customer support",
    "I have been charged twice for the same order this month. | charged twice",
    "This is ridiculous, I want to speak to a manager right now. | speak to a manager",
    "If this is not fixed today I am going to cancel my account. | cancel my account",
    "Let me check that for you, can I put you on hold for a moment? | put you on hold",
    "Honestly that is not my problem, you should have read the terms. | not my problem",
    "I will be contacting my lawyer about these charges. | contacting my lawyer",
    "Could you please confirm the last four digits of your card? | of your card",
    "This is the third time I have called about the same issue. | the same issue",
    "I understand your frustration and I am sorry for the trouble. | sorry for the trouble",
    "Your refund will arrive in five to seven business days. | your refund will arrive",
    "Is there anything else I can help you with today? | anything else",
]


def corpus(quick: bool) -> list[tuple[str, str, str, np.ndarray]]:
    voices = VOICES[:2] if quick else VOICES
    items = []
    for line in SENTENCES[: 6 if quick else None]:
        text, key = (part.strip() for part in line.split("|"))
        for voice in voices:
            items.append((text, key, voice, flite.phone_line(text, voice)))
    return items


def as_call(samples: np.ndarray) -> audio.WavAudio:
    return audio.WavAudio(data=audio.encode(samples, AudioEncoding.mulaw), rate=8000, channels=1, encoding=AudioEncoding.mulaw)


def stream(engine, items, *, partial_interval_s: float, gap_s: float = 1.0) -> dict:
    """The utterances as one mono call through the live code path; phrase latency per utterance."""
    silence = np.zeros(int(8000 * gap_s), dtype=np.int16)
    pieces, spans, at = [silence], [], gap_s
    for _, _, _, samples in items:
        pieces += [samples, silence]
        spans.append((at, at + len(samples) / 8000))
        at += len(samples) / 8000 + gap_s
    wav = as_call(np.concatenate(pieces))
    transcriber = Transcriber(engine, TranscriberConfig(partial_interval_s=partial_interval_s, max_sessions=2))
    started_cpu, started = time.process_time(), time.perf_counter()
    decode = {"partial": 0.0, "final": 0.0}
    seen: list[tuple[float, str, bool, float, float]] = []  # (audio fed, text, final, decode s of that frame, segment start)
    for meta, payload in file_frames(wav, frame_ms=250, speaker=Speaker.customer):
        frame_started = time.perf_counter()
        result = transcriber.process_frame("bench", meta, payload)
        spent = time.perf_counter() - frame_started
        for kind, seconds in result.decode.seconds.items():
            decode[kind] = decode.get(kind, 0.0) + seconds
        for segment in result.segments:
            seen.append(((meta.offset_ms + 250) / 1000, segment.text, segment.is_final, spent, segment.start_s or 0.0))
    for segment in transcriber.end_call("bench"):
        seen.append((at, segment.text, True, 0.0, segment.start_s or 0.0))
    cpu = time.process_time() - started_cpu
    latencies = []
    for (text, key, _, _), (begin, end) in zip(items, spans):
        key_words = flite.words(key)
        for fed_s, seg_text, _final, spent, seg_start in seen:
            heard = flite.words(seg_text)
            # Only this sentence's own segments: a misheard phrase is a miss, not a late hit in the next one.
            if begin - 0.5 <= seg_start <= end and any(heard[i:i + len(key_words)] == key_words for i in range(len(heard))):
                # The segment existed once the frame ending at fed_s was decoded; phrase ended at `end` (±its tail).
                latencies.append(max(0.0, fed_s - end) + spent)
                break
        else:
            latencies.append(float("nan"))
    audio_s = at
    finals = [text for _, text, final, *_ in seen if final]
    found = [x for x in latencies if x == x]
    return {
        "partial_interval_s": partial_interval_s,
        "audio_s": round(audio_s, 1),
        "cpu_s": round(cpu, 2),
        "wall_s": round(time.perf_counter() - started, 2),
        "rtf": round(cpu / audio_s, 3),
        "partial_decode_share": round(decode.get("partial", 0.0) / max(1e-9, sum(decode.values())), 2),
        "phrases_found": f"{len(found)}/{len(items)}",
        "phrase_latency_p50_s": round(statistics.median(found), 2) if found else None,
        "phrase_latency_p95_s": round(float(np.percentile(found, 95)), 2) if found else None,
        "wer": round(flite.wer(" ".join(t for t, *_ in items), " ".join(finals)), 3),
    }


def window_rows(items, windows) -> list[dict]:
    from streamproc.audio import Upsampler

    rows = []
    for window in windows:
        engine = load_engine("lang:en", workers=1, whisper_min_window_s=window)
        engine.warm_up()
        errors, cpu = [], 0.0
        for text, _, _, samples in items:
            pcm16k = Upsampler().process(samples)  # only the encoder window differs between rows
            started = time.process_time()
            decoded = engine.decode(pcm16k.astype(np.float32) / 32768.0, words=True)
            cpu += time.process_time() - started
            errors.append(flite.wer(text, decoded.text))
        rows.append({"min_window_s": window, "wer": round(statistics.mean(errors), 3),
                     "cpu_per_utterance_s": round(cpu / len(items), 3)})
    return rows


def raw_baseline(items) -> dict:
    """faster-whisper's own transcribe() per utterance, stock settings (30 s window, greedy, word times)."""
    from faster_whisper import WhisperModel

    from streamproc.asr import resolve_model
    from streamproc.audio import Upsampler

    model = WhisperModel(str(resolve_model("lang:en").path), device="cpu", compute_type="int8", cpu_threads=1)
    prepared = [Upsampler().process(samples).astype(np.float32) / 32768.0 for *_, samples in items]
    list(model.transcribe(prepared[0], language="en", beam_size=1)[0])  # warm up
    started = time.process_time()
    errors = []
    for (text, *_), pcm in zip(items, prepared):
        segments, _ = model.transcribe(pcm, language="en", beam_size=1, word_timestamps=True,
                                       condition_on_previous_text=False, vad_filter=False)
        errors.append(flite.wer(text, " ".join(s.text for s in segments)))
    cpu = time.process_time() - started
    speech_s = sum(len(p) for p in prepared) / 16000
    return {"cpu_s": round(cpu, 2), "speech_s": round(speech_s, 1), "wer": round(statistics.mean(errors), 3)}


def realtime(engine, items, streams: int, duration_s: float = 40.0) -> dict:
    """``streams`` real-time speaker streams on one decoder thread: p50/p95 of audio-in → segment-out lag."""
    import heapq

    silence = np.zeros(8000, dtype=np.int16)
    transcriber = Transcriber(engine, TranscriberConfig(max_sessions=streams + 1))
    frames = []  # (due, stream, meta, payload)
    for n in range(streams):
        order = items[n % len(items):] + items[: n % len(items)]
        pieces, total = [], 0.0
        for _, _, _, samples in order:
            pieces += [samples, silence]
            total += len(samples) / 8000 + 1.0
            if total >= duration_s:
                break
        wav = as_call(np.concatenate(pieces))
        offset = n * 1.0 / max(1, streams)  # staggered, like calls that did not start together
        for meta, payload in file_frames(wav, frame_ms=250, speaker=Speaker.customer):
            heapq.heappush(frames, (offset + (meta.offset_ms + 250) / 1000, n, meta, payload))
    lags, started, cpu0 = [], time.perf_counter(), time.process_time()
    while frames:
        due, n, meta, payload = heapq.heappop(frames)
        wait = started + due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        result = transcriber.process_frame(f"s{n}", meta, payload)
        if result.segments:
            lags.append(time.perf_counter() - (started + due))
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - started
    return {"streams": streams, "segments": len(lags), "lag_p50_s": round(float(np.percentile(lags, 50)), 2),
            "lag_p95_s": round(float(np.percentile(lags, 95)), 2), "cpu_per_wall_s": round(cpu / wall, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="6 sentences × 2 voices instead of 12 × 4")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    items = corpus(args.quick)
    report: dict = {"utterances": len(items), "voices": sorted({v for _, _, v, _ in items})}
    report["window"] = window_rows(items, [30.0, 15.0, 10.0, 6.0])
    report["raw"] = raw_baseline(items)
    engine = load_engine("lang:en", workers=1, whisper_min_window_s=10.0)
    engine.warm_up()
    report["partials"] = [stream(engine, items, partial_interval_s=p) for p in (0.5, 1.0, 2.0, 3600.0)]
    default = next(r for r in report["partials"] if r["partial_interval_s"] == 0.5)
    no_partials = report["partials"][-1]
    speech_s = report["raw"]["speech_s"]
    # Same speech decoded: raw sees only the utterances; the pipeline also reads the silence between them.
    same = next(r for r in report["window"] if r["min_window_s"] == 10.0)
    same_cpu = same["cpu_per_utterance_s"] * len(items)
    report["pipeline_vs_raw"] = {
        # Baseline 1: the engine's decoder alone, each utterance once, cut exactly (same settings).
        "raw_same_decoder_cpu_s": round(same_cpu, 2),
        "ratio_finals_only_vs_same_decoder": round(same_cpu / no_partials["cpu_s"], 2),
        # Baseline 2: stock faster-whisper transcribe() (30 s window).
        "raw_speech_s_per_cpu_s": round(speech_s / report["raw"]["cpu_s"], 2),
        "pipeline_finals_only_speech_s_per_cpu_s": round(speech_s / no_partials["cpu_s"], 2),
        "ratio_finals_only": round(report["raw"]["cpu_s"] / no_partials["cpu_s"], 2),
        "pipeline_default_speech_s_per_cpu_s": round(speech_s / default["cpu_s"], 2),
        "ratio_default": round(report["raw"]["cpu_s"] / default["cpu_s"], 2),
    }
    report["streams_per_core_default"] = round(1 / default["rtf"], 1) if default["rtf"] else None
    report["realtime"] = []
    for streams in (2, 4, 6, 8, 10, 12):
        row = realtime(engine, items, streams, duration_s=20.0 if args.quick else 40.0)
        report["realtime"].append(row)
        if row["lag_p95_s"] > 1.0:
            break
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{report['utterances']} utterances, voices {', '.join(report['voices'])}, 8 kHz μ-law\n")
    print("| encoder window | WER | CPU per utterance |\n|---|---|---|")
    for row in report["window"]:
        label = "stock 30 s" if row["min_window_s"] >= 30 else f"utterance + 2 s, ≥ {row['min_window_s']:.0f} s"
        print(f"| {label} | {row['wer']:.3f} | {row['cpu_per_utterance_s']:.3f} s |")
    raw = report["raw"]
    print(f"\nraw faster-whisper transcribe(): WER {raw['wer']:.3f}, {raw['cpu_s']} CPU s for {raw['speech_s']} s of speech")
    print("\n| partial interval | RTF (CPU/audio) | partial share of decode | phrases | phrase → text p50 | p95 |\n|---|---|---|---|---|---|")
    for row in report["partials"]:
        label = "off (finals only)" if row["partial_interval_s"] > 100 else f"{row['partial_interval_s']} s"
        print(f"| {label} | {row['rtf']} | {row['partial_decode_share']} | {row['phrases_found']} | "
              f"{row['phrase_latency_p50_s']} s | {row['phrase_latency_p95_s']} s |")
    print("\n| live speaker streams on one decoder thread | lag p50 | lag p95 | process CPU / wall |\n|---|---|---|---|")
    for row in report["realtime"]:
        print(f"| {row['streams']} | {row['lag_p50_s']} s | {row['lag_p95_s']} s | {row['cpu_per_wall_s']} |")
    ratio = report["pipeline_vs_raw"]
    print(f"\npipeline (finals only) vs the same decoder on pre-cut utterances: ×{ratio['ratio_finals_only_vs_same_decoder']}")
    print(f"pipeline vs stock faster-whisper (same speech): finals only ×{ratio['ratio_finals_only']}, default partials ×{ratio['ratio_default']}"
          f"; streams per core at the defaults ≈ {report['streams_per_core_default']}")


if __name__ == "__main__":
    main()
