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
    from agents import topics

    app_module.app.finalize()
    app_module.app.conf.store = "memory://"
    app_module.app.flow_control.resume()
    return topics


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


@pytest.mark.asyncio
async def test_audio_agent_redacts_transcripts_before_publishing_when_enabled(faust_app, monkeypatch):
    from agents import audio
    from streamproc.schemas import Speaker, TranscriptSegment, Word

    segment = TranscriptSegment(
        segment_id="u2/customer/0/final", call_id="u2", speaker=Speaker.customer, utterance=0, is_final=True,
        text="my card is four one one one one one one one one one one one one one one one thanks",
        words=[Word(word=w, start_s=i * 0.3, end_s=i * 0.3 + 0.25) for i, w in enumerate(
            "my card is four one one one one one one one one one one one one one one one thanks".split())],
    )
    for enabled, leaks in ((False, True), (True, False)):
        monkeypatch.setattr(audio.settings, "redact_transcripts", enabled)
        with mock.patch.object(faust_app.transcripts_topic, "send", new=mock.AsyncMock()) as send:
            await audio._send_segments([segment], partition=0)
        (published,) = sent_values(send)
        assert ("four one one" in published["text"]) is leaks, published["text"]
        assert len(published["words"]) == len(segment.words)  # timings stay aligned with the audio
        if not leaks:
            assert "[CARD]" in published["text"] and published["words"][-1]["word"] == "thanks"
