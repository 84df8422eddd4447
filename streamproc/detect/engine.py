"""Per-call detection: transcript segments and audio features in, alerts out. No Faust, no clock.

The detection agent (agents/detection.py) feeds every :class:`TranscriptSegment` and every
batch of :class:`AudioFeatures` here together with what the call-state table knows about
the call (:class:`CallInfo`: queue, agent, on hold?) and the wall time.

Partial vs final — the policy (docs/detection.md):

* Phrase rules with ``fire_on: partial`` (the default) are matched on every partial, so an
  alert goes out while the utterance is still being spoken. The k-th match of a rule in an
  utterance is *one occurrence*: it fires once, on the first revision where it appears;
  later partials and the final that still contain it confirm it silently. The final can
  add matches (a k+1-th one fires), never duplicate one.
* If the final no longer contains a match that fired on a partial, the alert is **not
  retracted** (an alert already on a supervisor's screen that silently disappears is worse
  than one that is slightly wrong); it is counted in
  ``streamproc_detection_unconfirmed_total`` and logged. Rules that must not fire on a
  guess use ``fire_on: final``.
* Segments of an utterance that arrive after its final (re-delivery, reordering) are ignored.

Alert ids are ``Alert.make_id(call, rule, occurrence)`` with an occurrence derived from the
content (utterance number, speaker, match index; for acoustic cues the episode's start in
deciseconds), so a re-processed input after a worker restart yields the same id and
consumers dedupe it. Cooldowns are per call and rule, in audio seconds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Iterable

from .. import metrics
from ..rules import DetectionRules, PhraseRule, RulesFile
from ..schemas import Alert, AlertKind, CallRisk, Evidence, Severity, Speaker, TranscriptSegment, from_epoch
from .acoustic import AcousticHit, AcousticState, AudioFeatures
from .escalation import ScoredUtterance, SentimentWindow, sentiment_score
from .risk import RiskState
from .snapshot import (
    DetectionSnapshot,
    MatchCount,
    PendingSemantic,
    RiskSnapshot,
    ScoredLine,
    TriggeredUtterance,
    UtteranceRef,
    WindowSnapshot,
    WindowsSnapshot,
)
from .windows import WindowTracker, _Window
from .hold import CallState, CallStatus
from .risk import take_update
from .phrases import Phrase, PhraseList, Token, compile_phrase, find_matches, normalize_text, redact_profanity, tokenize
from . import extras
from .semantic import semantic_evidence, semantic_match

log = logging.getLogger(__name__)

_SPEAKER_CODE = {Speaker.agent: 0, Speaker.customer: 1, Speaker.unknown: 2}
MAX_MATCHES_PER_UTTERANCE = 64

_KIND_LABEL = {
    "rude_phrase": "Agent rudeness",
    "customer_abuse": "Customer abuse towards the agent",
    "escalation": "Escalation",
}


@dataclass(frozen=True)
class CallInfo:
    """What the call-state table knows about a call (all optional: transcripts may come first)."""

    queue: str | None = None
    agent_id: str | None = None
    on_hold: bool = False
    started_at: float | None = None  # event time (epoch s) of call_started = audio time 0
    last_event_at: float | None = None  # event time of the call's latest event (its state is as of then)
    ended: bool = False
    partition: int | None = None
    completed_hold_s: float = 0.0  # risk score: hold time of the holds that ended
    hold_started_at: float | None = None  # event time the current hold began

    @classmethod
    def from_state(cls, state: CallState | None) -> "CallInfo | None":
        """What detection needs from the call-state table's :class:`~streamproc.detect.hold.CallState`."""
        if state is None:
            return None
        return cls(
            queue=state.queue,
            agent_id=state.agent_id,
            on_hold=state.status is CallStatus.on_hold,
            started_at=state.started_at,
            last_event_at=state.last_event_ts,
            ended=state.status is CallStatus.ended,
            partition=state.partition,
            completed_hold_s=state.completed_hold_s,
            hold_started_at=state.hold_started_at,
        )


@dataclass
class TranscriptResult:
    alerts: list[Alert] = field(default_factory=list)
    unconfirmed: int = 0  # partial-fired matches missing from the final
    ignored: bool = False  # late segment of an utterance already finalised


