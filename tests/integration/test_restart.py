"""A worker killed mid-hold: what happens to the state table and to the alerts.

Results are recorded in docs/state-and-restarts.md.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime

import pytest

from streamproc.schemas import Alert
from tests.conftest import event, send
from tests.integration.test_hold_alerts import alerts_for

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.both_brokers]

RESTART_RULES = """
version: 1
hold:
  defaults:
    thresholds:
      - {id: hold-warning, after_s: 3, severity: warning}
      - {id: hold-critical, after_s: 12, severity: critical}
"""


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_sigkill_mid_hold_resumes_from_the_table_without_new_alert_ids(worker_factory, reader, producer):
    worker = worker_factory(RESTART_RULES)
    events, alerts = worker.topic("events"), reader(worker.topic("alerts"))
    hold_started = time.time()
    send(producer, events, "r1", event("r1", "call_started", ts=hold_started - 1, agent_id="a", queue="q"))
    send(producer, events, "r1", event("r1", "hold_started", ts=hold_started))
    first = alerts.wait_for(lambda v: alerts_for(v, "r1"), timeout_s=10)
    assert [a["rule_id"] for a in alerts_for(first, "r1")] == ["hold-warning"]
    time.sleep(1.0)  # let the table's changelog write of "warning fired" reach the broker

    worker.kill()  # SIGKILL: no shutdown, no final offset commit
    killed_at = time.time()
    worker.start()
    ready_after = time.time() - killed_at
    print(f"\nrestart: ready {ready_after:.2f}s after SIGKILL")

    values = alerts.wait_for(lambda v: any(a["rule_id"] == "hold-critical" for a in alerts_for(v, "r1")), timeout_s=30)
    call_alerts = alerts_for(values, "r1")
    ids = Counter(a["alert_id"] for a in call_alerts)
    assert set(ids) == {Alert.make_id("r1", "hold-warning", 1), Alert.make_id("r1", "hold-critical", 1)}, (
        "only the deterministic ids, never a second id for the same breach"
    )
    critical = next(a for a in call_alerts if a["rule_id"] == "hold-critical")
    # The hold timer continued from the right elapsed time: crossing at hold start + 12 s.
    assert ts(critical["event_time"]) == pytest.approx(hold_started + 12, abs=0.01)
    # Emitted promptly once the new worker owns the call (the group takes ~13 s to hand the
    # dead member's partitions over: its session must time out first).
    due_at = max(ts(critical["event_time"]), killed_at + ready_after)
    assert ts(critical["detected_at"]) - due_at < 2.0
    print(f"alert copies per id: {dict(ids)}")
    assert ids[Alert.make_id("r1", "hold-warning", 1)] == 1, "the warning's 'fired' mark was recovered from the changelog"


def test_breaches_during_downtime_fire_on_restart_with_their_original_times(worker_factory, reader, producer):
    worker = worker_factory(RESTART_RULES)
    events, alerts = worker.topic("events"), reader(worker.topic("alerts"))
    hold_started = time.time()
    send(producer, events, "r2", event("r2", "call_started", ts=hold_started - 1, agent_id="a", queue="q"))
    send(producer, events, "r2", event("r2", "hold_started", ts=hold_started))
    time.sleep(1.0)
    worker.kill()
    time.sleep(12.5)  # both thresholds pass while no worker runs
    restarted = time.time()
    worker.start()
    values = alerts.wait_for(lambda v: len(alerts_for(v, "r2")) >= 2, timeout_s=30)
    call_alerts = alerts_for(values, "r2")
    assert [a["rule_id"] for a in call_alerts] == ["hold-warning", "hold-critical"]
    for alert, threshold in zip(call_alerts, (3, 12)):
        assert ts(alert["event_time"]) == pytest.approx(hold_started + threshold, abs=0.01)
        assert ts(alert["detected_at"]) >= restarted
    print(f"\ndowntime alerts emitted {max(ts(a['detected_at']) for a in call_alerts) - restarted:.2f}s after restart")
