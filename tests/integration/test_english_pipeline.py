"""English speech through the real broker and a real worker with the Whisper engine.

Stereo μ-law audio (flite voices through a phone line) at real-time pace → calls.audio →
worker (tiny.en, streaming) → calls.transcripts → detection → calls.alerts. Checked against
the sentences that were spoken: word error rate per speaker, and a manager request in the
middle of a sentence raising its alert from a partial, before the sentence's final.
"""

from __future__ import annotations

import json
import time
from datetime import datetime

import numpy as np
import pytest

from streamproc.audio import encode
from streamproc.rules import packaged_rules_text
from streamproc.schemas import AudioEncoding, AudioFrameMeta
from tests import flite
from tests.conftest import event, http_get, send

pytestmark = [pytest.mark.broker, pytest.mark.skipif(not flite.available(), reason="needs flite and sox")]

AGENT = "Thank you for calling the billing department. How can I help you today?"
CUSTOMER = "I want to speak to a manager right now because you charged me twice this month."


def stereo_call(rate: int = 8000) -> np.ndarray:
    agent, customer = flite.phone_line(AGENT, "kal16"), flite.phone_line(CUSTOMER, "slt")
    gap = int(0.8 * rate)
    length = gap + len(agent) + gap + len(customer) + 2 * rate
    stereo = np.zeros((length, 2), dtype=np.int16)
    stereo[gap:gap + len(agent), 0] = agent
    customer_at = gap + len(agent) + gap
    stereo[customer_at:customer_at + len(customer), 1] = customer
    return stereo


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_english_call_is_transcribed_and_a_mid_sentence_manager_request_alerts_before_the_final(
    worker_factory, reader, producer
):
    worker = worker_factory(packaged_rules_text("default_rules.yaml"), dashboard_enabled="false")
    worker.wait_transcription_ready()
    status, body = http_get(f"{worker.base_url}/ready")
    assert status == 200 and json.loads(body)["speech_ready"] is True
    transcripts, alerts = reader(worker.topic("transcripts")), reader(worker.topic("alerts"))
    call_id = "en-call-1"
    send(producer, worker.topic("events"), call_id, event(call_id, "call_started", agent_id="agent-7", queue="billing"))
    stereo = stereo_call()
    step = 8000 // 4
    started = time.monotonic()
    for seq, i in enumerate(range(0, len(stereo), step)):
        meta = AudioFrameMeta(encoding="mulaw", rate=8000, channels=2, layout="agent_customer", seq=seq,
                              offset_ms=seq * 250, sent_at_ms=int(time.time() * 1000))
        producer.send(worker.topic("audio"), key=call_id.encode(), value=encode(stereo[i:i + step].reshape(-1), AudioEncoding.mulaw),
                      headers=meta.to_headers())
        producer.flush()
        time.sleep(max(0.0, started + (seq + 1) * 0.25 - time.monotonic()))
    send(producer, worker.topic("events"), call_id, event(call_id, "call_ended"))

    def finals(values):
        return [v for v in values if v["call_id"] == call_id and v["is_final"] and v["text"]]

    values = transcripts.wait_for(lambda v: {s["speaker"] for s in finals(v)} >= {"agent", "customer"}, timeout_s=60)
    heard = {speaker: " ".join(s["text"] for s in finals(values) if s["speaker"] == speaker) for speaker in ("agent", "customer")}
    assert flite.wer(AGENT, heard["agent"]) <= 0.15, heard
    assert flite.wer(CUSTOMER, heard["customer"]) <= 0.15, heard
    assert all(s["source"] == "asr" and s["words"] for s in finals(values))
    partials = [v for v in values if v["call_id"] == call_id and not v["is_final"] and v["speaker"] == "customer"]
    assert partials, "stable partials were published while the customer spoke"

    raised = alerts.wait_for(lambda v: any(a["rule_id"] == "manager-request" for a in v), timeout_s=30)
    manager = next(a for a in raised if a["rule_id"] == "manager-request")
    assert manager["call_id"] == call_id and manager["evidence"]["speaker"] == "customer"
    assert "manager" in manager["evidence"]["text"].lower()
    customer_final = next(s for s in finals(values) if s["speaker"] == "customer" and "manager" in s["text"].lower())
    # The phrase is mid-sentence: its alert comes from a partial, before the sentence ends.
    assert ts(manager["detected_at"]) < ts(customer_final["emitted_at"]), (manager["detected_at"], customer_final["emitted_at"])


def test_a_worker_holding_audio_of_an_open_utterance_stops_promptly(worker_factory, producer):
    """Frames of an unfinished utterance are held unacked; a graceful stop must not wait for them."""
    worker = worker_factory(dashboard_enabled="false")
    worker.wait_transcription_ready()
    call_id = "en-open-1"
    speech = flite.phone_line(CUSTOMER, "slt")[: 8000 * 3]  # cut mid-sentence: the utterance never ends
    for seq, i in enumerate(range(0, len(speech), 2000)):
        meta = AudioFrameMeta(encoding="mulaw", rate=8000, channels=1, speaker="customer", seq=seq, offset_ms=seq * 250,
                              sent_at_ms=int(time.time() * 1000))
        producer.send(worker.topic("audio"), key=call_id.encode(), value=encode(speech[i:i + 2000], AudioEncoding.mulaw),
                      headers=meta.to_headers())
    producer.flush()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        _, body = http_get(f"{worker.base_url}/metrics")
        held = [line for line in body.decode().splitlines() if line.startswith("streamproc_audio_unacked_frames ")]
        if held and float(held[0].split()[1]) > 0:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("no frames held for the open utterance")
    started = time.monotonic()
    code = worker.stop(timeout_s=60)
    assert code is not None and time.monotonic() - started < 15, f"graceful stop took {time.monotonic() - started:.1f} s"
