"""Post-call summaries: fold a call's events, final transcripts and alerts, then build one record. No Faust.

The summary agent (agents/summaries.py) reads ``calls.events``, ``calls.transcripts``, ``calls.alerts``
and ``calls.ticks`` as one stream; every record of a call goes through :class:`SummaryProcessor`
(the record path of streamproc/record.py: parse, decide, outputs) and updates the call's
:class:`SummaryState`, a JSON value of the changelog-backed ``call-summaries`` table. Everything is
stored keyed by its own id (event id, speaker/utterance, alert id), so a redelivered record changes
nothing and the order in which topics are read does not matter: a restart mid-call recovers the
table and ends with the same summary.

When is a call over? Two things must both have happened, in either order:

1. ``call_ended`` was read from ``calls.events``;
2. the call's transcription drained: every utterance with a partial has its final, and no record of
   the call arrived for ``quiet_s`` (the audio agent finalises an ended call's sessions about a second
   after its last frame, then detection sends the alerts of those finals).

The agent adds one guard it alone can check: the tick is set aside until the worker's committed offsets
of ``calls.events`` and ``calls.transcripts`` pass the call's last folded record. Faust acks a record only
once every agent reading it is done, so this means the detection and events agents have handled the call's
last transcript and event, and sent their alerts (detection can lag seconds behind, e.g. while its
semantic heads train at start-up).

A call with no audio at all has nothing to drain: it is due ``quiet_s`` after its last record. The
wait is bounded: ``max_wait_s`` after ``call_ended`` was read the summary goes out anyway, with
``transcription_complete: false`` if utterances are still open. Records of the call that arrive
after its summary are ignored (the state keeps an ``emitted`` mark until ``retention_s``).

The summary holds figures, rule ids, alert ids and transcript offsets, never text: it carries no PII
whatever the redaction settings are.
"""

from __future__ import annotations

import bisect
import json
import logging
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field

from . import metrics
from .detect.escalation import sentiment_score
from .detect.risk import RiskState
from .errors import InputRejected, RejectReason
from .record import RecordRef, RecordResult, check_key
from .rules import RulesFile
from .schemas import (
    Alert,
    AlertKind,
    CallEnded,
    CallStarted,
    CallSummary,
    ChecklistItem,
    Escalation,
    HoldEnded,
    HoldStarted,
    RuleAlerts,
    SentimentTrajectory,
    SpeakerTalk,
    SummaryConversation,
    SummaryDurations,
    Tick,
    TranscriptRef,
    TranscriptSegment,
    Transferred,
    from_epoch,
    parse_call_event,
    parse_message,
)

log = logging.getLogger(__name__)

#: Finals with fewer words carry no sentiment ("ok", "yes"), as for the risk score.
SENTIMENT_MIN_WORDS = 3
#: A record that changes nothing the summary says is still written when the stored state is this old
#: (seconds), so the table's "last input" is never staler than this after a restart.
WRITE_EVERY_S = 1.0
#: A call with no record for this long and no call_ended is dropped without a summary (its end was lost).
ABANDONED_AFTER_S = 6 * 3600.0
#: Shortest silence counted as dead air when the rules file has no dead_air rule.
DEFAULT_DEAD_AIR_MIN_S = 5.0

Interval = tuple[float, float]


