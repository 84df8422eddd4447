"""A worker killed mid-hold: what happens to the state table and to the alerts.

Results are recorded in docs/state-and-restarts.md.
"""

from __future__ import annotations

import json
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


def wait_for_changelog(reader, worker, call_id: str, predicate, timeout_s: float = 15.0) -> dict:
    """The call's latest state as the table's changelog topic holds it, once ``predicate`` accepts it:
    what a new owner would recover (a state the test observes, not a pause it hopes is long enough)."""
    changelog = reader(f"{worker.settings.app_id}-call-state-changelog")

    def latest() -> dict | None:
        mine = [json.loads(r.value) for r in changelog.records if r.key and r.key.decode().strip('"') == call_id and r.value]
        return mine[-1] if mine else None

    def holds() -> bool:
        state = latest()
        return state is not None and predicate(state)

    changelog.wait_for(lambda _values: holds(), timeout_s=timeout_s)
    state = latest()
    assert state is not None and predicate(state), f"the changelog never held the expected state of {call_id}: {state}"
    return state


def wait_for_committed(worker, topic: str, records: int, timeout_s: float = 15.0) -> None:
    """The worker's group has committed offsets covering ``records`` records of ``topic``."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=worker.settings.bootstrap_servers)
    try:
        deadline = time.monotonic() + timeout_s
        committed = 0
        while time.monotonic() < deadline:
            offsets = admin.list_group_offsets(worker.settings.app_id).get(worker.settings.app_id, {})
            committed = sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset > 0)
            if committed >= records:
                return
            time.sleep(0.2)
    finally:
        admin.close()
    raise AssertionError(f"the worker committed {committed} of {records} records of {topic}")


def test_sigkill_mid_hold_resumes_from_the_table_without_new_alert_ids(worker_factory, reader, producer):
    worker = worker_factory(RESTART_RULES)
    events, alerts = worker.topic("events"), reader(worker.topic("alerts"))
    hold_started = time.time()
    send(producer, events, "r1", event("r1", "call_started", ts=hold_started - 1, agent_id="a", queue="q"))
    send(producer, events, "r1", event("r1", "hold_started", ts=hold_started))
    first = alerts.wait_for(lambda v: alerts_for(v, "r1"), timeout_s=10)
    assert [a["rule_id"] for a in alerts_for(first, "r1")] == ["hold-warning"]
    # The table's changelog write of "warning fired" has reached the broker.
    wait_for_changelog(reader, worker, "r1", lambda state: "hold-warning#1" in state.get("fired", []))

    worker.kill()  # SIGKILL: no shutdown, no final offset commit
    killed_at = time.time()
    worker.start()
    ready_after = time.time() - killed_at
    print(f"\nrestart: ready {ready_after:.2f}s after SIGKILL")

    # The group hands the dead member's partitions over once its session times out (6 s); on a
    # loaded machine the join can take much longer, which the promptness check below allows for.
    values = alerts.wait_for(lambda v: any(a["rule_id"] == "hold-critical" for a in alerts_for(v, "r1")), timeout_s=60)
    call_alerts = alerts_for(values, "r1")
    ids = Counter(a["alert_id"] for a in call_alerts)
    assert set(ids) == {Alert.make_id("r1", "hold-warning", 1), Alert.make_id("r1", "hold-critical", 1)}, (
        "only the deterministic ids, never a second id for the same breach"
    )
    critical = next(a for a in call_alerts if a["rule_id"] == "hold-critical")
    # The hold timer continued from the right elapsed time: crossing at hold start + 12 s.
    assert ts(critical["event_time"]) == pytest.approx(hold_started + 12, abs=0.01)
    # Emitted promptly once the new worker owns the call: from its "Worker ready" (partitions
    # assigned, tables recovered), read from its own log.
    owned_at = worker.logged_at("[^---Recovery]: Worker ready")
    assert owned_at is not None, "the restarted worker never logged that it owns its partitions"
    print(f"restart: partitions owned {owned_at - killed_at:.2f}s after SIGKILL")
    due_at = max(ts(critical["event_time"]), owned_at)
    assert ts(critical["detected_at"]) - due_at < 2.0
    print(f"alert copies per id: {dict(ids)}")
    assert ids[Alert.make_id("r1", "hold-warning", 1)] == 1, "the warning's 'fired' mark was recovered from the changelog"


def test_breaches_during_downtime_fire_on_restart_with_their_original_times(worker_factory, reader, producer):
    worker = worker_factory(RESTART_RULES)
    events, alerts = worker.topic("events"), reader(worker.topic("alerts"))
    hold_started = time.time()
    send(producer, events, "r2", event("r2", "call_started", ts=hold_started - 1, agent_id="a", queue="q"))
    send(producer, events, "r2", event("r2", "hold_started", ts=hold_started))
    wait_for_changelog(reader, worker, "r2", lambda state: state.get("status") == "on_hold")
    wait_for_committed(worker, events, 2)  # both events consumed and committed: the restart resumes after them
    worker.kill()
    killed_at = time.time()
    # A loaded machine can take longer than the 3 s warning to get here; the 12 s critical must still be ahead.
    assert hold_started + 12 > killed_at + 1, f"setup took {killed_at - hold_started:.1f} s: nothing left to fall due in downtime"
    # The scenario's own clock: the call stays on hold until both thresholds (3 s, 12 s) have passed.
    time.sleep(max(0.0, hold_started + 12.5 - time.time()))
    restarted = time.time()
    worker.start()
    values = alerts.wait_for(lambda v: len(alerts_for(v, "r2")) >= 2, timeout_s=30)
    call_alerts = alerts_for(values, "r2")
    assert [a["rule_id"] for a in call_alerts] == ["hold-warning", "hold-critical"]
    for alert, threshold in zip(call_alerts, (3, 12)):
        due = hold_started + threshold
        assert ts(alert["event_time"]) == pytest.approx(due, abs=0.01)
        if due > killed_at:  # fell due while no worker ran: the restarted one fired it, with the original time
            assert ts(alert["detected_at"]) >= restarted
    print(f"\ndowntime alerts emitted {max(ts(a['detected_at']) for a in call_alerts) - restarted:.2f}s after restart")
