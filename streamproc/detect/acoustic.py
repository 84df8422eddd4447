"""Acoustic cues from per-frame audio features: raised voice, dead air, cross-talk.

The audio agent decodes each frame, splits it per speaker and hands us one
:class:`AudioFeatures` per speaker and frame (its RMS level in dBFS and whether it holds
speech). Everything here is pure and clock-free: times are seconds into the call's audio.

* **Raised voice** — compared with the speaker's *own* running baseline, not an absolute
  level (headsets and lines differ by 20 dB). The baseline is the median level of that
  speaker's recent normal speech (``baseline_window_s`` of speech; raised frames are kept
  out of it so shouting does not become the new normal). It is trusted after
  ``baseline_min_speech_s`` of speech. A run of speech frames at least
  ``above_baseline_db`` above the baseline lasting ``min_duration_s`` fires once per run.
* **Dead air** — no speech from anyone for ``after_s`` while the call is not on hold. Time
  advances with the *slowest* speaker stream seen, so a lagging stream cannot fake a
  silence. A hold restarts the silence clock. Fires once per silence, per rule.
* **Cross-talk** — stretches where both speakers talk at once (each counted once it
  reaches ``min_overlap_s``); ``count`` of them within ``window_s`` fire, and those
  stretches are then used up.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field
from statistics import median

from ..rules import CrosstalkRule, DeadAirRule, RaisedVoiceRule
from ..schemas import Speaker

#: Pauses shorter than this do not end a raised-voice run or split a cross-talk stretch.
RUN_GAP_S = 0.6
#: Keep this much audio history for overlap computation.
HISTORY_S = 180.0


@dataclass(frozen=True)
class AudioFeatures:
    """One frame of one speaker: level and voice activity (produced by streamproc.transcribe, read by the detectors)."""

    call_id: str
    speaker: Speaker
    start_s: float
    end_s: float
    rms_dbfs: float
    speech: bool

    @property
    def duration_s(self) -> float:
        return max(0.0, self.end_s - self.start_s)


@dataclass(frozen=True)
class AcousticHit:
    """A detector fired: the engine turns this into an Alert."""

    rule_id: str
    kind: str  # raised_voice | dead_air | crosstalk
    occurrence: int
    speaker: Speaker | None
    start_s: float
    end_s: float
    value: float
    threshold: float
    unit: str
    title: str


def _occurrence(start_s: float) -> int:
    # Deterministic across replays: the episode's start in deciseconds.
    return max(0, int(round(start_s * 10)))


@dataclass
class _Run:
    start: float
    end: float
    peak: float
    fired: bool = False


@dataclass
class _VoiceState:
    levels: deque = field(default_factory=deque)  # (end_s, dbfs, duration) of normal speech frames
    speech_s: float = 0.0
    run: _Run | None = None

    def baseline(self) -> float | None:
        return median(level for _, level, _ in self.levels) if self.levels else None


@dataclass
class AcousticState:
    """Per-call acoustic detector state."""

    voices: dict[tuple[str, Speaker], _VoiceState] = field(default_factory=dict)
    last_fire: dict[str, float] = field(default_factory=dict)  # rule id → audio time of last alert
    latest_end: dict[Speaker, float] = field(default_factory=dict)
    first_start: float | None = None
    last_speech_end: float | None = None
    silence_reset: float | None = None  # hold ended / seen on hold at this audio time
    dead_air_fired: set = field(default_factory=set)  # (rule id, silence start)
    speech: dict[Speaker, list] = field(default_factory=dict)  # merged [start, end] speech intervals
    overlaps: list = field(default_factory=list)  # merged [start, end] both-talking intervals
    overlaps_used_until: float = float("-inf")

    # ------------------------------------------------------------------ entry point

    def update(
        self,
        features: list[AudioFeatures],
        *,
        raised: tuple[RaisedVoiceRule, ...],
        dead_air: tuple[DeadAirRule, ...],
        crosstalk: tuple[CrosstalkRule, ...],
        on_hold: bool,
    ) -> list[AcousticHit]:
        hits: list[AcousticHit] = []
        for frame in sorted(features, key=lambda f: (f.start_s, str(f.speaker))):
            self.latest_end[frame.speaker] = max(self.latest_end.get(frame.speaker, frame.end_s), frame.end_s)
            if self.first_start is None:
                self.first_start = frame.start_s
            for rule in raised:
                if rule.speaker.allows(frame.speaker):
                    hits += self._raised(rule, frame)
            if frame.speech:
                self.last_speech_end = max(self.last_speech_end or frame.end_s, frame.end_s)
                if crosstalk:
                    self._add_speech(frame)
        now = min(self.latest_end.values()) if self.latest_end else None
        if now is not None:
            if on_hold:
                self.silence_reset = now
            elif dead_air:
                hits += self._dead_air(dead_air, now)
            for rule in crosstalk:
                hits += self._crosstalk(rule, now)
        self._prune(now)
        return hits

    # ------------------------------------------------------------------ raised voice

    def _raised(self, rule: RaisedVoiceRule, frame: AudioFeatures) -> list[AcousticHit]:
        voice = self.voices.setdefault((rule.id, frame.speaker), _VoiceState())
        if not frame.speech:
            if voice.run is not None and frame.end_s - voice.run.end > RUN_GAP_S:
                voice.run = None
            return []
        baseline = voice.baseline()
        trusted = baseline is not None and voice.speech_s >= rule.baseline_min_speech_s
        if trusted and frame.rms_dbfs >= baseline + rule.above_baseline_db:
            run = voice.run
            if run is None or frame.start_s - run.end > RUN_GAP_S:
                run = voice.run = _Run(frame.start_s, frame.end_s, frame.rms_dbfs)
            run.end, run.peak = frame.end_s, max(run.peak, frame.rms_dbfs)
            if not run.fired and run.end - run.start >= rule.min_duration_s:
                run.fired = True
                last = self.last_fire.get(rule.id)
                if last is None or run.start - last >= rule.cooldown_s:
                    self.last_fire[rule.id] = run.start
                    return [
                        AcousticHit(
                            rule.id, "raised_voice", _occurrence(run.start), frame.speaker, run.start, run.end,
                            round(run.peak - baseline, 1), rule.above_baseline_db, "dB",
                            f"Raised voice ({frame.speaker.value}): {run.peak - baseline:.0f} dB above their normal level",
                        )
                    ]
            return []
        # normal speech: feeds the baseline
        if voice.run is not None and frame.start_s - voice.run.end > RUN_GAP_S:
            voice.run = None
        voice.levels.append((frame.end_s, frame.rms_dbfs, frame.duration_s))
        voice.speech_s += frame.duration_s
        total = sum(d for _, _, d in voice.levels)
        while voice.levels and total - voice.levels[0][2] >= rule.baseline_window_s:
            total -= voice.levels.popleft()[2]
        return []

    # ------------------------------------------------------------------ dead air

    def _dead_air(self, rules: tuple[DeadAirRule, ...], now: float) -> list[AcousticHit]:
        start = max(x for x in (self.last_speech_end, self.silence_reset, self.first_start) if x is not None)
        silent = now - start
        hits = []
        for rule in rules:
            key = (rule.id, round(start, 3))
            if silent >= rule.after_s and key not in self.dead_air_fired:
                self.dead_air_fired.add(key)
                last = self.last_fire.get(rule.id)
                if last is not None and start - last < rule.cooldown_s:
                    continue
                self.last_fire[rule.id] = start
                hits.append(
                    AcousticHit(
                        rule.id, "dead_air", _occurrence(start), None, start, now, round(silent, 2), rule.after_s, "s",
                        f"Dead air: nobody has spoken for {silent:.0f} s (not on hold)",
                    )
                )
        return hits

    # ------------------------------------------------------------------ cross-talk

    def _add_speech(self, frame: AudioFeatures) -> None:
        mine = self.speech.setdefault(frame.speaker, [])
        for speaker, intervals in self.speech.items():
            if speaker == frame.speaker:
                continue
            # intervals are sorted and disjoint: find the ones overlapping this frame
            i = max(0, bisect.bisect_left(intervals, [frame.start_s]) - 1)
            while i < len(intervals) and intervals[i][0] < frame.end_s:
                lo, hi = max(intervals[i][0], frame.start_s), min(intervals[i][1], frame.end_s)
                if hi > lo:
                    _merge_into(self.overlaps, lo, hi, RUN_GAP_S)
                i += 1
        _merge_into(mine, frame.start_s, frame.end_s, 0.05)

    def _crosstalk(self, rule: CrosstalkRule, now: float) -> list[AcousticHit]:
        episodes = [
            (lo, hi) for lo, hi in self.overlaps
            if hi - lo >= rule.min_overlap_s and hi >= now - rule.window_s and lo > self.overlaps_used_until
        ]
        if len(episodes) < rule.count:
            return []
        first, last = episodes[0][0], episodes[-1][1]
        self.overlaps_used_until = last
        previous = self.last_fire.get(rule.id)
        if previous is not None and first - previous < rule.cooldown_s:
            return []
        self.last_fire[rule.id] = first
        total = sum(hi - lo for lo, hi in episodes)
        return [
            AcousticHit(
                rule.id, "crosstalk", _occurrence(first), None, first, last, float(len(episodes)), float(rule.count), "overlaps",
                f"Cross-talk: both speakers talking at once {len(episodes)} times ({total:.1f} s) within {rule.window_s:.0f} s",
            )
        ]

    def _prune(self, now: float | None) -> None:
        if now is None:
            return
        horizon = now - HISTORY_S
        for intervals in self.speech.values():
            while intervals and intervals[0][1] < horizon:
                intervals.pop(0)
        while self.overlaps and self.overlaps[0][1] < horizon:
            self.overlaps.pop(0)
        if len(self.dead_air_fired) > 64:
            self.dead_air_fired = {k for k in self.dead_air_fired if k[1] >= horizon}


def _merge_into(intervals: list, lo: float, hi: float, gap: float) -> None:
    """Insert [lo, hi] into sorted disjoint ``intervals``, merging neighbours closer than ``gap``."""
    i = bisect.bisect_left(intervals, [lo])
    if i > 0 and intervals[i - 1][1] + gap >= lo:
        i -= 1
        lo = min(lo, intervals[i][0])
    j = i
    while j < len(intervals) and intervals[j][0] <= hi + gap:
        hi = max(hi, intervals[j][1])
        lo = min(lo, intervals[j][0])
        j += 1
    intervals[i:j] = [[lo, hi]]
