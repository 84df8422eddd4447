"""Soak: many concurrent synthetic calls in real time with poison messages mixed in.

Every good call must yield exactly its expected hold alerts (independent oracle,
tests/integration/reliability_support.py) and, through the detection agent, exactly its
expected escalation alert from a scripted transcript; every poison message must land in the
dead-letter topic with its reason; the worker keeps running. Scaled for CI (about 1–2
minutes); ``python -m bench.soak`` runs the documented longer soak through this same test
(STREAMPROC_SOAK_CALLS / STREAMPROC_SOAK_SPAN_S). Figures: test-artifacts/figures/soak.json,
including the worker's RSS slope after warm-up (least squares over 1 s samples, MiB per hour;
warm-up STREAMPROC_SOAK_WARMUP_S, default a third of the span, at most 300 s).
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import pytest

from streamproc.schemas import AudioFrameMeta
from tests.integration.reliability_support import (
    AlertAudit,
    CallPlan,
    EventScheduler,
    HoldRuleSet,
    expected_alerts,
    rss_bytes,
    write_figures,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SOAK_RULES = HoldRuleSet(
    thresholds=(("hold-warning", 2), ("hold-critical", 4)),
    cumulative=(("cumulative-hold", 10),),
    repeated=(("repeated-holds", 3),),
)
THRESHOLDS = (2.0, 4.0, 10.0)


def make_plan(rng: random.Random, call_id: str, start: float) -> CallPlan:
    """1–3 holds of 1–7 s; no hold and no running total within 0.1 s of a threshold (no coin flips)."""
    while True:
        holds, t, total, ok = [], start + rng.uniform(0.2, 1.5), 0.0, True
        for _ in range(rng.randint(1, 3)):
            length = round(rng.uniform(1.0, 7.0), 2)
            if any(abs(length - th) < 0.1 or abs(total + length - th) < 0.1 for th in THRESHOLDS):
                ok = False
            holds.append((t, t + length))
            total += length
            t += length + rng.uniform(0.5, 2.0)
        if ok:
            return CallPlan(call_id, start, holds, ended=t, agent_id=f"agent-{rng.randint(1, 20)}")


def poison_messages(rng: random.Random, count: int, now: float) -> list[tuple[str, bytes, str]]:
    """(key, value, expected dead-letter reason) for the events topic."""
    makers = [
        lambda k: (b"{not json" + k.encode(), "malformed_json"),
        lambda k: (bytes(rng.getrandbits(8) | 0x80 for _ in range(64)), "malformed_json"),
        lambda k: (json.dumps({"type": "call_parked", "call_id": k, "ts": now}).encode(), "unknown_event_type"),
        lambda k: (json.dumps({"type": "call_started", "call_id": k, "ts": now, "queue": "q"}).encode(), "missing_field"),
        lambda k: (json.dumps({"type": "hold_started", "call_id": k, "ts": "yesterday"}).encode(), "invalid_field"),
        lambda k: (json.dumps({"type": "hold_started", "call_id": k, "ts": now, "schema_version": 99}).encode(), "unsupported_version"),
        lambda k: (json.dumps({"type": "hold_started", "call_id": "someone-else", "ts": now}).encode(), "key_mismatch"),
        lambda k: (json.dumps({"type": "hold_started", "call_id": k, "ts": now}).encode(), "unknown_call"),
        lambda k: (json.dumps({"type": "call_ended", "call_id": k, "ts": now, "reason": "x" * 200_000}).encode(), "invalid_field"),
        lambda k: (b"[" * 5000, "malformed_json"),
    ]
    out = []
    for i in range(count):
        key = f"poison-{i}"
        value, reason = makers[i % len(makers)](key)
        out.append((key, value, reason))
    return out


HOLD_KINDS = {"hold_breach", "cumulative_hold", "repeated_hold"}
ESCALATION = "I want to speak to your manager right now"
NEUTRAL = "thank you for calling billing, let me check that for you"


def soak_rules_yaml() -> str:
    """The packaged rules (transcript detection included) with the soak's fast hold rules."""
    import yaml

    rules = yaml.safe_load((ROOT / "streamproc" / "data" / "default_rules.yaml").read_text())
    rules["hold"] = yaml.safe_load(SOAK_RULES.yaml())["hold"]
    return yaml.safe_dump(rules, allow_unicode=True, sort_keys=False)


def transcript(call_id: str, speaker: str, utterance: int, text: str, start_s: float) -> bytes:
    """A final transcript segment injected without ASR (source=script), as the demo does."""
    return json.dumps({
        "segment_id": f"{call_id}/{speaker}/{utterance}/f", "call_id": call_id, "speaker": speaker,
        "utterance": utterance, "is_final": True, "text": text, "start_s": start_s, "end_s": start_s + 2.0,
        "source": "script",
    }).encode()


