"""Render a call scenario to audio: a stereo WAV (agent left, customer right) plus JSONL files.

``synthesize`` writes three files next to each other:

- ``NAME.wav``: stereo (channel 0 agent, channel 1 customer) at 8 or 16 kHz, 16-bit PCM or
  G.711 μ-law (``encoding``);
- ``NAME.events.jsonl``: the call events, one JSON object a line, each with ``offset_s``
  (seconds into the audio) and the event's fields except ``ts`` (replay stamps it);
- ``NAME.script.jsonl``: the scripted lines with speaker, start/end seconds and text,
  used instead of ASR when no speech model is available (TranscriptSegment source "script").

Speech comes from flite (English: ``flite:slt``, ``flite:kal16``, ``flite:awb``, ``flite:rms``)
or espeak-ng (every other voice name, e.g. ``ko+f2``; ``espeak:NAME`` says it explicitly), a
voice per language and side, or from any command the user configures (``--tts-command`` /
``STREAMPROC_TTS_COMMAND``) that writes a WAV; sox converts whatever it produces to mono
16-bit at the target rate. By default the mixed call then goes through a phone line: sox
encodes it as 8 kHz G.711 μ-law and decodes it again (band limit + companding noise), so the
recogniser hears what it would hear from a contact center's media fork.
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

from .scenario import FLITE_VOICES, Say, Scenario, Timeline, TimedLine, parse_voice, resolve  # noqa: F401 (re-exported)

#: Voices per language and side; any other language uses its espeak-ng voice (its code) for both.
DEFAULT_VOICES = {
    "en": {"agent": "flite:kal16", "customer": "flite:slt"},
    "ko": {"agent": "ko", "customer": "ko+f2"},
}
PHONE_RATE = 8000  # G.711 narrowband: what a phone line carries
ENCODINGS = ("pcm16", "mulaw")
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
            try:
                engine, name = parse_voice(voice)
            except ValueError as exc:
                raise SynthError(str(exc)) from None
            if engine == "flite":
                # speed (words a minute, espeak's scale, default 175) → flite's duration stretch
                stretch = ["--setf", f"duration_stretch={175 / speed:.3f}"] if speed is not None else []
                argv = [_require("flite"), "-voice", name, *stretch, "-t", text, "-o", str(raw)]
            else:
                argv = [_require("espeak-ng"), "-v", name, *(["-p", str(pitch)] if pitch is not None else []),
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


def phone_line(samples: np.ndarray, rate: int) -> np.ndarray:
    """What a phone line does to int16 audio (mono or stereo): sox encodes it as 8 kHz G.711 μ-law
    and decodes it back to 16-bit at ``rate`` (band limit below 4 kHz, μ-law companding noise)."""
    sox = _require("sox")
    with tempfile.TemporaryDirectory(prefix="streamproc-line-") as tmp:
        clean, line, back = Path(tmp) / "clean.wav", Path(tmp) / "line.wav", Path(tmp) / "back.wav"
        write_wav(clean, samples, rate)
        for argv in ([sox, "-D", str(clean), "-r", str(PHONE_RATE), "-e", "u-law", "-b", "8", str(line)],
                     [sox, "-D", str(line), "-r", str(rate), "-e", "signed-integer", "-b", "16", str(back)]):
            result = subprocess.run(argv, capture_output=True, timeout=120)
            if result.returncode != 0:
                raise SynthError(f"sox could not pass the call through a phone line: {result.stderr.decode(errors='replace')[-500:]}")
        with wave.open(str(back)) as handle:
            out = np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2").reshape(-1, handle.getnchannels())
    out = out if samples.ndim == 2 else out[:, 0]
    if len(out) < len(samples):  # resampling may lose a sample at the end: keep the timeline's length
        out = np.concatenate([out, np.zeros((len(samples) - len(out),) + out.shape[1:], np.int16)])
    return np.ascontiguousarray(out[: len(samples)])


def render(scenario: Scenario, language: str | None = None, *, rate: int = 16000, tts_command: str | None = None,
           phone: bool = True) -> Rendered:
    """Speak every line, lay the lines on the call's clock and mix a stereo track
    (passed through an 8 kHz μ-law phone line unless ``phone`` is False)."""
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
    mixed = np.clip(np.round(stereo), -32768, 32767).astype(np.int16)
    return Rendered(phone_line(mixed, rate) if phone else mixed, rate, timeline)


def write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(channels)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(samples.astype("<i2").tobytes())


def write_mulaw_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    """A G.711 μ-law WAV (format tag 7, 8 bits a sample), encoded with streamproc.audio's tables (sox's)."""
    import struct

    from .audio import encode
    from .schemas import AudioEncoding

    channels = 1 if samples.ndim == 1 else samples.shape[1]
    data = encode(np.ascontiguousarray(samples, dtype=np.int16).reshape(-1), AudioEncoding.mulaw)
    fmt = struct.pack("<HHIIHHH", 7, channels, rate, rate * channels, channels, 8, 0)  # cbSize 0: non-PCM needs it
    fact = struct.pack("<I", len(data) // channels)
    pad = b"\0" if len(data) % 2 else b""
    body = (b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"fact" + struct.pack("<I", 4) + fact
            + b"data" + struct.pack("<I", len(data)) + data + pad)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


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
               tts_command: str | None = None, call_id: str | None = None, encoding: str = "pcm16",
               phone: bool = True) -> SynthFiles:
    """Render and write the WAV (``encoding`` pcm16 or mulaw) and its events and script files."""
    if encoding not in ENCODINGS:
        raise SynthError(f"encoding must be one of {', '.join(ENCODINGS)}, not {encoding!r}")
    rendered = render(scenario, language, rate=rate, tts_command=tts_command, phone=phone)
    out_wav.parent.mkdir(parents=True, exist_ok=True)
    (write_mulaw_wav if encoding == "mulaw" else write_wav)(out_wav, rendered.samples, rate)
    events, script = companion_paths(out_wav)
    write_jsonl(events, event_records(rendered.timeline, call_id or out_wav.stem))
    write_jsonl(script, script_records(rendered.timeline))
    return SynthFiles(out_wav, events, script, rendered.timeline.duration_s, rendered.timeline.language)
