"""Render a call scenario to audio: a stereo WAV (agent left, customer right) plus JSONL files.

``synthesize`` writes three files next to each other:

- ``NAME.wav``: 16-bit PCM stereo (channel 0 agent, channel 1 customer) at 8 or 16 kHz;
- ``NAME.events.jsonl``: the call events, one JSON object a line, each with ``offset_s``
  (seconds into the audio) and the event's fields except ``ts`` (replay stamps it);
- ``NAME.script.jsonl``: the scripted lines with speaker, start/end seconds and text,
  used instead of ASR when no speech model is available (TranscriptSegment source "script").

Speech comes from espeak-ng (a voice per language and side), or from any command the user
configures (``--tts-command`` / ``STREAMPROC_TTS_COMMAND``) that writes a WAV; sox
converts whatever it produces to mono 16-bit at the target rate.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .scenario import Say, Scenario, Timeline, TimedLine, resolve

#: espeak-ng voices per language and side; any other language uses its code for both.
DEFAULT_VOICES = {
    "en": {"agent": "en-us+m3", "customer": "en-us+f3"},
    "ko": {"agent": "ko", "customer": "ko+f2"},
}
BASE_LEVEL = 0.5  # -6 dBFS headroom, so a line's gain_db (shouting) has room before clipping


class SynthError(RuntimeError):
    """TTS or sox missing or failing."""


@dataclass(frozen=True)
class Rendered:
    samples: np.ndarray  # int16, shape (n, 2): agent, customer
    rate: int
    timeline: Timeline


@dataclass(frozen=True)
class SynthFiles:
    wav: Path
    events: Path
    script: Path
    duration_s: float
    language: str | None


def voice_for(scenario: Scenario, speaker: str, language: str | None) -> str:
    participant = getattr(scenario.participants, speaker)
    lang = language or "en"
    if lang in participant.voice:
        return participant.voice[lang]
    return DEFAULT_VOICES.get(lang, {}).get(speaker, lang)


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise SynthError(f"{tool} is not installed (apt-get install {tool}); it is needed to synthesize speech")
    return path


def tts(text: str, *, voice: str, rate: int, language: str | None = None, pitch: int | None = None,
        speed: int | None = None, command: str | None = None) -> np.ndarray:
    """Speak ``text``; return mono int16 samples at ``rate``.

    ``command`` is a template such as ``"mytts --voice {voice} --out {out} {text}"``; it is
    split like a shell line (no shell runs) and the placeholders {text} {voice} {lang}
    {out} are filled in. Without {out} the command must write the WAV to stdout.
    """
    sox = _require("sox")
    with tempfile.TemporaryDirectory(prefix="streamproc-tts-") as tmp:
        raw = Path(tmp) / "tts.wav"
        if command:
            values = {"text": text, "voice": voice, "lang": language or "", "out": str(raw)}
            argv = [part.format(**values) for part in shlex.split(command)]
            writes_file = "{out}" in command
        else:
            argv = [_require("espeak-ng"), "-v", voice, *(["-p", str(pitch)] if pitch is not None else []),
                    *(["-s", str(speed)] if speed is not None else []), "-w", str(raw), text]
            writes_file = True
        try:
            result = subprocess.run(argv, capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SynthError(f"TTS command {argv[0]!r} failed: {exc}") from None
        if result.returncode != 0:
            raise SynthError(f"TTS command {argv[0]!r} exited {result.returncode}: {result.stderr.decode(errors='replace')[-500:]}")
        if not writes_file:
            raw.write_bytes(result.stdout)
        converted = Path(tmp) / "out.wav"
        conv = subprocess.run([sox, str(raw), "-r", str(rate), "-c", "1", "-b", "16", "-e", "signed-integer", str(converted)], capture_output=True, timeout=60)
        if conv.returncode != 0:
            raise SynthError(f"sox could not convert the TTS output: {conv.stderr.decode(errors='replace')[-500:]}")
        with wave.open(str(converted)) as handle:
            return np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2").copy()


def _place(track: np.ndarray, samples: np.ndarray, start: int, gain_db: float) -> None:
    """Mix ``samples`` into ``track`` (float) at ``start``, with the base level and the line's gain."""
    scaled = samples.astype(np.float32) * BASE_LEVEL * (10 ** (gain_db / 20))
    end = min(len(track), start + len(scaled))
    track[start:end] += scaled[: end - start]


def render(scenario: Scenario, language: str | None = None, *, rate: int = 16000, tts_command: str | None = None) -> Rendered:
    """Speak every line, lay the lines on the call's clock and mix a stereo track."""
    if rate not in (8000, 16000):
        raise SynthError(f"rate must be 8000 or 16000, not {rate}")
    language = language if language is not None else scenario.pick_language(["en"])
    spoken: dict[int, np.ndarray] = {}

    def measure(index: int, line: TimedLine) -> float:
        step = scenario.timeline[index]
        assert isinstance(step, Say)
        participant = getattr(scenario.participants, step.say)
        audio = tts(line.text, voice=voice_for(scenario, step.say, language), rate=rate, language=language,
                    pitch=participant.pitch.get(language or ""), speed=participant.speed.get(language or ""), command=tts_command)
        spoken[line.index] = audio
        return len(audio) / rate

    timeline = resolve(scenario, language, measure)
    total = int(round(timeline.duration_s * rate))
    tracks = {"agent": np.zeros(total, np.float32), "customer": np.zeros(total, np.float32)}
    for line in timeline.lines:
        audio = spoken.get(line.index)
        if audio is None:  # pinned duration: still speak it, cut to the pinned length
            audio = np.zeros(0, np.int16)
        length = int(round((line.end_s - line.start_s) * rate))
        _place(tracks[line.speaker], audio[:length], int(round(line.start_s * rate)), line.gain_db)
    stereo = np.stack([tracks["agent"], tracks["customer"]], axis=1)
    return Rendered(np.clip(np.round(stereo), -32768, 32767).astype(np.int16), rate, timeline)


def write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(channels)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(samples.astype("<i2").tobytes())


def event_records(timeline: Timeline, call_id: str) -> list[dict]:
    return [{"offset_s": event.offset_s, "type": event.type, "call_id": call_id} | event.fields for event in timeline.events]


def script_records(timeline: Timeline) -> list[dict]:
    return [
        {"speaker": line.speaker, "start_s": line.start_s, "end_s": line.end_s, "text": line.text, "language": timeline.language}
        for line in timeline.lines
    ]


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records), encoding="utf-8")


def companion_paths(wav: Path) -> tuple[Path, Path]:
    """The events and script files that belong to a WAV (``x.wav`` → ``x.events.jsonl``, ``x.script.jsonl``)."""
    stem = wav.with_suffix("")
    return stem.with_name(stem.name + ".events.jsonl"), stem.with_name(stem.name + ".script.jsonl")


def synthesize(scenario: Scenario, out_wav: Path, language: str | None = None, *, rate: int = 16000,
               tts_command: str | None = None, call_id: str | None = None) -> SynthFiles:
    rendered = render(scenario, language, rate=rate, tts_command=tts_command)
    out_wav.parent.mkdir(parents=True, exist_ok=True)
    write_wav(out_wav, rendered.samples, rate)
    events, script = companion_paths(out_wav)
    write_jsonl(events, event_records(rendered.timeline, call_id or out_wav.stem))
    write_jsonl(script, script_records(rendered.timeline))
    return SynthFiles(out_wav, events, script, rendered.timeline.duration_s, rendered.timeline.language)