def transcript_poison(count: int) -> list[tuple[str, bytes, str]]:
    """(key, value, expected reason) for the transcripts topic."""
    makers = [
        lambda k: (b'{"segment_id": "x", "call_id": "' + k.encode() + b'", "text": ', "malformed_json"),
        lambda k: (json.dumps({"segment_id": "x", "call_id": k, "speaker": "customer", "utterance": 0, "text": "hi"}).encode(), "missing_field"),
        lambda k: (transcript("someone-else", "customer", 0, "hello", 0.0), "key_mismatch"),
        lambda k: (transcript(k, "customer", 0, "x" * 20_001, 0.0), "invalid_field"),
    ]
    out = []
    for i in range(count):
        key = f"poison-tr-{i}"
        value, reason = makers[i % len(makers)](key)
        out.append((key, value, reason))
    return out


def audio_poison(count: int) -> list[tuple[str, list, bytes, set[str]]]:
    """(key, headers, payload, acceptable reasons) for the audio topic, when the audio agent exists."""
    good = AudioFrameMeta(encoding="pcm16", rate=8000, speaker="agent", seq=0).to_headers()
    cases = [
        ([], b"\x00\x00" * 800, {"bad_audio_header"}),
        ([(n, v) for n, v in good if n != "sp-encoding"] + [("sp-encoding", b"opus")], b"\x00\x00" * 800, {"unknown_encoding"}),
        (good, b"\x00" * 801, {"odd_byte_count"}),
        ([(n, v) for n, v in good if n != "sp-rate"] + [("sp-rate", b"44100")], b"\x00\x00" * 800, {"bad_audio_header"}),
    ]
    return [(f"poison-audio-{i}", *cases[i % len(cases)]) for i in range(count)]


def rss_trend(samples: list[tuple[float, int]], warmup_s: float) -> dict:
    """Least-squares slope of the worker's RSS after warm-up, in MiB per hour, with what it rests on.

    A leak shows as a steady positive slope once the working set is built; a bounded process as a
    slope near 0 whatever its level.
    """
    after = [(t, rss / 2**20) for t, rss in samples if t >= warmup_s]
    figures: dict = {"rss_warmup_s": warmup_s, "rss_samples_after_warmup": len(after)}
    if len(after) < 10:
        return figures
    mean_t = sum(t for t, _ in after) / len(after)
    mean_m = sum(m for _, m in after) / len(after)
    variance = sum((t - mean_t) ** 2 for t, _ in after)
    slope_per_s = sum((t - mean_t) * (m - mean_m) for t, m in after) / variance
    return figures | {
        "rss_after_warmup_mib_first_last": [round(after[0][1], 1), round(after[-1][1], 1)],
        "rss_after_warmup_mib_min_max": [round(min(m for _, m in after), 1), round(max(m for _, m in after), 1)],
        "rss_slope_mib_per_hour": round(slope_per_s * 3600, 2),
        "rss_window_s": round(after[-1][0] - after[0][0], 1),
    }