@dataclass
class _CallState:
    handled: dict[tuple, int] = field(default_factory=dict)  # (speaker, utterance, rule) → matches handled
    fired_on_partial: dict[tuple, int] = field(default_factory=dict)
    finals: set[tuple] = field(default_factory=set)  # (speaker, utterance) finalised
    last_fire: dict[str, float] = field(default_factory=dict)  # rule → audio time of last alert
    sentiment: dict[str, SentimentWindow] = field(default_factory=dict)
    acoustic: AcousticState = field(default_factory=AcousticState)
    last_seen: float = 0.0
    semantic_pending: set[tuple] = field(default_factory=set)  # (speaker, utterance, rule) seen on one partial
    windows: WindowTracker | None = None  # said/not-said windows (extras.py creates it on first use)
    risk: RiskState | None = None  # risk score (extras.py creates it on first use)
    revision: int = 0  # changes snapshotted so far (streamproc.detect.snapshot)
    snapshotted: dict | None = None  # content of the last snapshot taken


@dataclass(frozen=True)
class _Compiled:
    rule: PhraseRule
    phrases: tuple[Phrase, ...]


@dataclass(frozen=True)
class _Spanned:
    """Tokens of a segment plus, when known, the audio time of each token."""

    text: str
    tokens: list[Token]
    times: list[tuple[float, float]] | None


