"""streamproc alerts tail, the part without a broker: filters, dedupe window, --since, lines."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from streamproc.alerts_tail import Filters, SeenIds, Tail, TailError, contract_for, json_line, parse_since, row
from streamproc.contract import TOPICS, example_record
from streamproc.schemas import Alert

ALERTS = TOPICS["alerts"]


def alert(call_id="CA-1", rule_id="hold-warning", severity="warning", queue="billing", occurrence=1) -> bytes:
    return json.dumps({
        "alert_id": Alert.make_id(call_id, rule_id, occurrence), "call_id": call_id, "queue": queue,
        "kind": "hold_breach", "rule_id": rule_id, "severity": severity, "occurrence": occurrence,
        "title": f"{rule_id} on {call_id}", "event_time": "2026-11-24T10:02:00Z", "detected_at": "2026-11-24T10:02:01Z",
    }).encode()


def offer(tail: Tail, value: bytes, call_id: str = "CA-1", timestamp_ms: int | None = None):
    return tail.offer(ALERTS, call_id.encode(), value, [], timestamp_ms)


def test_severity_is_a_minimum():
    tail = Tail(Filters(min_severity="warning"))
    assert offer(tail, alert(severity="info")) is None
    assert offer(tail, alert(severity="warning")) is not None
    assert offer(tail, alert(rule_id="hold-critical", severity="critical")) is not None
    assert tail.filtered == 1
    with pytest.raises(TailError):
        Filters(min_severity="loud")


def test_queue_and_rule_filters_take_any_of_their_values():
    tail = Tail(Filters(queues=frozenset({"billing", "vip"}), rules=frozenset({"hold-warning"})))
    assert offer(tail, alert(queue="sales")) is None
    assert offer(tail, alert(rule_id="rude")) is None
    assert offer(tail, alert(queue="vip", call_id="CA-2"), call_id="CA-2") is not None
    assert offer(tail, alert(queue="billing")) is not None


def test_a_redelivered_alert_is_shown_once():
    tail = Tail()
    assert offer(tail, alert()) is not None
    assert offer(tail, alert()) is None
    assert tail.shown == 1 and tail.seen.duplicates == 1
    assert "1 duplicates dropped" in tail.summary_line()


def test_dedupe_window_is_bounded_and_forgets_the_least_recent():
    seen = SeenIds(capacity=2)
    assert seen.first_time("a") and seen.first_time("b")
    assert not seen.first_time("a")  # a is now the most recent
    assert seen.first_time("c")  # evicts b
    assert len(seen) == 2
    assert not seen.first_time("a") and seen.first_time("b")


def test_unreadable_and_mis_keyed_records_are_counted_not_shown():
    tail = Tail()
    assert offer(tail, b"{not json") is None
    assert offer(tail, alert(call_id="CA-1"), call_id="CA-9") is None  # key must be the call id, as for the agents
    assert tail.invalid == 2 and tail.shown == 0


def test_records_older_than_since_are_skipped():
    tail = Tail(since_ms=1_000_000)
    assert offer(tail, alert(), timestamp_ms=999_999) is None
    assert offer(tail, alert(), timestamp_ms=1_000_000) is not None


def test_since_takes_durations_and_iso_times():
    now = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)
    assert parse_since("15m", now) == now - timedelta(minutes=15)
    assert parse_since("2h", now) == now - timedelta(hours=2)
    assert parse_since("1.5d", now) == now - timedelta(hours=36)
    assert parse_since("90s", now) == now - timedelta(seconds=90)
    assert parse_since("2026-11-24T10:00:00Z", now) == datetime(2026, 11, 24, 10, tzinfo=timezone.utc)
    assert parse_since("2026-11-24T10:00:00", now) == datetime(2026, 11, 24, 10, tzinfo=timezone.utc)
    assert parse_since("2026-11-24T11:00:00+01:00", now) == datetime(2026, 11, 24, 10, tzinfo=timezone.utc)
    with pytest.raises(TailError):
        parse_since("yesterday", now)


def test_json_line_is_the_message_plus_its_topic():
    tail = Tail()
    shown = offer(tail, alert())
    line = json.loads(json_line(shown))
    assert line["topic"] == "alerts" and line["rule_id"] == "hold-warning" and line["schema_version"] == 1
    Alert.model_validate(line)  # a script can parse the line with the same model


def test_table_row_of_an_alert():
    shown = offer(Tail(), alert())
    assert row(shown) == {"time": "10:02:00", "severity": "warning", "queue": "billing", "call": "CA-1", "agent": "",
                          "rule": "hold-warning", "title": "hold-warning on CA-1"}


def summary_record(call_id: str, queue: str) -> bytes:
    """A real CallSummary (the contract's example, re-keyed): the tail parses it with the model."""
    from streamproc.contract import TOPICS
    from streamproc.schemas import CallSummary

    example = dict(TOPICS["summaries"].examples[0].payload)  # type: ignore[arg-type]
    example.update(call_id=call_id, queue=queue, summary_id=str(CallSummary.make_id(call_id)))
    return CallSummary.model_validate(example).to_json_bytes()


def test_summaries_are_parsed_with_their_model_and_deduped_by_summary_id():
    contract = contract_for("summaries")
    assert contract.id_field == "summary_id"
    tail = Tail(Filters(queues=frozenset({"billing"}), min_severity="critical", rules=frozenset({"x"})))
    summary = summary_record("CA-1", "billing")
    shown = tail.offer(contract, b"CA-1", summary)
    assert shown is not None, "--severity/--rule do not hide summaries; --queue does"
    assert tail.offer(contract, b"CA-1", summary) is None
    assert tail.offer(contract, b"CA-2", summary_record("CA-2", "sales")) is None
    assert tail.offer(contract, b"CA-3", json.dumps({"summary_id": "s-3", "call_id": "CA-3"}).encode()) is None
    assert tail.invalid == 1, "a record that is not a CallSummary is unreadable, not shown"
    assert row(shown)["rule"] == "summary"
    assert row(shown)["title"] == ("80 s, hold 40 s in 2, 3 alerts (call-at-risk, mgr, no-price), peak risk 64, "
                                   "transferred to retention, checklist failed: no-price")


def test_registry_examples_pass_the_tail():
    tail = Tail()
    for example in ALERTS.examples:
        key, value, headers = example_record(example)
        assert tail.offer(ALERTS, key, value, headers) is not None


def _record(exc: BaseException | None):
    import logging
    import sys

    try:
        if exc is not None:
            raise exc
    except BaseException:
        info = sys.exc_info()
    else:
        info = None
    return logging.LogRecord("kafka.net.selector", logging.ERROR, __file__, 1, "Unhandled exception in task %s:", ("t",), info)


def test_only_the_closed_socket_record_of_a_closing_consumer_is_dropped():
    """kafka-python 3.0.12 logs a traceback for a read on the socket close() just closed (seen on Ctrl-C in CI):
    the tail drops that record and keeps every other one."""
    from streamproc.alerts_tail import ClosedSocketNoise

    noise = ClosedSocketNoise()
    assert not noise.filter(_record(ValueError("Invalid file descriptor: -1")))
    assert noise.filter(_record(ValueError("Invalid file descriptor: 7")))
    assert noise.filter(_record(KeyError("something else")))
    assert noise.filter(_record(None))
