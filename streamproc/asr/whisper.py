"""The Whisper engine: faster-whisper's CTranslate2 model, made to stream.

Whisper decodes a whole window of audio at once; it has no streaming state. Streaming is
built around it, per speaker channel:

- **Endpointing** by voice activity (:class:`~streamproc.asr.vad.StreamingVad`, Silero):
  an utterance opens at the first speech window (with a little audio before it) and
  closes after ``endpoint_silence_s`` of non-speech.
- **Final**: the whole utterance is decoded once at its endpoint, with word timestamps.
- **Partials**: while the utterance is open, it is re-decoded every ``partial_interval_s``
  of audio; only the word prefix that two consecutive hypotheses agree on is emitted
  (LocalAgreement-2), so a phrase rule can fire before the speaker stops talking, on
  words that no longer change.
- **Forced cut**: an utterance longer than ``max_utterance_s`` is finalised at its
  quietest point in the last seconds, and the rest starts the next utterance.

Cost: Whisper's encoder normally always sees a 30 s window (~0.7 s CPU for tiny.en here,
whatever the utterance length). CTranslate2 accepts a shorter encoder input, so the window
is cut to the utterance plus ``WINDOW_TAIL_S`` of padding, never below ``min_window_s``;
bench/whisper_streaming.py measured the word error rate and CPU of each choice
(docs/performance.md). Decoder time per kind (partial/final) is reported to metrics.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .. import audio
from ..schemas import Speaker, TranscriptSegment, Word
from .batching import DecodeBatcher
from .base import DecodeStats, DecodeStatsMixin, SessionConfig, Timeline, make_segment
from .models import ModelError, ModelSpec
from .gate import SpeechHysteresis
from .vad import WINDOW, WINDOW_S, StreamingVad

log = logging.getLogger(__name__)

RATE = audio.RECOGNIZER_RATE
FRAMES_PER_S = 100  # Whisper's mel frames per second (hop 160 at 16 kHz)
MAX_WINDOW_S = 30.0
#: Silence padding after the speech in the encoder window; less makes tiny.en garble the last words.
WINDOW_TAIL_S = 2.0
PREROLL_S = 0.3  # audio kept before the first speech window, so the first phoneme is not clipped
NO_SPEECH_PROB = 0.6  # with a low average log-probability: Whisper heard no speech (its own rule)
LOW_LOGPROB = -1.0
FORCED_CUT_SEARCH_S = 3.0  # a long utterance is cut at its quietest window within this tail


@dataclass
class Decoded:
    text: str
    words: list[dict]  # {"word", "start", "end", "probability"}, seconds from the window start
    no_speech_prob: float
    avg_logprob: float
    tokens: list[int] = dataclasses.field(default_factory=list)
    batch_size: int = 1  # how many utterances shared the model call


def _normalise(word: str) -> str:
    return re.sub(r"[^\w']", "", word.lower())


def agreed_prefix(previous: list[str], current: list[str]) -> int:
    """How many leading words two hypotheses share (case and punctuation ignored)."""
    count = 0
    for a, b in zip(previous, current):
        if _normalise(a) != _normalise(b):
            break
        count += 1
    return count


class WhisperEngine:
    kind = "whisper"

    def __init__(self, spec: ModelSpec, *, workers: int = 2, min_window_s: float = 10.0, device: str = "cpu", batch_size: int = 1):
        try:
            from faster_whisper import WhisperModel
            from faster_whisper.tokenizer import Tokenizer
        except ImportError as exc:  # pragma: no cover - a dependency
            raise ModelError(f"the Whisper engine needs faster-whisper ({exc})") from None
        started = time.perf_counter()
        try:
            # cpu_threads=1 per decode, `workers` decodes in parallel (one per decoder thread).
            self.model = WhisperModel(
                str(spec.path), device=device, compute_type="int8" if device == "cpu" else "float16",
                cpu_threads=1, num_workers=max(1, workers), local_files_only=True,
            )
        except Exception as exc:  # ctranslate2 raises RuntimeError/ValueError with its own text
            raise ModelError(f"faster-whisper could not load the model at {spec.path}: {exc}") from None
        multilingual = self.model.model.is_multilingual
        self.language = spec.language or ("en" if not multilingual else None)
        if multilingual and self.language is None:
            raise ModelError(f"{spec.path} is a multilingual Whisper model: say its language (STREAMPROC_ASR_LANGUAGE)")
        self.tokenizer = Tokenizer(
            self.model.hf_tokenizer, multilingual, task="transcribe", language=self.language if multilingual else None
        )
        self.prompt = [*self.tokenizer.sot_sequence, self.tokenizer.no_timestamps]
        self.min_window_s = min(MAX_WINDOW_S, max(1.0, min_window_s))
        self.description = spec.description
        self._feature_lock = threading.Lock()
        self.device = device
        # Decodes from different decoder threads run as one batched model call (see asr/batching.py).
        self._batcher = DecodeBatcher(self.decode_batch, max_batch=batch_size) if batch_size > 1 else None
        log.info("loaded Whisper model %s on %s in %.1f s%s", spec.path, device, time.perf_counter() - started,
                 f" (decodes batched up to {batch_size})" if batch_size > 1 else "")

    def new_session(self, call_id: str, speaker: Speaker, start_s: float, config: SessionConfig, now: float) -> "WhisperSession":
        return WhisperSession(self, call_id, speaker, start_s, config, now)

    def warm_up(self, recognizers: int = 1) -> None:  # no per-stream decoders to build
        self.decode(np.zeros(RATE, dtype=np.float32), words=True)
        StreamingVad().process(np.zeros(WINDOW * 4, dtype=np.float32))

    def window_frames(self, samples: int) -> int:
        content_s = samples / RATE
        window_s = min(MAX_WINDOW_S, max(self.min_window_s, math.ceil(content_s + WINDOW_TAIL_S)))
        return int(window_s * FRAMES_PER_S)

    def decode(self, samples: np.ndarray, *, words: bool) -> Decoded:
        """Decode one utterance (16 kHz float32, ≤ 30 s): greedy, no timestamps tokens, optional word times.

        With batching on, the call waits to share one batched model call with other decoder threads."""
        if self._batcher is None:
            return self.decode_batch([(samples, words)])[0]
        decoded, size = self._batcher.submit((samples, words))
        return dataclasses.replace(decoded, batch_size=size)

    def decode_batch(self, requests: Sequence[tuple[np.ndarray, bool]]) -> list[Decoded]:
        """Decode several utterances in one encoder and one decoder call (``(samples, words)`` each).

        Each utterance gets the encoder window it would get alone (``window_frames``) padded with
        zeros to the batch's longest; word times are aligned per utterance on its own frames."""
        from faster_whisper.transcribe import get_ctranslate2_storage

        clipped = [samples[: int(MAX_WINDOW_S * RATE)] for samples, _ in requests]
        with self._feature_lock:  # the feature extractor keeps per-call state
            features = [self.model.feature_extractor(samples) for samples in clipped]
        content = [min(f.shape[-1], int(MAX_WINDOW_S * FRAMES_PER_S)) for f in features]
        frames = max(self.window_frames(len(samples)) for samples in clipped)
        batch = np.zeros((len(requests), features[0].shape[0], frames), dtype=np.float32)
        for row, (f, n) in enumerate(zip(features, content)):
            batch[row, :, :n] = f[:, :n]
        encoder_output = self.model.model.encode(get_ctranslate2_storage(batch), to_cpu=False)
        results = self.model.model.generate(
            encoder_output, [self.prompt] * len(requests), beam_size=1, max_length=224, return_scores=True,
            return_no_speech_prob=True, suppress_blank=True, suppress_tokens=[-1],
        )
        decoded: list[Decoded] = []
        align_rows: list[int] = []
        for row, result in enumerate(results):
            tokens = [t for t in result.sequences_ids[0] if t < self.tokenizer.eot]
            avg_logprob = result.scores[0] / max(1, len(tokens) + 1)
            if not tokens or (result.no_speech_prob > NO_SPEECH_PROB and avg_logprob < LOW_LOGPROB):
                decoded.append(Decoded("", [], result.no_speech_prob, avg_logprob))
                continue
            decoded.append(Decoded(self.tokenizer.decode(tokens).strip(), [], result.no_speech_prob, avg_logprob, tokens))
            if requests[row][1]:
                align_rows.append(row)
        if align_rows:
            # One alignment call for the whole encoder batch; rows that want no word times get a
            # one-token stand-in (re-encoding a subset would cost more than aligning it).
            stand_in = [self.tokenizer.eot]
            text_tokens = [decoded[row].tokens if row in align_rows else stand_in for row in range(len(requests))]
            aligned = self.model.find_alignment(self.tokenizer, text_tokens, encoder_output, content)
            for row in align_rows:
                decoded[row].words = [w for w in aligned[row] if w["word"].strip()]
        return decoded