class DetectionEngine:
    def __init__(
        self,
        rules: Callable[[], RulesFile],
        *,
        redact_pii: bool = False,
        idle_evict_s: float = 3600.0,
        encoder=None,
    ):
        self._rules = rules
        self._encoder = encoder  # streamproc.embeddings.Encoder; the shared one when None
        self._semantic_for: DetectionRules | None = None
        self._semantic = None
        self.redact_pii = redact_pii
        self.idle_evict_s = idle_evict_s
        self._calls: dict[str, _CallState] = {}
        self._compiled_for: DetectionRules | None = None
        self._compiled: list[_Compiled] = []

    # ------------------------------------------------------------------ housekeeping

    @property
    def call_count(self) -> int:
        return len(self._calls)

    def call_ids(self) -> list[str]:
        return list(self._calls)

    def idle_for(self, call_id: str, now: float) -> float:
        state = self._calls.get(call_id)
        return now - state.last_seen if state is not None else float("inf")

    def forget(self, call_id: str) -> None:
        self._calls.pop(call_id, None)

    def evict_idle(self, now: float) -> int:
        stale = [cid for cid, st in self._calls.items() if now - st.last_seen > self.idle_evict_s]
        for cid in stale:
            del self._calls[cid]
        return len(stale)

    def risk_updates(self, now: float) -> list[CallRisk]:
        """Calls whose live risk score moved by a whole point since the last call (for ``calls.risk``)."""
        updates = []
        for call_id, state in self._calls.items():
            risk = getattr(state, "risk", None)
            taken = take_update(risk) if risk is not None else None
            if taken is not None:
                rule_id, score, threshold, factors = taken
                updates.append(CallRisk(call_id=call_id, rule_id=rule_id, score=score, threshold=threshold,
                                        factors=factors, updated_at=from_epoch(now)))
        return updates

    # ------------------------------------------------------------------ state across workers

    def snapshot_if_changed(self, call_id: str) -> DetectionSnapshot | None:
        """The call's state as a value to store, when it changed since the last snapshot (else None).

        Call it on the engine's thread right after the input that changed the state: the snapshot
        and its revision are then exactly the state that input left.
        """
        state = self._calls.get(call_id)
        if state is None:
            return None
        snapshot = _capture(call_id, state)
        content = snapshot.content()
        if content == state.snapshotted:
            return None
        state.revision += 1
        state.snapshotted = content
        return snapshot.model_copy(update={"revision": state.revision})

    def adopt(self, snapshot: DetectionSnapshot | None, now: float) -> bool:
        """Take over a call's stored state unless this engine holds the same or a newer revision."""
        if snapshot is None:
            return False
        state = self._calls.get(snapshot.call_id)
        if state is not None and state.revision >= snapshot.revision:
            return False
        self._calls[snapshot.call_id] = _restore(snapshot, self._rules().detection, now)
        return True

    def knows(self, call_id: str) -> bool:
        return call_id in self._calls

    def revision_of(self, call_id: str) -> int:
        """The revision of the call's state in this engine (-1: unknown call)."""
        state = self._calls.get(call_id)
        return state.revision if state is not None else -1

    def _state(self, call_id: str, now: float) -> _CallState:
        state = self._calls.get(call_id)
        if state is None:
            state = self._calls[call_id] = _CallState()
        state.last_seen = now
        return state

    def _phrase_rules(self, detection: DetectionRules) -> list[_Compiled]:
        if detection is not self._compiled_for:  # rules were (re)loaded
            self._compiled = [
                _Compiled(rule, PhraseList(compile_phrase(p) for p in rule.phrases)) for rule in detection.phrases if rule.enabled
            ]
            self._compiled_for = detection
        return self._compiled

    # ------------------------------------------------------------------ transcripts

    def on_transcript(self, segment: TranscriptSegment, info: CallInfo | None, now: float) -> TranscriptResult:
        info = info or CallInfo()
        detection = self._rules().detection
        state = self._state(segment.call_id, now)
        utterance_key = (segment.speaker, segment.utterance)
        if utterance_key in state.finals:
            return TranscriptResult(ignored=True)
        spanned = _spanned(segment)
        result = TranscriptResult()
        semantic_hits = None
        for compiled in self._phrase_rules(detection):
            rule = compiled.rule
            if not rule.speaker.allows(segment.speaker) or not rule.applies_to_queue(info.queue):
                continue
            if rule.fire_on == "final" and not segment.is_final:
                continue
            matches = find_matches(compiled.phrases, spanned.tokens, fuzzy=rule.fuzzy, negation=rule.negation,
                                   joined_pieces=rule.joined_pieces)
            key = (segment.speaker, segment.utterance, rule.id)
            handled = state.handled.get(key, 0)
            semantic_hit = None
            if matches and rule.semantic and rule.head_veto and detection.semantic.lexicon_veto > 0:
                # a listed phrase in a look-alike ("my sister works for ofcom"): the head, trained on those, vetoes
                if semantic_hits is None:
                    semantic_hits = self._semantic_hits(detection, segment, info)
                vetting = semantic_hits.get(rule.id)
                if vetting is not None and vetting.probability < detection.semantic.lexicon_veto:
                    matches = []
                    metrics.DETECTION_SUPPRESSED.labels("semantic_veto").inc()
            elif not matches and rule.semantic and spanned.tokens:  # the intent said another way
                if semantic_hits is None:  # one embedding per segment, shared by every head
                    semantic_hits = self._semantic_hits(detection, segment, info)
                semantic_hit = semantic_hits.get(rule.id)
                # ... unless the speaker negated a listed phrase of the rule, or a lexicon rule of the same
                # kind in lexicon_covers_kinds matched this segment (with [rude_phrase]: "shut the f… up" is the profanity
                # alert, not also semantic rudeness; the packaged rules cover no kind since the seventh tuning)
                if semantic_hit is not None and semantic_hit.fired and not (
                    rule.negation and find_matches(compiled.phrases, spanned.tokens, fuzzy=rule.fuzzy, negation=False,
                                                   joined_pieces=rule.joined_pieces)
                ) and not self._lexicon_explains(compiled, spanned, segment, info, detection.semantic.lexicon_covers_kinds):
                    # a partial fires only when the previous partial agreed (or on the final): a fragment such
                    # as "that is not my" must not fire before the phrase is complete (docs/detection.md)
                    pending = state.semantic_pending
                    if segment.is_final or key in pending:
                        matches = [semantic_match(spanned.tokens, semantic_hit)]
                    else:
                        pending.add(key)
                elif not segment.is_final:
                    state.semantic_pending.discard(key)
            if segment.is_final:
                state.semantic_pending.discard(key)
            for k, match in enumerate(matches[:MAX_MATCHES_PER_UTTERANCE]):
                if k < handled:
                    metrics.DETECTION_SUPPRESSED.labels("already_alerted").inc()
                    continue
                start, end = _times(spanned, segment, match.first, match.last)
                if self._cooling(state, rule.id, rule.cooldown_s, start, now):
                    metrics.DETECTION_SUPPRESSED.labels("cooldown").inc()
                    continue
                state.last_fire[rule.id] = start if start is not None else now
                occurrence = (segment.utterance * 4 + _SPEAKER_CODE[segment.speaker]) * MAX_MATCHES_PER_UTTERANCE + k
                text = self._evidence_text(spanned.text[spanned.tokens[match.first].start : spanned.tokens[match.last].end], detection)
                label = _KIND_LABEL[rule.kind] + (f" ({rule.category.replace('_', ' ')})" if rule.category else "")
                evidence = Evidence(text=text, speaker=segment.speaker, audio_start_s=start, audio_end_s=end)
                title = rule.title or f"{label}: {segment.speaker.value} said “{text}”"
                if getattr(match, "semantic", None) is not None:
                    evidence, title = semantic_evidence(evidence, match.semantic, title, rule.title)
                result.alerts.append(
                    self._alert(
                        segment.call_id, info, rule.id, AlertKind(rule.kind), rule.severity, occurrence,
                        title=title,
                        evidence=evidence,
                        audio_end=end, received=_received(segment), now=now,
                    )
                )
                if not segment.is_final:
                    state.fired_on_partial[key] = state.fired_on_partial.get(key, 0) + 1
            state.handled[key] = max(handled, min(len(matches), MAX_MATCHES_PER_UTTERANCE))
            if segment.is_final:
                fired = state.fired_on_partial.pop(key, 0)
                if len(matches) < fired:
                    result.unconfirmed += fired - len(matches)
                    log.info("call %s rule %s: %d partial match(es) not in the final", segment.call_id, rule.id, fired - len(matches))
                state.handled.pop(key, None)
        if segment.is_final:
            state.finals.add(utterance_key)
            result.alerts += self._sentiment(segment, spanned, state, info, detection, now)
        if detection.windows or detection.risk:  # said/not-said windows, call risk score
            result.alerts += extras.after_transcript(self, segment, spanned.tokens, state, info, detection, result.alerts, now)
        return result

    def _sentiment(self, segment, spanned: _Spanned, state: _CallState, info: CallInfo, detection: DetectionRules, now: float) -> list[Alert]:
        rules = [r for r in detection.sentiment if r.enabled and r.speaker.allows(segment.speaker) and r.applies_to_queue(info.queue)]
        if not rules:
            return []
        alerts = []
        score = None
        for rule in rules:
            if len(spanned.tokens) < rule.min_words:
                continue
            if score is None:
                score = sentiment_score(segment.text)
            window = state.sentiment.get(rule.id)
            if window is None or window.rule != rule:  # new or changed by a reload
                window = state.sentiment[rule.id] = SentimentWindow(rule)
            verdict = window.add(ScoredUtterance(score, segment.text, segment.start_s, segment.end_s, segment.utterance))
            if verdict is None:
                continue
            start = verdict.window[0].start_s
            end = verdict.window[-1].end_s
            if self._cooling(state, rule.id, rule.cooldown_s, end, now):
                metrics.DETECTION_SUPPRESSED.labels("cooldown").inc()
                continue
            state.last_fire[rule.id] = end if end is not None else now
            worst = min(verdict.window, key=lambda item: item.score)
            text = self._evidence_text(worst.text, detection)
            alerts.append(
                self._alert(
                    segment.call_id, info, rule.id, AlertKind.negative_sentiment, rule.severity,
                    segment.utterance * 4 + _SPEAKER_CODE[segment.speaker],
                    title=f"Negative sentiment ({segment.speaker.value}) over {len(verdict.window)} utterances, "
                    f"mean {verdict.mean:+.2f}, trend {verdict.trend:+.2f}/utterance",
                    evidence=Evidence(
                        text=text, speaker=segment.speaker, audio_start_s=start, audio_end_s=end,
                        value=round(verdict.mean, 3), threshold=rule.threshold, unit="vader_compound",
                    ),
                    audio_end=end, received=_received(segment), now=now,
                )
            )
        return alerts

    # ------------------------------------------------------------------ semantic intents

    def semantic_model(self, detection: DetectionRules | None = None):
        """The trained heads for these rules (built on first use; the agent warms it in an executor)."""
        detection = detection or self._rules().detection
        if detection is not self._semantic_for:
            from .semantic import build_model

            self._semantic = build_model(detection, self._encoder)
            self._semantic_for = detection
        return self._semantic

    def _lexicon_explains(self, compiled: _Compiled, spanned: _Spanned, segment: TranscriptSegment, info: CallInfo,
                          covers_kinds: tuple[str, ...]) -> bool:
        if str(compiled.rule.kind) not in covers_kinds:
            return False
        for other in self._compiled:
            rule = other.rule
            if (
                other is not compiled and other.phrases and rule.kind == compiled.rule.kind
                and rule.speaker.allows(segment.speaker) and rule.applies_to_queue(info.queue)
                and find_matches(other.phrases, spanned.tokens, fuzzy=rule.fuzzy, negation=rule.negation,
                                 joined_pieces=rule.joined_pieces)
            ):
                return True
        return False

    def _semantic_hits(self, detection: DetectionRules, segment: TranscriptSegment, info: CallInfo) -> dict:
        keys = [
            r.id for r in detection.phrases
            if r.enabled and r.semantic and r.speaker.allows(segment.speaker) and r.applies_to_queue(info.queue)
            and (r.fire_on == "partial" or segment.is_final)
        ]
        model = self.semantic_model(detection) if keys else None
        return model.score(segment.text, keys, final=segment.is_final) if model else {}

    # ------------------------------------------------------------------ audio features

    def on_features(
        self, features: Iterable[AudioFeatures], info_for: Callable[[str], CallInfo | None], now: float
    ) -> list[Alert]:
        detection = self._rules().detection
        if not (detection.raised_voice or detection.dead_air or detection.crosstalk or detection.windows or detection.risk):
            return []
        by_call: dict[str, list[AudioFeatures]] = {}
        for feature in features:
            by_call.setdefault(feature.call_id, []).append(feature)
        alerts: list[Alert] = []
        for call_id, frames in by_call.items():
            info = info_for(call_id) or CallInfo()
            state = self._state(call_id, now)

            def pick(rules):
                return tuple(r for r in rules if r.enabled and r.applies_to_queue(info.queue))

            hits = state.acoustic.update(
                frames,
                raised=pick(detection.raised_voice),
                dead_air=pick(detection.dead_air),
                crosstalk=pick(detection.crosstalk),
                on_hold=info.on_hold or _audio_predates_state(info, frames),
            )
            severity = {r.id: r.severity for r in detection.all_rules()}
            call_alerts = [self._acoustic_alert(call_id, info, hit, severity[hit.rule_id], now) for hit in hits]
            if detection.windows or detection.risk:
                audio_s = max(frame.end_s for frame in frames)
                call_alerts += extras.after_time(self, call_id, state, info, detection, audio_s, call_alerts, now)
            alerts += call_alerts
        return alerts

    def on_tick(self, info_for: Callable[[str], CallInfo | None], now: float) -> list[Alert]:
        """Issue 15: windows close and hold time grows without any input; the worker calls this every few seconds.

        A call's audio time is estimated as wall time minus ``call_started`` (unknown start: no window closes)."""
        detection = self._rules().detection
        if not (detection.windows or detection.risk):
            return []
        alerts: list[Alert] = []
        for call_id, state in list(self._calls.items()):
            info = info_for(call_id) or CallInfo()
            audio_s = now - info.started_at if info.started_at is not None and not info.ended else None
            alerts += extras.after_time(self, call_id, state, info, detection, audio_s, [], now, ended=info.ended)
        return alerts

    def _acoustic_alert(self, call_id: str, info: CallInfo, hit: AcousticHit, severity: Severity, now: float) -> Alert:
        return self._alert(
            call_id, info, hit.rule_id, AlertKind(hit.kind), severity, hit.occurrence, title=hit.title,
            evidence=Evidence(
                speaker=hit.speaker, audio_start_s=round(hit.start_s, 3), audio_end_s=round(hit.end_s, 3),
                value=hit.value, threshold=hit.threshold, unit=hit.unit,
            ),
            audio_end=hit.end_s, received=now, now=now,
        )

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _cooling(state: _CallState, rule_id: str, cooldown_s: float, at: float | None, now: float) -> bool:
        last = state.last_fire.get(rule_id)
        if last is None or cooldown_s <= 0:
            return False
        return (at if at is not None else now) - last < cooldown_s

    def _evidence_text(self, text: str, detection: DetectionRules) -> str:
        if detection.options.redact_profanity:
            text = redact_profanity(text, detection.options.extra_profanity)
        if self.redact_pii:
            from ..redact import redact

            text = redact(text)
        return text[:500]

    @staticmethod
    def _alert(call_id, info: CallInfo, rule_id, kind, severity, occurrence, *, title, evidence, audio_end, received, now) -> Alert:
        if info.started_at is not None and audio_end is not None:
            event_time = info.started_at + audio_end
        else:
            event_time = now
        metrics.ALERTS.labels(kind.value, severity.value).inc()
        if received is not None:
            metrics.ALERT_LATENCY.labels(kind.value).observe(max(0.0, now - received))
        return Alert(
            alert_id=Alert.make_id(call_id, rule_id, occurrence),
            call_id=call_id,
            agent_id=info.agent_id,
            queue=info.queue,
            kind=kind,
            rule_id=rule_id,
            severity=severity,
            occurrence=occurrence,
            title=title[:300],
            evidence=evidence,
            event_time=from_epoch(event_time),
            detected_at=from_epoch(now),
            source_received_at=from_epoch(received) if received is not None else None,
        )