class SummaryState(BaseModel):
    """What the ``call-summaries`` table keeps per call (JSON). Event/audio times are the call's own;
    ``*_wall`` fields are this worker's clock and only decide *when* to emit, never what."""

    model_config = ConfigDict(extra="ignore")

    call_id: str
    partition: int | None = None
    started: dict[str, Any] | None = None  # call_started: ts, queue, agent_id, direction
    ended: dict[str, Any] | None = None  # call_ended: ts, reason
    holds: dict[str, list] = Field(default_factory=dict)  # event id → [type, ts]
    transfers: dict[str, list] = Field(default_factory=dict)  # event id → [ts, to_queue, to_agent_id]
    finals: dict[str, list] = Field(default_factory=dict)  # "speaker/utterance" → [start, end, sentiment, words, offset]
    open_utterances: list[str] = Field(default_factory=list)  # partial seen, final not yet
    transcript_partition: int | None = None
    alerts: dict[str, list] = Field(default_factory=dict)  # alert id → [rule_id, kind, value]
    offsets: dict[str, int] = Field(default_factory=dict)  # input kind → highest offset folded (the agent's tick guard)
    last_input_wall: float = 0.0
    ended_wall: float | None = None  # when this worker first read call_ended
    emitted: bool = False

    @classmethod
    def from_stored(cls, stored: Any) -> "SummaryState | None":
        if stored is None:
            return None
        return cls.model_validate(json.loads(stored) if isinstance(stored, (str, bytes)) else stored)

    def stored(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    # ------------------------------------------------------------------ folding inputs (idempotent)

    def add_event(self, event: Any) -> None:
        ts = event.ts_epoch
        if isinstance(event, CallStarted):
            self.started = {"ts": ts, "queue": event.queue, "agent_id": event.agent_id, "direction": event.direction}
        elif isinstance(event, CallEnded):
            if self.ended is None or ts < self.ended["ts"]:  # the first hang-up counts, whatever the read order
                self.ended = {"ts": ts, "reason": event.reason}
        elif isinstance(event, (HoldStarted, HoldEnded)):
            self.holds[str(event.event_id)] = [event.type, ts]
        elif isinstance(event, Transferred):
            self.transfers[str(event.event_id)] = [ts, event.to_queue, event.to_agent_id]

    def add_segment(self, segment: TranscriptSegment, partition: int | None, offset: int | None) -> None:
        key = f"{segment.speaker.value}/{segment.utterance}"
        if self.transcript_partition is None:
            self.transcript_partition = partition
        if not segment.is_final:
            if key not in self.finals and key not in self.open_utterances:
                self.open_utterances.append(key)
            return
        if key in self.open_utterances:
            self.open_utterances.remove(key)
        known = self.finals.get(key)
        if known is not None:  # a re-sent final (redelivery, re-decoded after a restart): keep the earliest offset
            if offset is not None and (known[4] is None or offset < known[4]):
                known[4] = offset
            return
        words = len(segment.text.split())
        sentiment = round(sentiment_score(segment.text), 4) if words >= SENTIMENT_MIN_WORDS else None
        self.finals[key] = [segment.start_s, segment.end_s, sentiment, words, offset]

    def add_alert(self, alert: Alert) -> None:
        value = alert.evidence.value if alert.kind is AlertKind.call_at_risk else None
        self.alerts[alert.alert_id] = [alert.rule_id, alert.kind.value, value]

    # ------------------------------------------------------------------ when

    def due(self, now_wall: float, quiet_s: float, max_wait_s: float) -> bool:
        """The call ended and its transcription drained, or the bounded wait after call_ended is over."""
        if self.emitted or self.ended is None or self.ended_wall is None:
            return False
        if now_wall - self.ended_wall >= max_wait_s:
            return True
        return not self.open_utterances and now_wall - self.last_input_wall >= quiet_s

    def next_check(self, quiet_s: float, max_wait_s: float) -> float | None:
        """Wall time at which :meth:`due` may become true, or a call without call_ended counts as abandoned."""
        if self.emitted:
            return None
        if self.ended_wall is None:
            return self.last_input_wall + ABANDONED_AFTER_S
        drained_at = self.last_input_wall + quiet_s
        return min(self.ended_wall + max_wait_s, drained_at) if not self.open_utterances else self.ended_wall + max_wait_s


@dataclass(frozen=True)
class SummaryConfig:
    """What the builder needs besides the call: the rules (windows, risk, dead air) and the redaction setting."""

    transcripts_topic: str
    transcripts_redacted: bool
    rules: RulesFile | None = None

    @property
    def dead_air_min_s(self) -> float:
        rules = self.rules.detection.dead_air if self.rules is not None else ()
        enabled = [rule.after_s for rule in rules if rule.enabled]
        return min(enabled) if enabled else DEFAULT_DEAD_AIR_MIN_S


# ---------------------------------------------------------------------- interval arithmetic


def union(intervals: Iterable[Interval]) -> list[Interval]:
    merged: list[Interval] = []
    for start, end in sorted((s, e) for s, e in intervals if e > s):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def length(intervals: Iterable[Interval]) -> float:
    return sum(end - start for start, end in intervals)


def intersect(a: list[Interval], b: list[Interval]) -> list[Interval]:
    """Intersection of two unions (sorted, disjoint)."""
    out: list[Interval] = []
    i = j = 0
    while i < len(a) and j < len(b):
        start, end = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if end > start:
            out.append((start, end))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def subtract(a: list[Interval], b: list[Interval]) -> list[Interval]:
    """``a`` minus ``b`` (both unions)."""
    out: list[Interval] = []
    for start, end in a:
        cursor = start
        for b_start, b_end in b:
            if b_end <= cursor or b_start >= end:
                continue
            if b_start > cursor:
                out.append((cursor, b_start))
            cursor = max(cursor, b_end)
        if cursor < end:
            out.append((cursor, end))
    return out


def _covered_by(point: float, intervals: list[Interval]) -> bool:
    """``point`` lies strictly inside one of the (sorted, disjoint) intervals."""
    index = bisect.bisect_right(intervals, (point, float("inf"))) - 1
    return index >= 0 and intervals[index][0] < point < intervals[index][1]


# ---------------------------------------------------------------------- the builder


def hold_intervals(state: SummaryState) -> list[Interval]:
    """Holds in event time (epoch s), in event-time order; a hold still open at call end ends there."""
    holds: list[Interval] = []
    open_at: float | None = None
    for kind, ts in sorted(state.holds.values(), key=lambda item: (item[1], item[0] == "hold_started")):
        if kind == "hold_started" and open_at is None:
            open_at = ts
        elif kind == "hold_ended" and open_at is not None:
            holds.append((open_at, max(open_at, ts)))
            open_at = None
    if open_at is not None:
        end = state.ended["ts"] if state.ended else open_at
        holds.append((open_at, max(open_at, end)))
    return holds


def _trajectory(scores: list[float]) -> SentimentTrajectory:
    if not scores:
        return SentimentTrajectory()
    n = len(scores)
    thirds = [scores[n * k // 3 : n * (k + 1) // 3] or scores[min(n - 1, n * k // 3) : min(n - 1, n * k // 3) + 1] for k in range(3)]
    start, middle, end = (round(sum(part) / len(part), 3) for part in thirds)
    return SentimentTrajectory(start=start, middle=middle, end=end, utterances=n)


def _r(value: float) -> float:
    return round(value, 3)


def build_summary(state: SummaryState, config: SummaryConfig) -> CallSummary:
    """The call's summary from its folded state: a pure function of the state's content."""
    started_ts = state.started["ts"] if state.started else None
    ended_ts = state.ended["ts"] if state.ended else None
    total = max(0.0, ended_ts - started_ts) if started_ts is not None and ended_ts is not None else None

    holds = hold_intervals(state)
    hold_lengths = [end - start for start, end in holds]

    # Speech on the call's audio timeline (0 = call_started), from the finals that carry times.
    timed = [(key.split("/", 1)[0], f[0], f[1]) for key, f in sorted(state.finals.items()) if f[0] is not None and f[1] is not None]
    by_speaker: dict[str, list[Interval]] = {}
    for speaker, start, end in timed:
        by_speaker.setdefault(speaker, []).append((start, max(start, end)))
    unions = {speaker: union(spans) for speaker, spans in by_speaker.items()}
    speech = union(span for spans in by_speaker.values() for span in spans)
    talk = length(speech)
    agent_u, customer_u = unions.get("agent", []), unions.get("customer", [])
    crosstalk = length(intersect(agent_u, customer_u))

    speakers: dict[str, SpeakerTalk] = {}
    for speaker in sorted(set(by_speaker) | {"agent", "customer"}):
        own = unions.get(speaker, [])
        others = union(span for name, spans in unions.items() if name != speaker for span in spans)
        exclusive = length(subtract(own, others))
        interruptions = sum(1 for start, _ in by_speaker.get(speaker, []) if _covered_by(start, others))
        speakers[speaker] = SpeakerTalk(
            talk_s=_r(length(own)), talk_ratio=_r(exclusive / talk) if talk > 0 else 0.0, interruptions=interruptions
        )

    dead_air_min = config.dead_air_min_s
    dead_air = 0.0
    if speech:  # no transcript at all: nothing is known about silence
        end_audio = max(total if total is not None else 0.0, speech[-1][1])
        hold_audio = [(s - started_ts, e - started_ts) for s, e in holds] if started_ts is not None else []
        silences = subtract(subtract([(0.0, end_audio)], speech), union(hold_audio))
        dead_air = sum(end - start for start, end in silences if end - start >= dead_air_min)

    sentiment: dict[str, SentimentTrajectory] = {}
    for speaker in ("agent", "customer"):
        finals = sorted(
            (f for key, f in state.finals.items() if key.split("/", 1)[0] == speaker and f[2] is not None),
            key=lambda f: (f[0] if f[0] is not None else float("inf"), f[1] or 0.0, f[2]),
        )
        sentiment[speaker] = _trajectory([f[2] for f in finals])

    grouped: dict[str, list[tuple[str, str]]] = {}
    for alert_id, (rule_id, kind, _value) in state.alerts.items():
        grouped.setdefault(rule_id, []).append((alert_id, kind))
    alerts = {
        rule_id: RuleAlerts(kind=AlertKind(sorted(items)[0][1]), count=len(items), alert_ids=sorted(a for a, _ in items))
        for rule_id, items in sorted(grouped.items())
    }

    transfers = sorted(state.transfers.values(), key=lambda t: (t[0], t[1] or "", t[2] or ""))
    escalation = Escalation(
        transferred=bool(transfers),
        transfers=len(transfers),
        to_queue=transfers[-1][1] if transfers else None,
        to_agent_id=transfers[-1][2] if transfers else None,
        escalation_alerts=sum(1 for _rule, kind, _v in state.alerts.values() if kind == AlertKind.escalation.value),
    )

    detection = config.rules.detection if config.rules is not None else None
    checklist: list[ChecklistItem] = []
    for rule in sorted(detection.windows if detection else (), key=lambda r: r.id):
        if not rule.enabled:
            continue
        failed_kind = "missed_phrase" if rule.expect == "said" else "window_phrase"
        failures = sum(1 for rule_id, kind, _v in state.alerts.values() if rule_id == rule.id and kind == failed_kind)
        result: Literal["passed", "failed", "not_judged"] = "failed" if failures else "passed"
        if not failures and rule.expect == "said" and rule.after == "call_start" and (total is None or total < rule.within_s):
            result = "not_judged"  # the call ended before the window closed (streamproc/detect/windows.py)
        checklist.append(ChecklistItem(rule_id=rule.id, expect=rule.expect, result=result, failures=failures))

    peak = _peak_risk(state, config, sum(hold_lengths))

    offsets = [f[4] for f in state.finals.values() if f[4] is not None]
    started = state.started or {}
    return CallSummary(
        summary_id=CallSummary.make_id(state.call_id),
        call_id=state.call_id,
        queue=started.get("queue"),
        agent_id=started.get("agent_id"),
        direction=started.get("direction"),
        started_at=from_epoch(started_ts) if started_ts is not None else None,
        ended_at=from_epoch(ended_ts) if ended_ts is not None else None,
        end_reason=state.ended.get("reason") if state.ended else None,
        durations=SummaryDurations(
            total_s=_r(total) if total is not None else None,
            talk_s=_r(talk),
            hold_total_s=_r(sum(hold_lengths)),
            hold_count=len(holds),
            longest_hold_s=_r(max(hold_lengths, default=0.0)),
            dead_air_s=_r(dead_air),
        ),
        conversation=SummaryConversation(
            speakers=speakers,
            crosstalk_s=_r(crosstalk),
            crosstalk_ratio=_r(crosstalk / talk) if talk > 0 else 0.0,
            dead_air_min_s=dead_air_min,
            utterances=len(state.finals),
        ),
        sentiment=sentiment,
        alerts=alerts,
        alert_count=len(state.alerts),
        escalation=escalation,
        checklist=checklist,
        peak_risk_score=peak,
        transcript=TranscriptRef(
            topic=config.transcripts_topic,
            partition=state.transcript_partition if offsets else None,
            first_offset=min(offsets, default=None),
            last_offset=max(offsets, default=None),
            final_segments=len(state.finals),
            redacted=config.transcripts_redacted,
        ),
        transcription_complete=not state.open_utterances,
    )


def _peak_risk(state: SummaryState, config: SummaryConfig, hold_s: float) -> float | None:
    """The highest of the call's call_at_risk scores and the score recomputed from the whole call."""
    rules = [rule for rule in (config.rules.detection.risk if config.rules is not None else ()) if rule.enabled]
    alerted = [value for _rule, kind, value in state.alerts.values() if kind == AlertKind.call_at_risk.value and value is not None]
    if not rules:
        return round(max(alerted), 1) if alerted else None
    categories = {rule.id: rule.category for rule in config.rules.detection.phrases} if config.rules is not None else {}
    risk = RiskState(hold_s=hold_s)
    customer = sorted(
        (f for key, f in state.finals.items() if key.startswith("customer/") and f[2] is not None),
        key=lambda f: (f[0] if f[0] is not None else float("inf"), f[2]),
    )
    for final in customer:
        risk.add_sentiment(final[2])
    for alert_id, (rule_id, kind, _value) in sorted(state.alerts.items()):
        risk.add_alert(SimpleNamespace(alert_id=alert_id, kind=kind), categories.get(rule_id))
    recomputed = max(risk.score(rule)[0] for rule in rules)
    return round(min(100.0, max([recomputed, *alerted])), 1)


# ---------------------------------------------------------------------- the record path


@dataclass
class SummaryResult(RecordResult):
    """A :class:`RecordResult` that may carry the call's summary."""

    summary: CallSummary | None = None


class SummaryProcessor:
    """One record of events / transcripts / alerts / ticks → the call's new state and, when due, its summary."""

    def __init__(
        self,
        *,
        topics: dict[str, str],
        rules: Callable[[], RulesFile],
        transcripts_redacted: bool,
        quiet_s: float,
        max_wait_s: float,
        retention_s: float,
    ):
        self.topics = topics  # kind (events, transcripts, alerts, ticks) → full topic name
        self._kinds = {name: kind for kind, name in topics.items()}
        self._rules = rules
        self.transcripts_redacted = transcripts_redacted
        self.quiet_s = quiet_s
        self.max_wait_s = max_wait_s
        self.retention_s = retention_s
        # call id → (last input wall time, offsets folded) newer than the table: a record that changes
        # nothing the summary says (a partial of an open utterance, a redelivery) is not written to the
        # table, so a call's partials do not rewrite its whole state on the changelog several times a second.
        self._fresh: dict[str, tuple[float, dict[str, int]]] = {}

    def state_of(self, call_id: str, stored: Any) -> "SummaryState | None":
        """The call's state: the table's value with what this process read since it last wrote it."""
        state = SummaryState.from_stored(stored)
        fresh = self._fresh.get(call_id)
        if state is not None and fresh is not None:
            state.last_input_wall = max(state.last_input_wall, fresh[0])
            for kind, offset in fresh[1].items():
                state.offsets[kind] = max(state.offsets.get(kind, -1), offset)
        return state

    def config(self) -> SummaryConfig:
        return SummaryConfig(self.topics["transcripts"], self.transcripts_redacted, self._rules())

    def process(
        self,
        *,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        load_state: Callable[[str], Any],
        now_wall: float,
        partition: int | None = None,
        offset: int | None = None,
    ) -> RecordResult:
        ref = RecordRef(topic, key, value, partition, offset)
        try:
            return self._decide(ref, load_state, now_wall)
        except InputRejected as exc:
            # The agent that owns the topic (calls, detection) dead-letters this record; a second dead
            # letter from here would duplicate it. The summary just leaves it out.
            return RecordResult(ref.key_text, stage=f"rejected:{exc.reason.value}")
        except Exception as exc:  # a bug must not stop the stream: the owning agent's dead letter keeps the input
            log.exception("summary: internal error on record %s[%s]@%s", ref.topic, ref.partition, ref.offset)
            return RecordResult(ref.key_text, stage=f"rejected:{RejectReason.internal_error.value}:{type(exc).__name__}")

    def _decide(self, ref: RecordRef, load_state: Callable[[str], Any], now_wall: float) -> RecordResult:
        kind = self._kinds.get(ref.topic)
        raw = ref.value or b""
        if kind == "ticks":
            tick: Tick = parse_message(Tick, raw)
            return self._tick(tick.call_id, load_state, max(now_wall, tick.at.timestamp()))
        if kind == "events":
            event = parse_call_event(raw)
            call_id = check_key(ref.key, event.call_id)
        elif kind == "transcripts":
            segment: TranscriptSegment = parse_message(TranscriptSegment, raw)
            call_id = check_key(ref.key, segment.call_id)
        elif kind == "alerts":
            alert: Alert = parse_message(Alert, raw)
            call_id = check_key(ref.key, alert.call_id)
        else:
            raise InputRejected(RejectReason.internal_error, f"summary agent got a record of topic {ref.topic!r}")
        stored = load_state(call_id)
        state = self.state_of(call_id, stored) or SummaryState(call_id=call_id, partition=ref.partition)
        if state.emitted:
            metrics.SUMMARY_LATE_INPUTS.inc()
            return RecordResult(call_id)  # the summary is out; a late or redelivered record changes nothing
        before = _content(state)
        if kind == "events":
            state.add_event(event)
            if isinstance(event, CallEnded) and state.ended_wall is None:
                state.ended_wall = now_wall
        elif kind == "transcripts":
            state.add_segment(segment, ref.partition, ref.offset)
        else:
            state.add_alert(alert)
        state.last_input_wall = max(state.last_input_wall, now_wall)
        if ref.offset is not None:
            state.offsets[kind] = max(state.offsets.get(kind, -1), ref.offset)
        if state.partition is None:
            state.partition = ref.partition
        raw_stored = json.loads(stored) if isinstance(stored, (str, bytes)) else stored
        written_at = float(raw_stored.get("last_input_wall", 0.0)) if isinstance(raw_stored, dict) else None
        if written_at is not None and _content(state) == before and now_wall - written_at < WRITE_EVERY_S:
            self._fresh[call_id] = (state.last_input_wall, dict(state.offsets))
            return RecordResult(call_id)
        self._fresh.pop(call_id, None)
        return SummaryResult(call_id, store=state.stored())

    def _tick(self, call_id: str, load_state: Callable[[str], Any], now_wall: float) -> RecordResult:
        state = self.state_of(call_id, load_state(call_id))
        if state is None:
            return RecordResult(call_id)  # a hold tick of a call we know nothing about, or purged already
        if state.emitted:
            if state.ended_wall is not None and now_wall - state.ended_wall >= self.retention_s:
                self._fresh.pop(call_id, None)
                return RecordResult(call_id, delete=True)
            return RecordResult(call_id)
        if state.ended is None and now_wall - state.last_input_wall >= ABANDONED_AFTER_S:
            log.warning("call %s: no call_ended and no record for %.0f s; dropped without a summary", call_id, ABANDONED_AFTER_S)
            self._fresh.pop(call_id, None)
            return RecordResult(call_id, delete=True)
        if not state.due(now_wall, self.quiet_s, self.max_wait_s):
            return RecordResult(call_id)
        summary = build_summary(state, self.config())
        self._fresh.pop(call_id, None)
        # Keep only the emitted mark: late records of the call are then ignored until retention ends.
        done = SummaryState(call_id=call_id, partition=state.partition, ended_wall=state.ended_wall, emitted=True,
                            offsets=state.offsets)
        return SummaryResult(call_id, store=done.stored(), summary=summary)


def _content(state: SummaryState) -> tuple:
    """What the summary is built from, cheaply compared: unchanged → the record need not be written."""
    return (
        state.started, state.ended, len(state.holds), len(state.transfers), len(state.finals),
        sum(f[4] or 0 for f in state.finals.values()), tuple(state.open_utterances), len(state.alerts),
        state.transcript_partition, state.ended_wall,
    )


def observe(summary: CallSummary, known_queues: frozenset[str], metric_agents: frozenset[str]) -> None:
    """Per-queue and per-agent aggregates of one summary (docs/metrics.md: bounded labels, never a call id)."""
    queue = metrics.queue_label(summary.queue, known_queues)
    agent = metrics.agent_label(summary.agent_id, metric_agents)
    metrics.SUMMARIES.labels(queue, "true" if summary.transcription_complete else "false").inc()
    if summary.durations.total_s is not None:
        metrics.CALL_HANDLE_TIME.labels(queue).observe(summary.durations.total_s)
        metrics.AGENT_HANDLE_TIME.labels(agent).observe(summary.durations.total_s)
    metrics.CALL_HOLD_TOTAL.labels(queue).observe(summary.durations.hold_total_s)
    if summary.escalation.transferred:
        metrics.CALL_ESCALATIONS.labels(queue).inc()
        metrics.AGENT_CALLS_TRANSFERRED.labels(agent).inc()
    if summary.alert_count:
        metrics.CALL_ALERTED.labels(queue).inc()
