"""The events agent without a broker, through Faust's own agent.test_context()."""

from __future__ import annotations

import json
import time
from unittest import mock

import pytest


@pytest.fixture
def faust_app(monkeypatch, tmp_path):
    monkeypatch.setenv("STREAMPROC_DATA_DIR", str(tmp_path))
    from agents import app as app_module

    app_module.app.finalize()
    app_module.app.conf.store = "memory://"
    app_module.app.flow_control.resume()
    return app_module


def sent_values(send_mock):
    return [json.loads(call.kwargs["value"]) for call in send_mock.await_args_list]


@pytest.mark.asyncio
async def test_agent_stores_state_emits_alerts_and_dead_letters(faust_app):
    from agents import calls

    now = time.time()
    with mock.patch.object(faust_app.alerts_topic, "send", new=mock.AsyncMock()) as alerts_send, mock.patch.object(
        faust_app.deadletter_topic, "send", new=mock.AsyncMock()
    ) as dead_send:
        async with calls.process_call_inputs.test_context() as agent:
            start = {"type": "call_started", "call_id": "u1", "ts": now - 400, "agent_id": "a", "queue": "q"}
            hold = {"type": "hold_started", "call_id": "u1", "ts": now - 300}
            end = {"type": "hold_ended", "call_id": "u1", "ts": now - 10}
            for body in (start, hold, end):
                await agent.put(json.dumps(body).encode(), key=b"u1")
            await agent.put(b"not json", key=b"u2")

            state = faust_app.call_state["u1"]
            assert state["status"] == "active" and state["hold_count"] == 1
            assert state["completed_hold_s"] == pytest.approx(290)
            # The packaged default rules: warning at 60 s, critical at 180 s, 240 s of hold in total.
            assert [a["rule_id"] for a in sent_values(alerts_send)] == ["hold-warning", "hold-critical", "cumulative-hold-warning"]
            letters = sent_values(dead_send)
            assert [letter["reason"] for letter in letters] == ["malformed_json"]
