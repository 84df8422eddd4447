"""agents/compat.py fix 7: a table recovery that stalls is restarted, with a diagnosis of where it waited.

The stall is injected from outside the product: the restarted worker runs with a sitecustomize.py on
its PYTHONPATH that imports stalled_recovery.py, which makes the first call of Faust's
Recovery._build_highwaters wait for ever, as an end-offset request that never comes back would.
Faust 0.15.3 alone would wait out its own step timeout (broker_request_timeout, 90 s) and then go on
without the end offsets it asked for.
"""

from __future__ import annotations

import os
import time
from collections import Counter

import pytest

from agents.compat import RECOVERY_STALL_S, RECOVERY_WATCH_INTERVAL_S
from streamproc.schemas import Alert
from tests.conftest import event, send
from tests.integration.test_faults import _metric_total
from tests.integration.test_hold_alerts import alerts_for
from tests.integration.test_restart import RESTART_RULES, wait_for_changelog

pytestmark = [pytest.mark.broker, pytest.mark.slow]

WEDGE = '''
import asyncio

import faust.tables.recovery

_build_highwaters = faust.tables.recovery.Recovery._build_highwaters
_calls = []


async def _wedged_once(self, *args, **kwargs):
    _calls.append(1)
    if len(_calls) == 1:
        await asyncio.Event().wait()  # never set: only a cancel ends this
    return await _build_highwaters(self, *args, **kwargs)


faust.tables.recovery.Recovery._build_highwaters = _wedged_once
'''


def test_a_stalled_recovery_is_restarted_and_the_worker_recovers_its_calls(worker_factory, reader, producer, tmp_path):
    worker = worker_factory(RESTART_RULES)
    events, alerts = worker.topic("events"), reader(worker.topic("alerts"))
    hold_started = time.time()
    send(producer, events, "w1", event("w1", "call_started", ts=hold_started - 1, agent_id="a", queue="q"))
    send(producer, events, "w1", event("w1", "hold_started", ts=hold_started))
    alerts.wait_for(lambda v: alerts_for(v, "w1"), timeout_s=10)
    wait_for_changelog(reader, worker, "w1", lambda state: "hold-warning#1" in state.get("fired", []))
    worker.stop()

    wedge = tmp_path / "wedge"
    wedge.mkdir()
    (wedge / "stalled_recovery.py").write_text(WEDGE)  # a *recovery.py file: the diagnosis lists tasks in those
    (wedge / "sitecustomize.py").write_text("import stalled_recovery  # noqa: F401\n")
    worker.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(wedge), worker.env.get("PYTHONPATH")]))
    started = time.monotonic()
    worker.start(timeout_s=80)
    ready_s = time.monotonic() - started

    log = worker.log_path.read_text(errors="replace").rsplit("===== start #2 =====", 1)[-1]
    stalled = [line for line in log.splitlines() if "table recovery stalled" in line]
    assert len(stalled) == 1, stalled
    assert "stalled_recovery.py:" in stalled[0] and "_wedged_once" in stalled[0], "the diagnosis names where recovery waited"
    assert _metric_total(worker, "streamproc_recovery_restarts_total") == 1
    # Ready once the stall limit has passed and the restarted recovery has run, long before Faust's own 90 s.
    assert RECOVERY_STALL_S <= ready_s < RECOVERY_STALL_S + RECOVERY_WATCH_INTERVAL_S + 20, ready_s

    # The restarted recovery read the table back: the hold goes on from its start, the warning is not sent again.
    values = alerts.wait_for(lambda v: any(a["rule_id"] == "hold-critical" for a in alerts_for(v, "w1")), timeout_s=30)
    ids = Counter(a["alert_id"] for a in alerts_for(values, "w1"))
    assert ids == {Alert.make_id("w1", "hold-warning", 1): 1, Alert.make_id("w1", "hold-critical", 1): 1}