def test_soak_concurrent_calls_with_poison(worker_factory, reader, broker):
    n_calls = int(os.environ.get("STREAMPROC_SOAK_CALLS", "60"))
    span_s = float(os.environ.get("STREAMPROC_SOAK_SPAN_S", "30"))  # calls start within this window
    poison_fraction = float(os.environ.get("STREAMPROC_SOAK_POISON_FRACTION", "0.1"))
    rng = random.Random(int(os.environ.get("STREAMPROC_SOAK_SEED", "7")))
    # RSS samples before this many seconds are warm-up (models loaded, tables and caches filling).
    warmup_s = float(os.environ.get("STREAMPROC_SOAK_WARMUP_S", str(min(300.0, span_s / 3))))

    worker = worker_factory(soak_rules_yaml(), dashboard_enabled="false")
    alerts, dead = reader(worker.topic("alerts")), reader(worker.topic("deadletter"))
    scheduler = EventScheduler(broker.bootstrap, worker.topic("events"))
    t0 = time.time() + 1.0
    plans = [make_plan(rng, f"soak-{i}", t0 + rng.uniform(0, span_s)) for i in range(n_calls)]
    for plan in plans:
        scheduler.add_plan(plan)
    # Transcripts (detection path): every 4th call's customer asks for a manager (exactly one
    # escalation alert expected); the others get a neutral agent line (no detection alert).
    escalating = {plan.call_id for index, plan in enumerate(plans) if index % 4 == 0}
    for plan in plans:
        text, speaker = (ESCALATION, "customer") if plan.call_id in escalating else (NEUTRAL, "agent")
        scheduler.add(plan.started + 1.5, plan.call_id, transcript(plan.call_id, speaker, 0, text, 1.0), worker.topic("transcripts"))
    good_events = sum(len(plan.events()) for plan in plans)
    poison = poison_messages(rng, max(1, int(good_events * poison_fraction)), t0)
    for key, value, _ in poison:
        scheduler.add(t0 + rng.uniform(0, span_s + 10), key, value)
    poison_tr = transcript_poison(max(4, len(poison) // 4))
    for key, value, _ in poison_tr:
        scheduler.add(t0 + rng.uniform(0, span_s + 10), key, value, worker.topic("transcripts"))
    audio = audio_poison(max(4, len(poison) // 10)) if (ROOT / "agents" / "audio.py").exists() else []

    peak_concurrent = max(
        sum(1 for p in plans if p.started <= moment <= (p.ended or moment)) for moment in (t0 + s for s in range(int(span_s) + 20))
    )
    end = max(plan.ended for plan in plans)
    rss_samples: list[tuple[float, int]] = []  # (seconds since t0, worker RSS bytes)
    scheduler.start()
    try:
        if audio:
            from kafka import KafkaProducer

            audio_producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5)
            for key, headers, payload, _ in audio:
                headers = [(n, v if isinstance(v, bytes) else v.encode()) for n, v in headers]
                audio_producer.send(worker.topic("audio"), key=key.encode(), value=payload, headers=headers)
            audio_producer.flush()
            audio_producer.close()
        while time.time() < end + 1:
            rss_samples.append((time.time() - t0, rss_bytes(worker.process.pid)))
            time.sleep(1.0)
        scheduler.drain(timeout_s=30)
    finally:
        scheduler.close()

    expected: dict = {}
    for plan in plans:
        expected |= expected_alerts(plan, SOAK_RULES)
    alerts.wait_for(lambda v: {a["alert_id"] for a in v} >= set(expected), timeout_s=30)
    letters = dead.wait_for(lambda v: len(v) >= len(poison) + len(poison_tr) + len(audio), timeout_s=30)
    time.sleep(1.0)
    alerts.poll(500)
    dead.poll(500)
    letters = dead.values()

    hold_alerts = [a for a in alerts.values() if a["kind"] in HOLD_KINDS]
    audit = AlertAudit.of(hold_alerts, expected, calls={plan.call_id for plan in plans})
    detection = [a for a in alerts.values() if a["kind"] not in HOLD_KINDS and a["call_id"].startswith("soak-")]
    detection_ids: dict[str, set[str]] = {}
    for alert in detection:
        detection_ids.setdefault(alert["call_id"], set()).add(alert["alert_id"])
    wrong_detection = sorted(
        call_id for call_id in {plan.call_id for plan in plans}
        if len(detection_ids.get(call_id, ())) != (1 if call_id in escalating else 0)
    )
    by_key: dict[str, list[dict]] = {}
    for letter in letters:
        by_key.setdefault(letter.get("key") or "", []).append(letter)
    wrong = [
        (key, reason, [letter["reason"] for letter in by_key.get(key, [])])
        for key, _, reason in poison + poison_tr
        if [letter["reason"] for letter in by_key.get(key, [])] != [reason]
    ]
    wrong += [
        (key, sorted(reasons), [letter["reason"] for letter in by_key.get(key, [])])
        for key, _, _, reasons in audio
        if not by_key.get(key) or by_key[key][0]["reason"] not in reasons
    ]
    good_letters = [letter for letter in letters if (letter.get("key") or "").startswith("soak-")]
    figures = audit.figures() | {
        "calls": n_calls,
        "peak_concurrent_calls": peak_concurrent,
        "good_events": good_events,
        "poison_messages": len(poison) + len(poison_tr) + len(audio),
        "poison_transcripts": len(poison_tr),
        "poison_audio_frames": len(audio),
        "transcripts": len(plans),
        "detection_alerts_expected": len(escalating),
        "detection_alerts_delivered": sum(1 for call_id in escalating if detection_ids.get(call_id)),
        "calls_with_wrong_detection_alerts": len(wrong_detection),
        "dead_letters": len(letters),
        "poison_with_wrong_or_no_reason": len(wrong),
        "good_events_dead_lettered": len(good_letters),
        "duration_s": round(time.time() - t0, 1),
        "peak_rss_mib": round(max((rss for _, rss in rss_samples), default=0) / 2**20, 1),
    } | rss_trend(rss_samples, warmup_s) | {
        "command": ".venv/bin/pytest tests/integration/test_soak.py -s" if (n_calls, span_s) == (60, 30.0)
        else f"python -m bench.faults soak --calls {n_calls} --minutes {span_s / 60:g} --poison {poison_fraction:g}",
    }
    print("\nsoak figures:", figures)
    write_figures("soak", f"calls={n_calls},span={span_s:g}s", figures)

    audit.assert_exact()
    assert not wrong_detection, f"calls without exactly their escalation alert: {wrong_detection[:5]} {detection[:3]}"
    assert all(a["rule_id"] == "manager-request" for a in detection), {a["rule_id"] for a in detection}
    assert not wrong, f"poison messages without their dead letter: {wrong[:5]}"
    assert not good_letters, f"good events dead-lettered: {good_letters[:3]}"
    assert all(letter["detail"] for letter in letters)
    assert worker.process.poll() is None, "the worker survived the soak"
