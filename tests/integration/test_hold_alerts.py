"""Call events in, hold alerts out, through the real broker and a real worker process."""

from __future__ import annotations

import time

import pytest

from tests.conftest import event, send

pytestmark = pytest.mark.broker


def alerts_for(values, call_id):
    return [value for value in values if value["call_id"] == call_id]


def test_hold_crossing_two_thresholds_alerts_while_still_on_hold(worker_factory, reader, producer):
    worker = worker_factory()
    alerts = reader(worker.topic("alerts"))
    events = worker.topic("events")
    send(producer, events, "call-1", event("call-1", "call_started", agent_id="agent-7", queue="billing", customer_id="c-9"))
    hold_started = time.time()
    send(producer, events, "call-1", event("call-1", "hold_started", ts=hold_started))

    values = alerts.wait_for(lambda v: len(alerts_for(v, "call-1")) >= 2, timeout_s=15)
    received_at = time.time()
    call_alerts = alerts_for(values, "call-1")
    assert [a["rule_id"] for a in call_alerts] == ["hold-warning", "hold-critical"]
    assert [a["severity"] for a in call_alerts] == ["warning", "critical"]
    assert all(a["kind"] == "hold_breach" and a["agent_id"] == "agent-7" and a["queue"] == "billing" for a in call_alerts)
    # Both alerts arrive while the customer is still on hold: hold_ended has not been sent.

    assert received_at - hold_started < 4 + 2.0
    for alert, threshold in zip(call_alerts, (2, 4)):
        detected = alert_time(alert["detected_at"])
        crossed = alert_time(alert["event_time"])
        assert crossed == pytest.approx(hold_started + threshold, abs=0.01)
        assert 0 <= detected - crossed < 1.0, "alert should be emitted within a second of the threshold"
    # Still on hold, call-1 would cross cumulative-hold (6 s of hold, FAST_HOLD_RULES) next. End the
    # hold first, then wait on a sentinel call whose 4 s threshold falls due after that 6 s mark:
    # once its alert is out, the worker's timer has passed call-1's deadline too.
    ended_at = time.time()
    assert ended_at < hold_started + 6 - 0.5, "the hold must end before its cumulative threshold for this check"
    send(producer, events, "call-1", event("call-1", "hold_ended", ts=ended_at))
    send(producer, events, "call-1", event("call-1", "call_ended"))
    send(producer, events, "call-2", event("call-2", "call_started", agent_id="agent-8", queue="billing"))
    sentinel_hold = time.time()
    assert sentinel_hold + 4 > hold_started + 6
    send(producer, events, "call-2", event("call-2", "hold_started", ts=sentinel_hold))
    values = alerts.wait_for(lambda v: any(a["rule_id"] == "hold-critical" for a in alerts_for(v, "call-2")), timeout_s=15)
    assert any(a["rule_id"] == "hold-critical" for a in alerts_for(values, "call-2")), "the sentinel call's alert"
    assert [a["rule_id"] for a in alerts_for(values, "call-1")] == ["hold-warning", "hold-critical"], (
        "no more alerts after the hold ended")


def alert_time(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


RELOAD_BEFORE = """
version: 1
hold:
  defaults:
    thresholds:
      - {id: hold-warning, after_s: 600, severity: warning}
"""


def test_hold_threshold_hot_reload_applies_to_holds_in_progress_and_new_ones(worker_factory, reader, producer):
    """The rules file changes under a running worker: the lowered threshold applies without a
    restart to a call already on hold (event_time = its hold start + the NEW threshold) and to a
    hold that starts after the reload. Waits on the worker's reload counter, never a pause."""
    from pathlib import Path

    from tests.integration.test_detection_pipeline import wait_for_reloads

    worker = worker_factory(RELOAD_BEFORE, rules_reload_interval_s="0.5", audio_enabled="false", dashboard_enabled="false")
    alerts = reader(worker.topic("alerts"))
    events = worker.topic("events")
    send(producer, events, "rl-old", event("rl-old", "call_started", agent_id="agent-1", queue="billing"))
    old_hold = time.time()
    send(producer, events, "rl-old", event("rl-old", "hold_started", ts=old_hold))

    rules_path = Path(worker.env["STREAMPROC_RULES_FILE"])
    rules_path.write_text(RELOAD_BEFORE.replace("after_s: 600", "after_s: 3"))
    wait_for_reloads(worker, "ok", 1)
    send(producer, events, "rl-new", event("rl-new", "call_started", agent_id="agent-2", queue="billing"))
    new_hold = time.time()
    send(producer, events, "rl-new", event("rl-new", "hold_started", ts=new_hold))

    # The timer re-reads every call's deadline at least every 5 s (agents/calls.py REBUILD_EVERY_S).
    values = alerts.wait_for(lambda v: {a["call_id"] for a in v} >= {"rl-old", "rl-new"}, timeout_s=30)
    by_call = {a["call_id"]: a for a in values}
    assert set(by_call) == {"rl-old", "rl-new"}, values
    assert alert_time(by_call["rl-old"]["event_time"]) == pytest.approx(old_hold + 3, abs=0.01)
    assert alert_time(by_call["rl-new"]["event_time"]) == pytest.approx(new_hold + 3, abs=0.01)
    assert all(a["rule_id"] == "hold-warning" and a["evidence"]["threshold"] == 3 for a in values)
    assert worker.starts == 1
