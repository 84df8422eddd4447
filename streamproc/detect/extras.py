"""Glue between the detection engine and the issue-15 detectors (windows, risk score).

Kept out of engine.py so that the engine only gains a few calls: after each transcript
segment (:func:`after_transcript`), after each batch of audio features and on the worker's
timer (:func:`after_time`). Everything here runs where the engine runs (the detection
agent's executor thread), never on the event loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..schemas import Alert, AlertKind, Evidence, Speaker, TranscriptSegment
from .escalation import sentiment_score
from .phrases import PhraseList, compile_phrase, find_matches
from .risk import RiskState
from .windows import WindowHit, WindowTracker

if TYPE_CHECKING:  # pragma: no cover
    from ..rules import DetectionRules
    from .engine import CallInfo, DetectionEngine

_SPEAKER_CODE = {Speaker.agent: 0, Speaker.customer: 1, Speaker.unknown: 2}


def _windows(state) -> WindowTracker:
    tracker = getattr(state, "windows", None)
    if tracker is None:
        tracker = state.windows = WindowTracker()
    return tracker


def _risk(state) -> RiskState:
    risk = getattr(state, "risk", None)
    if risk is None:
        risk = state.risk = RiskState()
    return risk


_compiled_cues: dict[tuple, tuple] = {}


def _cue_phrases(cue) -> tuple:
    key = tuple(cue.phrases)
    compiled = _compiled_cues.get(key)
    if compiled is None:
        compiled = _compiled_cues[key] = PhraseList(compile_phrase(p) for p in cue.phrases)
    return compiled


def after_transcript(engine: "DetectionEngine", segment: TranscriptSegment, tokens, state, info: "CallInfo",
                     detection: "DetectionRules", alerts: list[Alert], now: float) -> list[Alert]:
    """Windows and risk after one segment; ``alerts`` are the segment's alerts so far (counted for risk)."""
    out: list[Alert] = []
    rules = [r for r in detection.windows if r.enabled and r.applies_to_queue(info.queue)]
    if rules:
        scores: dict[str, object] = {}

        def heard(rule, which: str) -> bool:
            cue = rule.cue if which == "cue" else rule.trigger
            if cue is None or (cue.speaker != "either" and cue.speaker != segment.speaker.value):
                return False
            if cue.phrases and find_matches(_cue_phrases(cue), tokens, fuzzy=cue.fuzzy, negation=cue.negation):
                return True
            if cue.like:
                key = f"{rule.id}/{which}"
                if key not in scores:
                    model = engine.semantic_model(detection)
                    scores.update(model.score(segment.text, [key]) if model else {})
                hit = scores.get(key)
                return bool(hit is not None and hit.fired)
            return False

        start = segment.start_s or 0.0
        end = segment.end_s if segment.end_s is not None else start
        hits = _windows(state).on_utterance(
            rules, heard, utterance_key=(segment.speaker.value, segment.utterance), text=segment.text,
            start_s=start, end_s=end, is_final=segment.is_final,
        )
        out += [window_alert(engine, segment.call_id, info, detection, hit, now) for hit in hits]
    if detection.risk:
        risk = _risk(state)
        if segment.is_final and segment.speaker == Speaker.customer and len(tokens) >= 3:
            risk.add_sentiment(sentiment_score(segment.text))
        out += risk_alerts(engine, segment.call_id, state, info, detection, [*alerts, *out], now)
    return out


def after_time(engine: "DetectionEngine", call_id: str, state, info: "CallInfo", detection: "DetectionRules",
               audio_s: float | None, alerts: list[Alert], now: float, *, ended: bool = False) -> list[Alert]:
    """The call's audio reached ``audio_s`` (frames, or the wall clock since call_started): close windows, rescore."""
    out: list[Alert] = []
    rules = [r for r in detection.windows if r.enabled and r.applies_to_queue(info.queue)]
    # windows are judged only for calls with transcripts: without transcription (audio-only
    # deployments, a recogniser that is down) "not said" would be every call's verdict
    if rules and (audio_s is not None or ended) and getattr(state, "windows", None) is not None:
        hits = state.windows.advance(rules, audio_s, ended=ended)
        out += [window_alert(engine, call_id, info, detection, hit, now) for hit in hits]
    if detection.risk:
        out += risk_alerts(engine, call_id, state, info, detection, [*alerts, *out], now)
    return out


def window_alert(engine, call_id: str, info, detection, hit: WindowHit, now: float) -> Alert:
    rule = next(r for r in detection.windows if r.id == hit.rule_id)
    cue = rule.cue
    who = cue.speaker if cue.speaker != "either" else "speaker"
    if hit.missed:
        title = rule.title or f"Not said within {rule.within_s:g} s: {rule.id}"
        kind = AlertKind.missed_phrase
    else:
        title = rule.title or f"Said within {rule.within_s:g} s though it must not be: {rule.id}"
        kind = AlertKind.window_phrase
    text = engine._evidence_text(hit.text, detection) if hit.text else None
    evidence = Evidence(
        text=text, speaker=Speaker(who) if who in ("agent", "customer") else None,
        audio_start_s=round(hit.opens_s, 3), audio_end_s=round(hit.closes_s, 3),
        value=rule.within_s, threshold=rule.within_s, unit="s",
    )
    return engine._alert(call_id, info, rule.id, kind, rule.severity, hit.index, title=title, evidence=evidence,
                         audio_end=hit.at_s, received=None, now=now)


def risk_alerts(engine, call_id: str, state, info, detection, alerts: list[Alert], now: float) -> list[Alert]:
    risk = _risk(state)
    categories = {r.id: r.category for r in detection.phrases}
    for alert in alerts:
        if alert.call_id == call_id:
            risk.add_alert(alert, categories.get(alert.rule_id))
    risk.hold_s = _hold_seconds(info, now)
    out = []
    for rule in detection.risk:
        if not rule.enabled or not rule.applies_to_queue(info.queue):
            continue
        score, factors, levels = risk.crossings(rule)
        for level in levels:
            top = ", ".join(f"{k} {v:g}" for k, v in sorted(factors.items(), key=lambda kv: -kv[1]) if v > 0)
            out.append(engine._alert(
                call_id, info, rule.id, AlertKind.call_at_risk, rule.severity, level,
                title=rule.title or f"Call at risk: score {score:.0f}/100 ({top})",
                evidence=Evidence(value=score, threshold=rule.threshold, unit="risk_score", factors=factors),
                audio_end=None, received=None, now=now,
            ))
    return out


def _hold_seconds(info, now: float) -> float:
    held = getattr(info, "completed_hold_s", 0.0) or 0.0
    started = getattr(info, "hold_started_at", None)
    if info.on_hold and started is not None:
        held += max(0.0, now - started)
    return held
