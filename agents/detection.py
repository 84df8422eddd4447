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
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from streamproc import metrics
from streamproc.detect.acoustic import AudioFeatures
from streamproc.detect.engine import CallInfo, DetectionEngine, call_info_from_state, process_transcript_record

from .app import alerts_topic, app, call_state, current_rules, deadletter_topic, rules_watcher, settings, transcripts_topic

log = logging.getLogger("streamproc.detection")

TRANSCRIPTS_TOPIC = settings.topic("transcripts")
#: Detection state of an ended call is dropped this long after its last input (late finals still count).
ENDED_GRACE_S = 60.0

engine = DetectionEngine(current_rules, redact_pii=settings.redact_alert_evidence)
#: Issue 15: the engine runs here, never on the event loop (sentence embeddings take ~5-10 ms, training the
#: semantic heads at start and on hot reload ~1 s). One thread: the engine's per-call state is not shared.
DETECTION_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="detection")
#: How often open said/not-said windows and the risk score are re-checked without new input.
TICK_INTERVAL_S = 2.0


async def _in_executor(fn, *args, **kwargs):
    return await asyncio.get_running_loop().run_in_executor(DETECTION_EXECUTOR, functools.partial(fn, *args, **kwargs))


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
        # the call-state table is read here, on the loop; detection (embeddings) runs in the executor
        key_text = message.key.decode("utf-8", "replace") if isinstance(message.key, bytes) else None
        info = call_info(key_text) if key_text else None
        outcome = await _in_executor(
            process_transcript_record,
            engine, key=message.key, value=message.value, info_for=lambda _call_id: info, now=time.time(),
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

    for feature in features:  # read the call-state table on the loop, detect in the executor
        if feature.call_id not in infos:
            infos[feature.call_id] = call_info(feature.call_id)
    alerts = await _in_executor(engine.on_features, features, infos.get, time.time())
    metrics.DETECTION_SECONDS.labels("audio").observe(time.perf_counter() - started)
    for alert in alerts:
        info = infos.get(alert.call_id)
        await _send_alerts([alert], info.partition if info is not None else None)


@app.task
async def warm_detection() -> None:
    """Load the embedding model and train the semantic heads at start, off the event loop."""
    started = time.perf_counter()
    model = await _in_executor(engine.semantic_model)
    if model:
        log.info("semantic intents ready: %d heads in %.1f s", len(model.heads), time.perf_counter() - started)


@app.timer(interval=TICK_INTERVAL_S)
async def detection_tick() -> None:
    """Said/not-said windows close and hold time adds to the risk score even when nobody speaks (issue 15)."""
    call_ids = engine.call_ids()
    if not call_ids:
        return
    infos = {call_id: call_info(call_id) for call_id in call_ids}
    alerts = await _in_executor(engine.on_tick, infos.get, time.time())
    for alert in alerts:
        info = infos.get(alert.call_id)
        await _send_alerts([alert], info.partition if info is not None else None)


@app.timer(interval=30.0)
async def forget_finished_calls() -> None:
    now = time.time()
    infos = {call_id: call_info(call_id) for call_id in engine.call_ids()}

    def forget() -> None:  # in the executor: the engine's state is only touched from there
        for call_id, info in infos.items():
            if (info is not None and info.ended and engine.idle_for(call_id, now) > ENDED_GRACE_S):
                engine.forget(call_id)
        engine.evict_idle(now)

    await _in_executor(forget)
    metrics.DETECTION_CALLS.set(engine.call_count)


if settings.rules_reload_interval_s > 0:

    @app.timer(interval=settings.rules_reload_interval_s)
    async def reload_rules() -> None:
        """Hot reload: a changed, valid rules file replaces the rules in force; a bad one is rejected."""
        if await asyncio.get_running_loop().run_in_executor(None, rules_watcher.check):
            await _in_executor(engine.semantic_model)  # re-embed and retrain the semantic heads (issue 15)