def _received(segment: TranscriptSegment) -> float | None:
    moment = segment.audio_received_at or segment.emitted_at
    return moment.timestamp() if moment is not None else None


def _spanned(segment: TranscriptSegment) -> _Spanned:
    """Tokens of the segment text; word timings attached when the recogniser's words line up."""
    text = normalize_text(segment.text)
    tokens = tokenize(text)
    if not segment.words:
        return _Spanned(text, tokens, None)
    per_word = [(w, tokenize(w.word)) for w in segment.words]
    times = [(w.start_s, w.end_s) for w, toks in per_word for _ in toks]
    if len(times) == len(tokens):
        return _Spanned(text, tokens, times)
    text = " ".join(w.word for w in segment.words)  # text and words disagree: trust the words
    return _Spanned(text, tokenize(text), times if len(times) == len(tokenize(text)) else None)


def _times(spanned: _Spanned, segment: TranscriptSegment, first: int, last: int) -> tuple[float | None, float | None]:
    if spanned.times is not None:
        return round(spanned.times[first][0], 3), round(spanned.times[last][1], 3)
    return segment.start_s, segment.end_s  # partials carry no word timings: the utterance so far


def _audio_predates_state(info: CallInfo, frames: list[AudioFeatures]) -> bool:
    """The audio is older than the call's latest event: decoding lags, and the call's hold status
    at that audio time is unknown (a hold that has since ended may have covered it). Treated like
    a hold for dead air — the silence clock restarts — rather than alerting on hold silence."""
    if info.started_at is None or info.last_event_at is None:
        return False
    return info.started_at + max(frame.end_s for frame in frames) <= info.last_event_at


