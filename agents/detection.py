"""calls.transcripts → detectors → calls.alerts, and audio features → acoustic detectors. Wiring only.

Decisions live in streamproc.detect (engine, phrases, escalation, acoustic). This module
reads transcripts, looks the call up in the call-state table (queue, agent, on hold?),
and sends alerts keyed by call id to the call's partition. The audio agent
(agents/audio.py) awaits :func:`on_audio_features` after decoding each frame.

Detection state is in memory per worker: after a restart or rebalance a call's
partial/final bookkeeping and cooldowns start afresh, but alert ids are derived from the
content (utterance, speaker, rule, match index), so a re-processed transcript yields the
same alert id and consumers dedupe it (docs/detection.md).

Also hosts the rules hot-reload timer: the rules file is re-checked every
``rules_reload_interval_s`` and every agent reads the live rules via ``current_rules()``.
"""

from __future__ import annotations

import asyncio
import logging
import time

from streamproc import metrics
from streamproc.detect.acoustic import AudioFeatures
from streamproc.detect.engine import CallInfo, DetectionEngine, call_info_from_state, process_transcript_record

from .app import alerts_topic, app, call_state, current_rules, deadletter_topic, rules_watcher, settings, transcripts_topic

log = logging.getLogger("streamproc.detection")

TRANSCRIPTS_TOPIC = settings.topic("transcripts")
#: Detection state of an ended call is dropped this long after its last input (late finals still count).
ENDED_GRACE_S = 60.0

engine = DetectionEngine(current_rules, redact_pii=settings.redact_alert_evidence)


def call_info(call_id: str) -> CallInfo | None:
    return call_info_from_state(call_state.get(call_id))


async def _send_alerts(alerts, partition: int | None) -> None:
    for alert in alerts:
        await alerts_topic.send(key=alert.call_id.encode(), value=alert.to_json_bytes(), partition=partition)
        log.info("alert %s %s rule=%s call=%s id=%s", alert.severity.value, alert.kind.value, alert.rule_id,
                 alert.call_id, alert.alert_id)


@app.agent(transcripts_topic)
async def detect_on_transcripts(stream):
    async for event in stream.events():
        message = event.message
        started = time.perf_counter()
        outcome = process_transcript_record(
            engine, key=message.key, value=message.value, info_for=call_info, now=time.time(),
            topic=message.topic, partition=message.partition, offset=message.offset,
        )
        metrics.DETECTION_SECONDS.labels("transcript").observe(time.perf_counter() - started)
        metrics.DETECTION_SEGMENTS.labels(outcome.stage).inc()
        await _send_alerts(outcome.alerts, message.partition)
        for letter in outcome.dead_letters:
            await deadletter_topic.send(
                key=letter.key.encode() if letter.key else None, value=letter.to_json_bytes(), partition=message.partition
            )
            log.warning("dead letter from %s[%s]@%s: %s", letter.source_topic, letter.partition, letter.offset, letter.reason.value)


async def on_audio_features(features: list[AudioFeatures]) -> None:
    """Called by the audio agent with the levels of one decoded frame (interface pinned in the brief)."""
    if not features:
        return
    started = time.perf_counter()
    infos: dict[str, CallInfo | None] = {}

    def info_for(call_id: str) -> CallInfo | None:
        if call_id not in infos:
            infos[call_id] = call_info(call_id)
        return infos[call_id]

    alerts = engine.on_features(features, info_for, time.time())
    metrics.DETECTION_SECONDS.labels("audio").observe(time.perf_counter() - started)
    for alert in alerts:
        info = infos.get(alert.call_id)
        await _send_alerts([alert], info.partition if info is not None else None)


@app.timer(interval=30.0)
async def forget_finished_calls() -> None:
    now = time.time()
    for call_id in engine.call_ids():
        info = call_info(call_id)
        if (info is not None and info.ended and engine.idle_for(call_id, now) > ENDED_GRACE_S):
            engine.forget(call_id)
    engine.evict_idle(now)
    metrics.DETECTION_CALLS.set(engine.call_count)


if settings.rules_reload_interval_s > 0:

    @app.timer(interval=settings.rules_reload_interval_s)
    async def reload_rules() -> None:
        """Hot reload: a changed, valid rules file replaces the rules in force; a bad one is rejected."""
        await asyncio.get_running_loop().run_in_executor(None, rules_watcher.check)
