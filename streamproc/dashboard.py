"""The supervisor dashboard's view model: what the live page shows, built from topic records.

:class:`CallBoard` is fed the records of five topics (call events, alerts, acks, risk scores,
transcripts) exactly as they come off Kafka and keeps the view: active calls with their
hold state and the hold thresholds in force, the alert feed with acknowledgements, and
the last transcript lines per call, and every call's live risk score (``calls.risk``). It knows nothing of Faust or HTTP; the worker wiring
(agents/dashboard.py) runs a group-less consumer over *all* partitions and serves the
board's snapshots and change stream to browsers. docs/dashboard.md explains why.

Call state is folded with the same state machine the worker uses
(:func:`streamproc.detect.hold.apply_event`), so the page and the alerts agree on what
"on hold since" means. Wall-clock conversion uses each record's Kafka timestamp, so a
board rebuilt after a restart shows the same hold timers as one that watched live.

Every view is a plain JSON-able dict. Changes are numbered (``seq``) and kept in a ring;
a client that falls behind the ring gets a fresh snapshot instead of a gap.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import logging
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from .detect.hold import CallState, CallStatus, apply_event
from .errors import InputRejected
from .rules import RulesFile
from .schemas import Alert, AlertAck, CallRisk, CallSummary, Severity, TranscriptSegment, parse_call_event, parse_message
from .supervisors import ANONYMOUS, Directory, Supervisor

log = logging.getLogger(__name__)

SEVERITY_RANK = {Severity.info.value: 0, Severity.warning.value: 1, Severity.critical.value: 2}


@dataclass(frozen=True)
class BoardTopics:
    """Full names of the topics the board reads (``Settings.topic(...)``)."""

    events: str
    alerts: str
    acks: str
    transcripts: str
    risk: str
    summaries: str | None = None  # post-call summaries: the page shows a finished call's summary

    @classmethod
    def from_settings(cls, settings) -> "BoardTopics":
        return cls(
            events=settings.topic("events"),
            alerts=settings.topic("alerts"),
            acks=settings.topic("acks"),
            transcripts=settings.topic("transcripts"),
            risk=settings.topic("risk"),
            summaries=settings.topic("summaries"),
        )

    def all(self) -> tuple[str, ...]:
        core = (self.events, self.alerts, self.acks, self.transcripts, self.risk)
        return core + ((self.summaries,) if self.summaries else ())


class CallBoard:
    """Live view of calls, alerts, acknowledgements and transcripts for the supervisor page.

    ``apply`` one record at a time (any order across topics and partitions); read with
    :meth:`snapshot` and :meth:`changes_since`; call :meth:`expire` now and then to let
    ended calls and old alerts go.
    """

    def __init__(
        self,
        rules: RulesFile | Callable[[], RulesFile],
        topics: BoardTopics,
        *,
        max_alerts: int = 1000,
        transcript_lines: int = 40,
        max_transcript_calls: int = 2000,
        ended_linger_s: float = 60.0,
        history_s: float = 8 * 3600.0,
        change_log: int = 5000,
        max_summaries: int = 2000,
    ):
        self._rules = rules if callable(rules) else (lambda: rules)
        self.topics = topics
        self.max_alerts = max_alerts
        self.transcript_lines = transcript_lines
        self.max_transcript_calls = max_transcript_calls
        self.ended_linger_s = ended_linger_s
        self.history_s = history_s
        self._calls: dict[str, CallState] = {}
        self._last_seen: dict[str, float] = {}  # call id -> wall time of its newest event record
        # call id -> queue, also for calls whose events this board never read (from their alerts):
        # what decides which supervisor may see a call's alerts, acks and transcript lines.
        self._queues: OrderedDict[str, str] = OrderedDict()
        self._risk: dict[str, float] = {}  # call id -> latest call risk score (calls.risk, else call_at_risk alerts)
        self._risk_factors: dict[str, dict[str, float]] = {}  # call id -> points per factor of that score
        self._risk_threshold: dict[str, float] = {}  # call id -> the risk rule's call_at_risk threshold
        self._risk_live: set[str] = set()  # calls whose score comes from calls.risk (alerts no longer set it)
        self._alerts: dict[str, dict[str, Any]] = {}
        self._alert_partitions: dict[str, int | None] = {}
        self._acks: OrderedDict[str, dict[str, Any]] = OrderedDict()  # alert id -> newest ack
        self._transcripts: OrderedDict[str, OrderedDict[str, dict[str, Any]]] = OrderedDict()
        self.max_summaries = max_summaries
        self._summaries: OrderedDict[str, dict[str, Any]] = OrderedDict()  # call id → its post-call summary
        self._changes: deque[tuple[int, dict[str, Any]]] = deque(maxlen=change_log)
        self.seq = 0
        self.records = 0
        self.rejected: dict[str, int] = {}

    # ------------------------------------------------------------------ input

    def apply(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        timestamp_ms: int | None = None,
        partition: int | None = None,
    ) -> bool:
        """Fold one record into the board. Returns True when the view changed.

        Invalid records are counted in :attr:`rejected` and skipped: the worker already
        dead-letters bad input, the dashboard only must not break on it.
        """
        self.records += 1
        wall = timestamp_ms / 1000.0 if timestamp_ms and timestamp_ms > 0 else time.time()
        before = self.seq
        try:
            if topic == self.topics.events:
                self._apply_event(key, value or b"", wall, partition)
            elif topic == self.topics.alerts:
                self._apply_alert(parse_message(Alert, value or b""), partition)
            elif topic == self.topics.acks:
                self._apply_ack(parse_message(AlertAck, value or b""))
            elif topic == self.topics.transcripts:
                self._apply_transcript(parse_message(TranscriptSegment, value or b""))
            elif topic == self.topics.risk:
                self._apply_risk(parse_message(CallRisk, value or b""))
            elif self.topics.summaries is not None and topic == self.topics.summaries:
                self._apply_summary(parse_message(CallSummary, value or b""))
            else:
                raise KeyError(f"the board does not read topic {topic!r}")
        except InputRejected as rejection:
            self.rejected[rejection.reason.value] = self.rejected.get(rejection.reason.value, 0) + 1
        return self.seq != before

    def _emit(self, change: dict[str, Any]) -> None:
        self.seq += 1
        self._changes.append((self.seq, change))

    def _apply_event(self, key: bytes | None, value: bytes, wall: float, partition: int | None) -> None:
        event = parse_call_event(value)
        if key is not None and key.decode("utf-8", "replace") != event.call_id:
            return  # the worker rejects mis-keyed events (key_mismatch); so does the page
        outcome = apply_event(
            self._calls.get(event.call_id), event, self._rules().hold, received_wall=wall, partition=partition
        )
        if outcome.duplicate or outcome.rejected is not None or outcome.state is None:
            return
        self._calls[event.call_id] = outcome.state
        self._last_seen[event.call_id] = wall
        self._remember_queue(event.call_id, outcome.state.queue)
        self._emit({"type": "call", "call": self.call_view(outcome.state)})

    def _apply_alert(self, alert: Alert, partition: int | None) -> None:
        view = alert.model_dump(mode="json")
        view["ack"] = self._acks.get(alert.alert_id)
        previous = self._alerts.get(alert.alert_id)
        self._alert_partitions[alert.alert_id] = partition
        if alert.queue:
            self._remember_queue(alert.call_id, alert.queue)
        if previous == view:
            return  # a re-sent alert (at-least-once delivery): same id, nothing new to show
        self._alerts[alert.alert_id] = view
        self._emit({"type": "alert", "alert": view})
        if alert.kind == "call_at_risk" and alert.evidence.value is not None and alert.call_id not in self._risk_live:
            # no live score seen for this call (a worker without calls.risk): the alert's score sorts it
            if alert.evidence.value > self._risk.get(alert.call_id, -1.0):
                self._risk[alert.call_id] = alert.evidence.value
                self._risk_factors[alert.call_id] = dict(alert.evidence.factors or {})
                if alert.evidence.threshold is not None:
                    self._risk_threshold[alert.call_id] = alert.evidence.threshold
                if alert.call_id in self._calls:
                    self._emit({"type": "call", "call": self.call_view(self._calls[alert.call_id])})
        if len(self._alerts) > self.max_alerts:
            self._drop_alerts(sorted(self._alerts, key=lambda a: self._alerts[a]["detected_at"])[: len(self._alerts) - self.max_alerts])

    def _apply_risk(self, update: CallRisk) -> None:
        """The call's live risk score: the latest record wins (one partition per call keeps them in order),
        so a score can fall again (a customer calming down lowers the sentiment trend)."""
        self._risk_live.add(update.call_id)
        if self._risk.get(update.call_id) == update.score and self._risk_factors.get(update.call_id) == update.factors:
            return
        self._risk[update.call_id] = update.score
        self._risk_factors[update.call_id] = dict(update.factors)
        self._risk_threshold[update.call_id] = update.threshold
        if update.call_id in self._calls:
            self._emit({"type": "call", "call": self.call_view(self._calls[update.call_id])})

    def _apply_ack(self, ack: AlertAck) -> None:
        view = ack.model_dump(mode="json")
        self._acks[ack.alert_id] = view
        self._acks.move_to_end(ack.alert_id)
        while len(self._acks) > self.max_alerts * 2:
            self._acks.popitem(last=False)
        alert = self._alerts.get(ack.alert_id)
        if alert is not None:
            alert["ack"] = view
        self._emit({"type": "ack", "ack": view})

    def _apply_transcript(self, segment: TranscriptSegment) -> None:
        lines = self._transcripts.get(segment.call_id)
        if lines is None:
            lines = self._transcripts[segment.call_id] = OrderedDict()
            while len(self._transcripts) > self.max_transcript_calls:
                self._transcripts.popitem(last=False)
        self._transcripts.move_to_end(segment.call_id)
        line_key = f"{segment.speaker.value}/{segment.utterance}"
        current = lines.get(line_key)
        if current is not None and (current["is_final"] or (not segment.is_final and segment.revision < current["revision"])):
            return  # a final is never replaced by a partial; older partial revisions are late
        line = {
            "key": line_key,
            "call_id": segment.call_id,
            "speaker": segment.speaker.value,
            "utterance": segment.utterance,
            "revision": segment.revision,
            "is_final": segment.is_final,
            "text": segment.text,
            "start_s": segment.start_s,
            "end_s": segment.end_s,
            "emitted_at": segment.emitted_at.isoformat(),
            "source": segment.source,
        }
        lines[line_key] = line
        if current is None:
            while len(lines) > self.transcript_lines:
                lines.popitem(last=False)
        self._emit({"type": "transcript", "call_id": segment.call_id, "line": line})

    def _apply_summary(self, summary: CallSummary) -> None:
        view = summary.model_dump(mode="json")
        if self._summaries.get(summary.call_id) == view:
            return  # a re-sent summary (same id, same content): nothing new
        self._summaries[summary.call_id] = view
        self._summaries.move_to_end(summary.call_id)
        while len(self._summaries) > self.max_summaries:
            self._summaries.popitem(last=False)
        self._emit({"type": "summary", "call_id": summary.call_id, "summary": view})
        if summary.call_id in self._calls:  # the row shows that the summary is there
            self._emit({"type": "call", "call": self.call_view(self._calls[summary.call_id])})

    # ------------------------------------------------------------------ housekeeping

    def expire(self, now: float | None = None) -> int:
        """Drop ended calls after their linger time and anything older than the history window."""
        now = time.time() if now is None else now
        dropped = 0
        for call_id, state in list(self._calls.items()):
            seen = self._last_seen.get(call_id, now)
            ended_long_ago = state.status is CallStatus.ended and now - seen > self.ended_linger_s
            if ended_long_ago or now - seen > self.history_s:
                del self._calls[call_id]
                self._last_seen.pop(call_id, None)
                self._risk.pop(call_id, None)
                self._risk_factors.pop(call_id, None)
                self._risk_threshold.pop(call_id, None)
                self._risk_live.discard(call_id)
                self._transcripts.pop(call_id, None)
                self._emit({"type": "call_removed", "call_id": call_id, "queue": state.queue})
                dropped += 1
        horizon = now - self.history_s
        old = [alert_id for alert_id, alert in self._alerts.items() if _epoch(alert["detected_at"]) < horizon]
        self._drop_alerts(old)
        return dropped + len(old)

    def _drop_alerts(self, alert_ids: Iterable[str]) -> None:
        for alert_id in list(alert_ids):
            alert = self._alerts.pop(alert_id, None)
            if alert is not None:
                self._alert_partitions.pop(alert_id, None)
                self._emit({"type": "alert_removed", "alert_id": alert_id, "queue": self._alert_queue(alert)})

    # ------------------------------------------------------------------ who may see what

    def _remember_queue(self, call_id: str, queue: str | None) -> None:
        if not queue:
            return
        self._queues[call_id] = queue
        self._queues.move_to_end(call_id)
        while len(self._queues) > max(self.max_transcript_calls, self.max_alerts) * 10:
            self._queues.popitem(last=False)

    def queue_of(self, call_id: str) -> str | None:
        state = self._calls.get(call_id)
        if state is not None and state.queue:
            return state.queue
        return self._queues.get(call_id)

    def _alert_queue(self, alert: dict[str, Any]) -> str | None:
        return alert.get("queue") or self.queue_of(alert["call_id"])

    def alert_queue(self, alert_id: str) -> str | None:
        alert = self._alerts.get(alert_id)
        return self._alert_queue(alert) if alert is not None else None

    def _change_queue(self, change: dict[str, Any]) -> str | None:
        kind = change["type"]
        if kind == "call":
            return change["call"]["queue"]
        if kind == "alert":
            return self._alert_queue(change["alert"])
        if kind in ("call_removed", "alert_removed"):
            return change.get("queue")
        if kind == "ack":
            return self.alert_queue(change["ack"]["alert_id"]) or self.queue_of(change["ack"]["call_id"])
        return self.queue_of(change["call_id"])  # transcript

    # ------------------------------------------------------------------ output

    def call_view(self, state: CallState) -> dict[str, Any]:
        """One call as the page shows it; times are wall-clock epoch seconds."""
        offset = state.clock_offset_s
        policy = self._rules().hold.for_queue(state.queue)
        return {
            "call_id": state.call_id,
            "agent_id": state.agent_id,
            "queue": state.queue,
            "status": state.status.value,
            "started_at": state.started_at + offset,
            "ended_at": state.ended_at + offset if state.ended_at is not None else None,
            "hold_started_at": state.hold_started_at + offset if state.hold_started_at is not None else None,
            "hold_count": state.hold_count,
            "completed_hold_s": round(state.completed_hold_s, 3),
            "risk": self._risk.get(state.call_id),  # live call risk score 0-100 (calls.risk); None until one is seen
            "risk_threshold": self._risk_threshold.get(state.call_id),
            "risk_factors": {k: v for k, v in self._risk_factors.get(state.call_id, {}).items() if v},  # non-zero points
            "has_summary": state.call_id in self._summaries,  # a post-call summary was read for it
            # The per-hold thresholds of the rules in force for this queue: the page colours the timer with them.
            "hold_thresholds": [
                {"id": rule.id, "after_s": rule.after_s, "severity": rule.severity.value} for rule in policy.thresholds
            ],
        }

    def calls(self) -> list[dict[str, Any]]:
        """Calls, riskiest first, then by start."""
        return sorted((self.call_view(state) for state in self._calls.values()), key=lambda c: (-(c["risk"] or 0), c["started_at"]))

    def alerts(self) -> list[dict[str, Any]]:
        """Alerts, newest first."""
        return sorted(self._alerts.values(), key=lambda a: a["detected_at"], reverse=True)

    def alert(self, alert_id: str) -> dict[str, Any] | None:
        return self._alerts.get(alert_id)

    def alert_partition(self, alert_id: str) -> int | None:
        return self._alert_partitions.get(alert_id)

    def call_partition(self, call_id: str) -> int | None:
        state = self._calls.get(call_id)
        return state.partition if state is not None else None

    def transcript(self, call_id: str) -> list[dict[str, Any]]:
        return list(self._transcripts.get(call_id, {}).values())

    def summary(self, call_id: str) -> dict[str, Any] | None:
        return self._summaries.get(call_id)

    def snapshot(self, call_id: str | None = None, now: float | None = None, viewer: Supervisor = ANONYMOUS) -> dict[str, Any]:
        """Everything a page needs to draw itself; ``call_id`` selects whose transcript is included.

        Only what ``viewer`` may see: calls, alerts and transcript of their queues (filtered here, on
        the server: the page never receives another queue's data)."""
        everything = viewer.queues is None
        if call_id and not everything and not viewer.may_see(self.queue_of(call_id)):
            call_id = None
        return {
            "seq": self.seq,
            "server_time": time.time() if now is None else now,
            "calls": [c for c in self.calls() if everything or viewer.may_see(c["queue"])],
            "alerts": [a for a in self.alerts() if everything or viewer.may_see(self._alert_queue(a))],
            "transcript": {"call_id": call_id, "lines": self.transcript(call_id)} if call_id else None,
            "summary": self.summary(call_id) if call_id else None,
        }

    def changes_since(
        self, seq: int, call_id: str | None = None, viewer: Supervisor = ANONYMOUS
    ) -> list[dict[str, Any]] | None:
        """Changes after ``seq`` that ``viewer`` may see, transcripts only for ``call_id``; None when the
        ring no longer has them."""
        if seq >= self.seq:
            return []
        if not self._changes or self._changes[0][0] > seq + 1:
            return None
        # Numbers are consecutive: skip straight to seq + 1 (in C, cheap with many clients).
        first = self._changes[0][0]
        changes = [
            change
            for _, change in itertools.islice(self._changes, max(0, seq + 1 - first), None)
            if change["type"] not in ("transcript", "summary") or change["call_id"] == call_id
        ]
        if viewer.queues is None:
            return changes
        return [change for change in changes if viewer.may_see(self._change_queue(change))]

    def stats(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "records": self.records,
            "calls": len(self._calls),
            "alerts": len(self._alerts),
            "acks": len(self._acks),
            "transcript_calls": len(self._transcripts),
            "summaries": len(self._summaries),
            "rejected": dict(self.rejected),
        }


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


# --------------------------------------------------------------------------- access control

SESSION_COOKIE = "streamproc_dashboard"


def session_value(token: str) -> str:
    """Cookie value for a dashboard token: derived from it, so the cookie never holds the token itself."""
    return hmac.new(token.encode("utf-8"), b"streamproc-dashboard-session-v1", hashlib.sha256).hexdigest()


def is_authorized(
    token: str | None,
    *,
    authorization: str | None = None,
    cookie: str | None = None,
    query_token: str | None = None,
) -> bool:
    """Whether a request may see the dashboard.

    No token configured: everyone (the server binds to 127.0.0.1 by default). Otherwise any of:
    ``Authorization: Bearer <token>``, the session cookie set by the login page, or
    ``?token=<token>`` (for clients that cannot set headers; the page trades it for the cookie).
    Comparisons are constant-time.
    """
    if not token:
        return True
    if authorization:
        scheme, _, credential = authorization.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(credential.strip().encode(), token.encode()):
            return True
    if cookie and hmac.compare_digest(cookie.encode(), session_value(token).encode()):
        return True
    if query_token and hmac.compare_digest(query_token.encode(), token.encode()):
        return True
    return False


def bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, credential = authorization.partition(" ")
    return credential.strip() or None if scheme.lower() == "bearer" else None


def authenticate(
    token: str | None,
    directory: Directory | None,
    *,
    authorization: str | None = None,
    cookie: str | None = None,
    query_token: str | None = None,
) -> Supervisor | None:
    """Who is asking, or None when the request is not authenticated.

    With a supervisors tokens file (``directory``): the supervisor whose token comes as
    ``Authorization: Bearer``, ``?token=`` or whose login cookie it is; the shared ``token`` is then
    not accepted (it carries no identity). Without one: :data:`ANONYMOUS` (every queue, no name)
    when :func:`is_authorized` lets the request in (the shared page token, or open mode).
    """
    if directory is not None and directory.enabled:
        for credential in (bearer(authorization), query_token):
            if credential:
                found = directory.by_token(credential)
                if found is not None:
                    return found
        return directory.by_session(cookie) if cookie else None
    if is_authorized(token, authorization=authorization, cookie=cookie, query_token=query_token):
        return ANONYMOUS
    return None
