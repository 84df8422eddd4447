"""Said / not-said within a window: "the agent greets within 20 s", "apologises within 60 s of a complaint".

Pure bookkeeping, no clock of its own: the engine tells :class:`WindowTracker` what was heard
(``heard(rule, which)`` for the ``cue`` and the ``trigger`` of each rule, decided by the
lexicon and/or the semantic head) and how far the call's audio has got. One YAML shape
(:class:`streamproc.detect.rules_ext.WindowRule`) serves both directions:

* ``expect: said`` — a window that closes without the cue is a :class:`WindowHit` with
  ``missed=True`` (alert kind ``missed_phrase``);
* ``expect: not_said`` — the cue heard inside an open window is a hit at once (alert kind
  ``window_phrase``), at most once per window.

Windows open at the call's audio time 0 (``after: call_start``) or at the end of each
utterance in which the trigger is heard (``after: trigger``; one window per triggering
utterance, at most ``max_windows`` per call). A cue counts for a window when its utterance
starts before the window closes and ends after the window opened. The window closes when the
call's audio time (transcripts, audio frames, or the wall clock since ``call_started``) passes
its end, or when the call ends: a window still open at call end is judged only if its end
had been reached (a call shorter than the window is not a miss).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

from .rules_ext import WindowRule


@dataclass
class _Window:
    rule_id: str
    index: int  # occurrence: 0 for call_start windows, k for the k-th trigger
    opens_s: float
    closes_s: float
    satisfied: bool = False
    trigger_text: str | None = None
    done: bool = False


@dataclass(frozen=True)
class WindowHit:
    rule_id: str
    index: int
    opens_s: float
    closes_s: float
    missed: bool  # True: the required cue was not said; False: a forbidden cue was said
    text: str | None  # trigger text (missed) or the cue's text (said)
    at_s: float


@dataclass
class WindowTracker:
    """One call's windows."""

    windows: list[_Window] = field(default_factory=list)
    started: set[str] = field(default_factory=set)  # call_start windows already opened
    triggers: dict[str, int] = field(default_factory=dict)  # rule → windows opened by triggers
    triggered_utterances: set[tuple] = field(default_factory=set)
    audio_s: float = 0.0

    def _open_call_start(self, rules: Iterable[WindowRule]) -> None:
        for rule in rules:
            if rule.after == "call_start" and rule.id not in self.started:
                self.started.add(rule.id)
                self.windows.append(_Window(rule.id, 0, 0.0, rule.within_s))

    def on_utterance(
        self,
        rules: list[WindowRule],
        heard: Callable[[WindowRule, str], bool],
        *,
        utterance_key: tuple,
        text: str,
        start_s: float,
        end_s: float,
        is_final: bool,
    ) -> list[WindowHit]:
        """A segment (partial or final) was heard; returns hits of not_said rules and closed windows."""
        self._open_call_start(rules)
        hits = self.advance(rules, start_s)
        by_id = {r.id: r for r in rules}
        for window in self.windows:
            rule = by_id.get(window.rule_id)
            if rule is None or window.done or window.satisfied:
                continue
            if start_s <= window.closes_s and end_s >= window.opens_s and heard(rule, "cue"):
                window.satisfied = True
                if rule.expect == "not_said":
                    window.done = True
                    hits.append(WindowHit(rule.id, window.index, window.opens_s, window.closes_s, False, text, end_s))
        for rule in rules:
            if rule.after != "trigger" or (rule.id, utterance_key) in self.triggered_utterances:
                continue
            count = self.triggers.get(rule.id, 0)
            if count >= rule.max_windows or not heard(rule, "trigger"):
                continue
            self.triggered_utterances.add((rule.id, utterance_key))
            self.triggers[rule.id] = count + 1
            self.windows.append(_Window(rule.id, count + 1, end_s, end_s + rule.within_s, trigger_text=text))
        return hits + self.advance(rules, end_s)

    def advance(self, rules: list[WindowRule], audio_s: float | None, *, ended: bool = False) -> list[WindowHit]:
        """The call's audio has reached ``audio_s`` (or the call ended): close the windows that are over."""
        if audio_s is not None:
            self.audio_s = max(self.audio_s, audio_s)
        self._open_call_start(rules)
        by_id = {r.id: r for r in rules}
        hits: list[WindowHit] = []
        for window in self.windows:
            if window.done or self.audio_s < window.closes_s:
                if ended and not window.done:
                    window.done = True  # the call ended before the window did: not judged
                continue
            window.done = True
            rule = by_id.get(window.rule_id)
            if rule is not None and rule.expect == "said" and not window.satisfied:
                hits.append(WindowHit(rule.id, window.index, window.opens_s, window.closes_s, True, window.trigger_text, window.closes_s))
        self.windows = [w for w in self.windows if not w.done]
        return hits