# ---------------------------------------------------------------------- snapshot ⇄ state


def _match_counts(counts: dict[tuple, int]) -> tuple[MatchCount, ...]:
    return tuple(
        MatchCount(speaker=str(speaker), utterance=utterance, rule_id=rule_id, count=count)
        for (speaker, utterance, rule_id), count in sorted(counts.items(), key=lambda kv: (str(kv[0][0]), kv[0][1], kv[0][2]))
    )


def _capture(call_id: str, state: _CallState) -> DetectionSnapshot:
    windows = risk = None
    if state.windows is not None:
        tracker = state.windows
        windows = WindowsSnapshot(
            windows=tuple(
                WindowSnapshot(rule_id=w.rule_id, index=w.index, opens_s=w.opens_s, closes_s=w.closes_s,
                               satisfied=w.satisfied, trigger_text=w.trigger_text)
                for w in tracker.windows if not w.done
            ),
            started=tuple(sorted(tracker.started)),
            triggers=dict(tracker.triggers),
            triggered_utterances=tuple(
                TriggeredUtterance(rule_id=rule_id, speaker=str(key[0]), utterance=key[1])
                for rule_id, key in sorted(tracker.triggered_utterances, key=lambda item: (item[0], str(item[1][0]), item[1][1]))
            ),
        )
    if state.risk is not None:
        risk = RiskSnapshot(
            sentiments=tuple(state.risk.sentiments),
            counts=dict(state.risk.counts),
            seen_alerts=tuple(sorted(state.risk.seen_alerts)),
            levels_fired=dict(state.risk.levels_fired),
        )
    return DetectionSnapshot(
        call_id=call_id,
        handled=_match_counts(state.handled),
        fired_on_partial=_match_counts(state.fired_on_partial),
        finals=tuple(UtteranceRef(speaker=str(speaker), utterance=utterance)
                     for speaker, utterance in sorted(state.finals, key=lambda key: (str(key[0]), key[1]))),
        last_fire=dict(state.last_fire),
        semantic_pending=tuple(
            PendingSemantic(speaker=str(speaker), utterance=utterance, rule_id=rule_id)
            for speaker, utterance, rule_id in sorted(state.semantic_pending, key=lambda key: (str(key[0]), key[1], key[2]))
        ),
        sentiment={
            rule_id: tuple(ScoredLine(score=i.score, text=i.text, start_s=i.start_s, end_s=i.end_s, utterance=i.utterance)
                           for i in window.items)
            for rule_id, window in sorted(state.sentiment.items()) if window.items
        },
        acoustic_last_fire=dict(state.acoustic.last_fire),
        windows=windows,
        risk=risk,
    )


