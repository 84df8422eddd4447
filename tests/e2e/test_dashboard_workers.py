"""Two workers of one app split the partitions, yet each one's dashboard shows every call and alert.

The dashboard's reader is group-less and assigned all partitions (docs/dashboard.md), so
it does not matter which worker a supervisor's browser is connected to.
"""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from tests.conftest import event, http_get

pytestmark = [pytest.mark.broker, pytest.mark.slow]

PARTITIONS = 4


def state(worker) -> dict:
    status, body = http_get(worker.base_url + "/dashboard/api/state")
    assert status == 200, body
    return json.loads(body)


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def owned_event_partitions(worker) -> int:
    return json.loads(http_get(worker.base_url + "/ready")[1])["assigned_partitions"]


def test_every_worker_dashboard_sees_all_calls_alerts_and_acks(worker_factory, producer, reader):
    first = worker_factory()
    second = worker_factory(shared_with=first)
    # Wait until the group has settled with both members owning partitions.
    wait_for(
        lambda: http_get(first.base_url + "/ready")[0] == 200 and http_get(second.base_url + "/ready")[0] == 200
        and 0 < owned_event_partitions(first) and 0 < owned_event_partitions(second),
        timeout_s=60,
        what="both workers to own partitions",
    )
    alerts = reader(first.topic("alerts"))
    events = first.topic("events")
    calls = [f"w-{n}" for n in range(2 * PARTITIONS)]
    for n, call_id in enumerate(calls):
        # One call per partition at least: each partition is owned by one of the two workers only.
        value = event(call_id, "call_started", agent_id=f"agent-{n}", queue="billing")
        producer.send(events, key=call_id.encode(), value=value, partition=n % PARTITIONS)
    producer.send(events, key=b"w-3", value=event("w-3", "hold_started"), partition=3)
    producer.send(events, key=b"w-6", value=event("w-6", "hold_started"), partition=2)
    producer.flush()

    for worker in (first, second):
        seen = wait_for(
            lambda: {c["call_id"] for c in state(worker)["calls"]} >= set(calls) and state(worker),
            timeout_s=10,
            what=f"all calls on the dashboard of worker :{worker.settings.web_port}",
        )
        on_hold = {c["call_id"] for c in seen["calls"] if c["status"] == "on_hold"}
        assert on_hold == {"w-3", "w-6"}

    # Hold alerts come from whichever worker owns the call's partition; both pages list both.
    emitted = alerts.wait_for(lambda v: {a["call_id"] for a in v} >= {"w-3", "w-6"}, timeout_s=15)
    wanted = {a["alert_id"] for a in emitted if a["call_id"] in ("w-3", "w-6")}
    for worker in (first, second):
        wait_for(
            lambda: wanted <= {a["alert_id"] for a in state(worker)["alerts"]},
            timeout_s=5,
            what=f"alerts on worker :{worker.settings.web_port}",
        )

    # Acknowledged on one worker's page, shown on the other's.
    target = sorted(wanted)[0]
    request = urllib.request.Request(
        second.base_url + "/dashboard/api/ack",
        data=json.dumps({"alert_id": target, "acked_by": "Sam Lee", "note": "called the customer"}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202
        assert json.loads(response.read())["acked_by"] == "Sam Lee"
    acked = wait_for(
        lambda: next((a for a in state(first)["alerts"] if a["alert_id"] == target and a["ack"]), None),
        timeout_s=5,
        what="the ack on the other worker's dashboard",
    )
    assert acked["ack"]["acked_by"] == "Sam Lee" and acked["ack"]["note"] == "called the customer"


def test_ack_endpoint_rejects_what_it_cannot_record(worker_factory):
    worker = worker_factory()

    def post(body: bytes, content_type: str = "application/json") -> tuple[int, dict]:
        request = urllib.request.Request(
            worker.base_url + "/dashboard/api/ack", data=body, headers={"Content-Type": content_type}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    assert post(b"alert_id=x&acked_by=y", "application/x-www-form-urlencoded")[0] == 415
    assert post(b"{not json")[0] == 400
    assert post(b"[1, 2]")[0] == 400
    status, body = post(json.dumps({"alert_id": "no-such-alert", "acked_by": "x"}).encode())
    assert status == 404 and "no-such-alert" in body["error"]
