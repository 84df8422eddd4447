"""Bad input goes to the dead-letter topic with a reason; the worker keeps going."""

from __future__ import annotations

import base64
import json
import time

import pytest

from tests.conftest import event, http_get, send
from tests.integration.test_hold_alerts import alerts_for

pytestmark = [pytest.mark.broker, pytest.mark.both_brokers]


def test_bad_events_are_dead_lettered_and_good_events_around_them_still_work(worker_factory, reader, producer):
    worker = worker_factory()
    events = worker.topic("events")
    alerts = reader(worker.topic("alerts"))
    dead = reader(worker.topic("deadletter"))
    now = time.time()

    send(producer, events, "good", event("good", "call_started", ts=now, agent_id="a1", queue="q"))
    bad_inputs = [
        ("bad-json", b"{this is not json", "malformed_json"),
        ("bad-type", event("bad-type", "call_parked", ts=now), "unknown_event_type"),
        ("bad-missing", json.dumps({"type": "call_started", "call_id": "bad-missing", "ts": now, "queue": "q"}).encode(), "missing_field"),
        ("never-started", event("never-started", "hold_started", ts=now), "unknown_call"),
        ("other-key", event("not-the-key", "hold_started", ts=now), "key_mismatch"),
    ]
    for key, value, _ in bad_inputs:
        send(producer, events, key, value)
    send(producer, events, "good", event("good", "hold_started", ts=now + 0.1))
    # Events for a call that ended, and an out-of-order event.
    send(producer, events, "ended", event("ended", "call_started", ts=now, agent_id="a2", queue="q"))
    send(producer, events, "ended", event("ended", "call_ended", ts=now + 1))
    send(producer, events, "ended", event("ended", "hold_started", ts=now + 2))
    send(producer, events, "ooo", event("ooo", "call_started", ts=now + 5, agent_id="a3", queue="q"))
    send(producer, events, "ooo", event("ooo", "hold_started", ts=now + 1))

    expected = {key: reason for key, _, reason in bad_inputs} | {"ended": "call_ended", "ooo": "out_of_order"}
    letters = dead.wait_for(lambda v: len(v) >= len(expected), timeout_s=20)
    by_key = {letter["key"]: letter for letter in letters}
    assert {key: letter["reason"] for key, letter in by_key.items()} == expected
    original = dict((key, value) for key, value, _ in bad_inputs)
    assert base64.b64decode(by_key["bad-json"]["payload_b64"]) == original["bad-json"]
    assert by_key["bad-json"]["source_topic"] == events and by_key["bad-json"]["offset"] is not None
    assert "agent_id" in by_key["bad-missing"]["detail"]

    # The good call, interleaved with all of that, still gets its hold alert.
    values = alerts.wait_for(lambda v: alerts_for(v, "good"), timeout_s=15)
    assert [a["rule_id"] for a in alerts_for(values, "good")][:1] == ["hold-warning"]

    status, body = http_get(f"{worker.base_url}/metrics")
    text = body.decode()
    for reason in expected.values():
        assert f'streamproc_dead_letters_total{{reason="{reason}"}} 1.0' in text
    assert worker.process.poll() is None, "the worker is still running"