def _restore(snapshot: DetectionSnapshot, detection: DetectionRules, now: float) -> _CallState:
    state = _CallState(last_seen=now, revision=snapshot.revision, snapshotted=snapshot.content())
    for count in snapshot.handled:
        state.handled[(Speaker(count.speaker), count.utterance, count.rule_id)] = count.count
    for count in snapshot.fired_on_partial:
        state.fired_on_partial[(Speaker(count.speaker), count.utterance, count.rule_id)] = count.count
    state.finals = {(Speaker(ref.speaker), ref.utterance) for ref in snapshot.finals}
    state.last_fire = dict(snapshot.last_fire)
    state.semantic_pending = {(Speaker(p.speaker), p.utterance, p.rule_id) for p in snapshot.semantic_pending}
    sentiment_rules = {rule.id: rule for rule in detection.sentiment}
    for rule_id, lines in snapshot.sentiment.items():
        rule = sentiment_rules.get(rule_id)
        if rule is not None:  # a rule removed since is dropped; a changed one restarts its window on use
            window = state.sentiment[rule_id] = SentimentWindow(rule)
            window.items.extend(ScoredUtterance(line.score, line.text, line.start_s, line.end_s, line.utterance) for line in lines)
    state.acoustic.last_fire = dict(snapshot.acoustic_last_fire)
    if snapshot.windows is not None:
        saved = snapshot.windows
        state.windows = WindowTracker(
            windows=[_Window(w.rule_id, w.index, w.opens_s, w.closes_s, w.satisfied, w.trigger_text) for w in saved.windows],
            started=set(saved.started),
            triggers=dict(saved.triggers),
            # the tracker keys utterances by the speaker's value (extras.after_transcript)
            triggered_utterances={(t.rule_id, (t.speaker, t.utterance)) for t in saved.triggered_utterances},
        )
    if snapshot.risk is not None:
        risk = state.risk = RiskState()
        risk.sentiments.extend(snapshot.risk.sentiments)
        risk.counts = dict(snapshot.risk.counts)
        risk.seen_alerts = set(snapshot.risk.seen_alerts)
        risk.levels_fired = dict(snapshot.risk.levels_fired)
    return state