class WhisperSession(DecodeStatsMixin):
    """Streaming Whisper for one speaker of one call (see the module docstring)."""

    def __init__(self, engine: WhisperEngine, call_id: str, speaker: Speaker, start_s: float, config: SessionConfig, now: float):
        self.engine = engine
        self.call_id = call_id
        self.speaker = speaker
        self.config = config
        self.vad = StreamingVad()
        self.hysteresis = SpeechHysteresis(config.vad_threshold)
        self.timeline = Timeline(start_s)
        self.utterance = 0
        self.revision = 0
        self.last_activity = now
        self.received_at = now
        self._preroll: list[np.ndarray] = []
        self._windows: list[np.ndarray] = []  # the open utterance, in VAD windows
        self._probs: list[float] = []
        self._utterance_start_s: float | None = None  # None: no utterance open
        self._silence_windows = 0
        self._since_partial = 0
        self._hypothesis: list[str] = []
        self._stable = 0  # words of the open utterance already emitted as stable
        self._stats = DecodeStats()

    # -- contract
    def skip(self, seconds: float) -> None:
        self.timeline.skip(seconds)

    def pending_since_s(self) -> float | None:
        if self._utterance_start_s is not None:
            return self._utterance_start_s
        # The pre-roll may hold the start of speech the VAD has not confirmed yet.
        return self.timeline.now_s - len(self._preroll) * WINDOW_S if self._preroll else None

    def feed(
        self, samples16k: np.ndarray, received_at: float, now: float, speech: bool = False, partial: bool = True
    ) -> list[TranscriptSegment]:
        self.last_activity = now
        self.received_at = received_at
        windows, probs = self.vad.process(samples16k.astype(np.float32) / 32768.0)
        segments: list[TranscriptSegment] = []
        endpoint_windows = max(1, round(self.config.endpoint_silence_s / WINDOW_S))
        max_windows = max(8, round(self.config.max_utterance_s / WINDOW_S))
        for window, prob in zip(windows, probs):
            window_start_s = self.timeline.now_s
            self.timeline.advance(WINDOW, RATE)
            speech = self.hysteresis.step(float(prob))
            if self._utterance_start_s is None:
                if not speech:
                    self._preroll.append(window)
                    del self._preroll[: -max(1, round(PREROLL_S / WINDOW_S))]
                    continue
                self._utterance_start_s = window_start_s - len(self._preroll) * WINDOW_S
                self._windows, self._probs = list(self._preroll), [0.0] * len(self._preroll)
                self._preroll = []
            self._windows.append(window)
            self._probs.append(float(prob))
            self._since_partial += 1
            self._silence_windows = 0 if speech else self._silence_windows + 1
            if self._silence_windows >= endpoint_windows:
                segments += self._finalise(len(self._windows), now)
            elif len(self._windows) >= max_windows:
                segments += self._finalise(self._cut_point(), now)
        due = self._since_partial * WINDOW_S >= self.config.partial_interval_s
        if partial and due and self._utterance_start_s is not None:
            segments += self._partial(now)
        return segments

    def finish(self, now: float) -> list[TranscriptSegment]:
        if self._utterance_start_s is None:
            return []
        return self._finalise(len(self._windows), now)

    # -- decoding
    def _cut_point(self) -> int:
        """Index to cut a too-long utterance at: its quietest window within the last few seconds."""
        search = max(1, round(FORCED_CUT_SEARCH_S / WINDOW_S))
        tail = self._probs[-search:]
        return len(self._probs) - len(tail) + int(np.argmin(tail)) + 1

    def _timed_decode(self, kind: str, windows: list[np.ndarray], words: bool) -> Decoded:
        started = time.perf_counter()
        decoded = self.engine.decode(np.concatenate(windows), words=words)
        self._stats.add(kind, time.perf_counter() - started, decoded.batch_size)
        return decoded

    def _partial(self, now: float) -> list[TranscriptSegment]:
        self._since_partial = 0
        decoded = self._timed_decode("partial", self._windows, words=False)
        current = decoded.text.split()
        agreed = agreed_prefix(self._hypothesis, current)
        self._hypothesis = current
        if agreed <= self._stable:
            return []
        self._stable = agreed
        start = self._utterance_start_s or 0.0
        segment = make_segment(
            call_id=self.call_id, speaker=self.speaker, utterance=self.utterance, revision=self.revision,
            is_final=False, text=" ".join(current[:agreed]), words=[], received_at=self.received_at, now=now,
            span=(start, start + len(self._windows) * WINDOW_S),
        )
        self.revision += 1
        return [segment]

    def _finalise(self, cut: int, now: float) -> list[TranscriptSegment]:
        start = self._utterance_start_s or 0.0
        head, rest = self._windows[:cut], self._windows[cut:]
        decoded = self._timed_decode("final", head, words=True)
        had_partials = self.revision > 0
        segments: list[TranscriptSegment] = []
        if decoded.text or had_partials:
            words = [
                Word(
                    word=w["word"].strip(),
                    start_s=round(start + float(w["start"]), 3),
                    end_s=round(start + float(w["end"]), 3),
                    conf=min(1.0, max(0.0, float(w.get("probability", 1.0)))),
                )
                for w in decoded.words
            ]
            segments.append(
                make_segment(
                    call_id=self.call_id, speaker=self.speaker, utterance=self.utterance, revision=self.revision,
                    is_final=True, text=decoded.text, words=words, received_at=self.received_at, now=now,
                    span=(start, start + len(head) * WINDOW_S),
                )
            )
            self.utterance += 1
        self.revision = 0
        self._hypothesis, self._stable, self._since_partial, self._silence_windows = [], 0, 0, 0
        if rest:  # a forced cut: the remainder opens the next utterance
            self._utterance_start_s = start + cut * WINDOW_S
            self._windows, self._probs = rest, self._probs[cut:]
        else:
            self._utterance_start_s = None
            self._windows, self._probs = [], []
        return segments
