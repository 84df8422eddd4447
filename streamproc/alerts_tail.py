"""``streamproc alerts tail``: follow the alert topic (and post-call summaries) for people and scripts.

The pure part (what to show, what is a duplicate, how a line looks) is here and unit-tested;
:func:`follow` is the Kafka loop (kafka-python, all partitions, no consumer group: a tail must
not take partitions away from anyone, and it commits nothing).

Delivery on ``calls.alerts`` is at least once: after a worker crash the same alert can arrive
again, always with the same ``alert_id``. The tail keeps the ids it has shown in a bounded LRU
and drops repeats, as every downstream consumer should (docs/schemas.md).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable

from .contract import TOPICS, TopicContract, parse_record
from .errors import InputRejected
from .schemas import Severity

SEVERITY_ORDER = {severity.value: rank for rank, severity in enumerate(Severity)}
SUMMARIES = "summaries"


class TailError(ValueError):
    pass


# --------------------------------------------------------------------------- what to read


def contract_for(name: str) -> TopicContract:
    """The registry entry of a topic (streamproc/contract.py): its parser and the id it dedupes on."""
    return TOPICS[name]


# --------------------------------------------------------------------------- filters, dedupe


@dataclass(frozen=True)
class Filters:
    """``--queue`` (any of), ``--severity`` (a minimum: ``warning`` shows warning and critical), ``--rule``
    (any of). A filter applies to records that have the field: summaries carry a queue but no single
    severity or rule, so ``--severity``/``--rule`` never hide a summary."""

    queues: frozenset[str] = frozenset()
    min_severity: str | None = None
    rules: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.min_severity is not None and self.min_severity not in SEVERITY_ORDER:
            raise TailError(f"unknown severity {self.min_severity!r}: one of {', '.join(SEVERITY_ORDER)}")

    def accepts(self, record: dict[str, Any]) -> bool:
        if self.queues and record.get("queue") not in self.queues:
            return False
        severity = record.get("severity")
        if self.min_severity is not None and severity is not None:
            if SEVERITY_ORDER.get(severity, -1) < SEVERITY_ORDER[self.min_severity]:
                return False
        rule = record.get("rule_id")
        if self.rules and rule is not None and rule not in self.rules:
            return False
        return True


class SeenIds:
    """The ids already shown, least recently seen evicted first: memory stays bounded on an endless tail."""

    def __init__(self, capacity: int = 100_000):
        if capacity < 1:
            raise TailError("the dedupe window must hold at least one id")
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()
        self.duplicates = 0

    def first_time(self, identifier: str) -> bool:
        if identifier in self._ids:
            self._ids.move_to_end(identifier)
            self.duplicates += 1
            return False
        self._ids[identifier] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._ids)


# --------------------------------------------------------------------------- where to start


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``--since``: a duration back from now (``90s``, ``15m``, ``2h``, ``1d``) or an ISO 8601 time
    (``2026-11-24T10:00:00Z``; without a timezone it is UTC)."""
    now = now or datetime.now(timezone.utc)
    match = _DURATION.match(text.lower())
    if match:
        return now - timedelta(seconds=float(match.group(1)) * _UNIT_S[match.group(2)])
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise TailError(f"--since {text!r}: not a duration (90s, 15m, 2h, 1d) nor an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


# --------------------------------------------------------------------------- one record


@dataclass
class Shown:
    """One record to show: the topic's short name and the message as JSON-ready data."""

    topic: str
    record: dict[str, Any]
    timestamp_ms: int | None = None


@dataclass
class Tail:
    """Decides what to show; counts what it hid. Feed it records with :meth:`offer`."""

    filters: Filters = field(default_factory=Filters)
    seen: SeenIds = field(default_factory=SeenIds)
    since_ms: int | None = None
    shown: int = 0
    filtered: int = 0
    invalid: int = 0

    def offer(self, contract: TopicContract, key: bytes | None, value: bytes | None,
              headers: list[tuple[str, bytes]] | None = None, timestamp_ms: int | None = None) -> Shown | None:
        if self.since_ms is not None and timestamp_ms is not None and timestamp_ms < self.since_ms:
            return None  # offsets_for_times starts at or before the time: records just before it are skipped here
        try:
            message = parse_record(contract, key, value, headers)
        except InputRejected:
            self.invalid += 1  # not ours to judge (a producer's problem); never stop the tail for it
            return None
        record = message if isinstance(message, dict) else message.model_dump(mode="json", exclude_none=True)
        identifier = record.get(contract.id_field) if contract.id_field else None
        if not self.filters.accepts(record):
            self.filtered += 1
            return None
        if identifier is not None and not self.seen.first_time(f"{contract.name}\x1f{identifier}"):
            return None
        self.shown += 1
        return Shown(contract.name, record, timestamp_ms)

    def summary_line(self) -> str:
        return (f"{self.shown} shown, {self.seen.duplicates} duplicates dropped (same id: at-least-once redelivery), "
                f"{self.filtered} filtered out, {self.invalid} unreadable")


def json_line(shown: Shown) -> str:
    """``--json``: one object per line, the message as on the topic plus ``"topic"`` (``alerts``/``summaries``)."""
    return json.dumps({"topic": shown.topic, **shown.record}, ensure_ascii=False, separators=(",", ":"))


def row(shown: Shown) -> dict[str, str]:
    """The table columns of one record."""
    record = shown.record
    when = record.get("event_time") or record.get("ended_at") or record.get("emitted_at")
    if when is None and shown.timestamp_ms is not None:
        when = datetime.fromtimestamp(shown.timestamp_ms / 1000, timezone.utc).isoformat()
    if shown.topic == "alerts":
        what, title = record.get("rule_id", ""), record.get("title", "")
    elif shown.topic == SUMMARIES:
        what, title = "summary", summary_title(record)
    else:
        what, title = shown.topic, ""
    return {
        "time": _clock(when),
        "severity": record.get("severity", ""),
        "queue": record.get("queue") or "",
        "call": record.get("call_id", ""),
        "agent": record.get("agent_id") or "",
        "rule": what,
        "title": title,
    }


def summary_title(summary: dict[str, Any]) -> str:
    """One line a supervisor reads: how long, how much hold, what went wrong, how it ended."""
    durations = summary.get("durations") or {}
    parts = []
    if durations.get("total_s") is not None:
        parts.append(f"{durations['total_s']:.0f} s")
    if durations.get("hold_count"):
        parts.append(f"hold {durations.get('hold_total_s', 0):.0f} s in {durations['hold_count']}")
    count = summary.get("alert_count", 0)
    parts.append(f"{count} alert{'s' if count != 1 else ''}" + (f" ({', '.join(sorted(summary.get('alerts') or {}))})" if count else ""))
    if summary.get("peak_risk_score") is not None:
        parts.append(f"peak risk {summary['peak_risk_score']:.0f}")
    escalation = summary.get("escalation") or {}
    if escalation.get("transferred"):
        parts.append(f"transferred to {escalation.get('to_queue') or escalation.get('to_agent_id') or '?'}")
    failed = [c["rule_id"] for c in summary.get("checklist") or [] if c.get("result") == "failed"]
    if failed:
        parts.append(f"checklist failed: {', '.join(failed)}")
    return ", ".join(parts)


def _clock(when: str | None) -> str:
    if not when:
        return ""
    try:
        return datetime.fromisoformat(when.replace("Z", "+00:00")).astimezone(timezone.utc).strftime("%H:%M:%S")
    except ValueError:
        return when


# --------------------------------------------------------------------------- the Kafka loop


class ClosedSocketNoise(logging.Filter):
    """Drops kafka-python's "Unhandled exception in task" record for a read on a socket that ``close()`` has just
    closed (fd -1). kafka-python 3.0.12 logs it, with a traceback, when the consumer closes while a fetch is in
    flight, as the tail does on Ctrl-C: the record says nothing about the tail's work, which ended cleanly."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (isinstance(exc, ValueError) and str(exc) == "Invalid file descriptor: -1")


#: one instance: Logger.addFilter ignores a filter it already holds, so repeated follow() calls add it once
_CLOSED_SOCKET_NOISE = ClosedSocketNoise()


def follow(
    settings: Any,
    contracts: Iterable[TopicContract],
    tail: Tail,
    emit: Callable[[Shown], None],
    *,
    from_beginning: bool = False,
    since: datetime | None = None,
    stop: Callable[[], bool] = lambda: False,
    on_ready: Callable[[list[str]], None] = lambda topics: None,
    wait_for_topics_s: float = 30.0,
) -> None:
    """Read the topics from the start point until ``stop()`` or KeyboardInterrupt; the consumer is always closed.

    Start point: ``from_beginning``; else ``since`` (the default is now), found per partition with
    ``offsets_for_times``; partitions with nothing that recent start at their end.
    """
    from kafka import KafkaConsumer, TopicPartition

    from .kafka_admin import client_security

    contracts = list(contracts)
    by_topic = {contract.topic(settings.topic_prefix): contract for contract in contracts}
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False, group_id=None,
                             fetch_max_wait_ms=200, client_id="streamproc-alerts-tail", **client_security(settings))
    try:
        # List the topics first and never name a missing one: a metadata request naming it would
        # make the broker auto-create it (docs/broker.md).
        deadline = time.monotonic() + wait_for_topics_s
        while True:
            missing = [name for name in by_topic if name not in consumer.topics()]
            if not missing:
                break
            if stop():
                return
            if time.monotonic() > deadline:
                raise TailError(f"topic(s) {', '.join(missing)} do not exist on {settings.broker}")
            time.sleep(0.5)
        partitions = [TopicPartition(name, number) for name in by_topic
                      for number in sorted(consumer.partitions_for_topic(name) or ())]
        consumer.assign(partitions)
        if from_beginning:
            consumer.seek_to_beginning(*partitions)
        else:
            start = since or datetime.now(timezone.utc)
            tail.since_ms = int(start.timestamp() * 1000)
            found = consumer.offsets_for_times({tp: tail.since_ms for tp in partitions})
            for tp in partitions:
                hit = found.get(tp)
                if hit is None:
                    consumer.seek_to_end(tp)
                else:
                    consumer.seek(tp, hit.offset)
        for tp in partitions:
            consumer.position(tp)  # resolve the start now: what is produced after on_ready is seen
        on_ready(list(by_topic))
        while not stop():
            for tp, records in consumer.poll(timeout_ms=200).items():
                contract = by_topic[tp.topic]
                for record in records:
                    shown = tail.offer(contract, record.key, record.value, list(record.headers or []), record.timestamp)
                    if shown is not None:
                        emit(shown)
    finally:
        logging.getLogger("kafka.net.selector").addFilter(_CLOSED_SOCKET_NOISE)  # from here on the consumer is closing
        consumer.close()
