"""What the speech gate saves on realistic calls, and what it changes (nothing, it should be).

    .venv/bin/python -m bench.gate [--model lang:ko] [--repeat 3] [--scenario NAME ...]

Each bundled scenario (streamproc/data/scenarios: turn-taking with pauses, holds, monologues) is
rendered by the synth tool in the model's language, through the phone line, with hold music
(a sox-synthesised chord loop on the agent channel, as a media fork hears it) during every hold
and comfort noise at -60 dBFS throughout. The stereo call then runs through the worker's own
:class:`~streamproc.transcribe.Transcriber` in 250 ms frames twice in the same process: speech
gate off (the baseline: every sample decoded) and on. Reported per scenario and in total:

* decoder CPU (thread CPU of ``process_frame``, VAD included when on) and the ratio on/off;
* the share of audio the gate passes to the decoder;
* final transcripts: character error rate (spaces ignored) of each run against the text that was
  spoken, and the median shift of a word's start time against the same word without the gate;
* detection: the alerts (rule ids per speaker) the packaged rules raise on each run's finals.

Each configuration runs ``--repeat`` times; CPU figures are min / median / max.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from streamproc import audio
from streamproc.detect.engine import CallInfo, DetectionEngine
from streamproc.rules import load_rules
from streamproc.schemas import AudioEncoding
from streamproc.scenario import load_scenario
from streamproc.synth import render
from streamproc.transcribe import Transcriber, TranscriberConfig, file_frames, load_model

SCENARIOS = Path(__file__).resolve().parents[1] / "streamproc" / "data" / "scenarios"
RATE = 8000


def hold_music(seconds: float, workdir: Path) -> np.ndarray:
    """A looping four-chord pad, -20 dBFS, 8 kHz: stands in for a queue's hold music."""
    out = workdir / "music.raw"
    chords = [("C4", "E4", "G4"), ("A3", "C4", "E4"), ("F3", "A3", "C4"), ("G3", "B3", "D4")]
    parts = []
    for n, chord in enumerate(chords):
        part = workdir / f"chord{n}.wav"
        subprocess.run(["sox", "-n", "-r", str(RATE), "-c", "1", "-b", "16", str(part), "synth", "2",
                        *[x for note in chord for x in ("pluck", note)], "vol", "0.1"], check=True, capture_output=True)
        parts.append(str(part))
    loop = workdir / "loop.wav"
    subprocess.run(["sox", *parts, str(loop)], check=True, capture_output=True)
    subprocess.run(["sox", str(loop), "-t", "raw", "-e", "signed-integer", "-b", "16", str(out),
                    "repeat", str(int(seconds // 8) + 1), "trim", "0", str(seconds)], check=True, capture_output=True)
    return np.fromfile(out, dtype="<i2")


def realistic_call(path: Path, language: str, workdir: Path) -> tuple[audio.WavAudio, str, dict[str, str]]:
    scenario = load_scenario(path)
    rendered = render(scenario, language, rate=RATE)
    stereo = rendered.samples.astype(np.float32)
    for start, end in rendered.timeline.holds:
        music = hold_music(end - start, workdir).astype(np.float32)
        a = int(start * RATE)
        stereo[a:a + len(music), 0] += music[: len(stereo) - a]
    rng = np.random.default_rng(7)
    stereo += rng.normal(0, 32768 * 10 ** (-60 / 20), stereo.shape)
    pcm = np.clip(np.round(stereo), -32768, 32767).astype("<i2")
    wav = audio.WavAudio(data=pcm.tobytes(), rate=RATE, channels=2, encoding=AudioEncoding.pcm16)
    spoken = {who: " ".join(line.text for line in rendered.timeline.lines if line.speaker == who) for who in ("agent", "customer")}
    return wav, scenario.name, spoken


def run(engine, wav: audio.WavAudio, gate: bool, call_id: str):
    """The call through the live code path (transcribe_wav's frames); its decoder CPU and finals."""
    transcriber = Transcriber(engine, TranscriberConfig(speech_gate=gate))
    cpu = 0.0
    segments = []
    for meta, payload in file_frames(wav):
        result = transcriber.process_frame(call_id, meta, payload)
        cpu += result.cpu_s
        segments += result.segments
    segments += transcriber.end_call(call_id)
    return cpu, [s for s in segments if s.is_final]


def alerts_of(finals) -> list[tuple[str, str]]:
    engine = DetectionEngine(load_rules)
    out = []
    for segment in finals:
        for alert in engine.on_transcript(segment, CallInfo(), now=0.0).alerts:
            out.append((alert.rule_id, segment.speaker.value))
    return sorted(out)


def word_shift(plain, gated) -> float:
    """Median distance from each gated word's start to the same word's nearest start without the gate."""
    starts: dict[tuple[str, str], list[float]] = {}
    for segment in plain:
        for w in segment.words:
            starts.setdefault((segment.speaker.value, w.word), []).append(w.start_s)
    shifts = [min(abs(w.start_s - t) for t in starts[(s.speaker.value, w.word)])
              for s in gated for w in s.words if (s.speaker.value, w.word) in starts]
    return statistics.median(shifts) if shifts else 0.0


def character_error_rate(spoken: dict[str, str], finals) -> float:
    """Over both speakers, spaces and punctuation ignored (Korean word spacing varies freely)."""
    from rapidfuzz.distance import Levenshtein

    def chars(text: str) -> str:
        return "".join(c for c in text.lower() if c.isalnum())

    errors = total = 0
    for who, text in spoken.items():
        heard = chars("".join(s.text for s in finals if s.speaker.value == who))
        errors += Levenshtein.distance(chars(text), heard)
        total += len(chars(text))
    return errors / max(1, total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lang:ko", help="a Vosk model (the gate is the Vosk path's)")
    parser.add_argument("--language", default="ko")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scenario", nargs="*", default=None)
    args = parser.parse_args()
    engine = load_model(args.model)
    if engine.kind != "vosk":
        raise SystemExit("bench.gate measures the Vosk path; Whisper's session always endpoints on the VAD")
    engine.warm_up()
    names = args.scenario or sorted(p.stem for p in SCENARIOS.glob("*.yaml"))
    totals = {False: [0.0] * args.repeat, True: [0.0] * args.repeat}
    audio_s = 0.0
    differences: list[str] = []
    print(f"load average {os.getloadavg()[0]:.1f}; model {args.model}; {args.repeat} runs per configuration\n")
    print("| scenario | audio s | CPU off s (median) | CPU on s (median) | on/off | CER off | CER on | median word shift s | alerts equal |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            wav, title, spoken = realistic_call(SCENARIOS / f"{name}.yaml", args.language, Path(tmp))
            seconds = len(wav.data) / 4 / RATE
            audio_s += seconds
            cpus: dict[bool, list[float]] = {False: [], True: []}
            finals = {}
            for n in range(args.repeat):
                for gate in (False, True):  # interleaved, so drift in machine load hits both alike
                    cpu, got = run(engine, wav, gate, f"{name}-{n}-{gate}")
                    cpus[gate].append(cpu)
                    totals[gate][n] += cpu
                    finals[gate] = got
            cer = {g: character_error_rate(spoken, finals[g]) for g in finals}
            shift = word_shift(finals[False], finals[True])
            alerts = {g: alerts_of(finals[g]) for g in finals}
            same_alerts = alerts[False] == alerts[True]
            if not same_alerts:
                differences.append(f"{title}: gate off {alerts[False]} / on {alerts[True]}")
            off, on = statistics.median(cpus[False]), statistics.median(cpus[True])
            print(f"| {title} | {seconds:.1f} | {off:.2f} | {on:.2f} | {on / off:.2f} | {cer[False]:.2f} | {cer[True]:.2f} | {shift:.3f} | {same_alerts} |")
    off_runs, on_runs = sorted(totals[False]), sorted(totals[True])
    ratios = sorted(b / a for a, b in zip(totals[False], totals[True]))
    print(f"\nall scenarios, {audio_s:.0f} s of stereo audio ({2 * audio_s:.0f} s of speaker streams):")
    print(f"  decoder CPU gate off: min {off_runs[0]:.2f} / median {statistics.median(off_runs):.2f} / max {off_runs[-1]:.2f} s")
    print(f"  decoder CPU gate on:  min {on_runs[0]:.2f} / median {statistics.median(on_runs):.2f} / max {on_runs[-1]:.2f} s")
    print(f"  on/off per run: min {ratios[0]:.2f} / median {statistics.median(ratios):.2f} / max {ratios[-1]:.2f}"
          f"  → {1 / statistics.median(ratios):.2f}× the streams per core")
    print(f"  load average now {os.getloadavg()[0]:.1f}")
    for line in differences:
        print("alerts differ:", line)


if __name__ == "__main__":
    main()
