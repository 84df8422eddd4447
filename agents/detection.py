"""calls.transcripts → detectors → calls.alerts (and live risk scores → calls.risk), plus the detection timers. Wiring only.

Decisions live in streamproc.detect (engine, phrases, semantic intents, said/not-said windows,
risk score, escalation, acoustic); parsing and dead letters in streamproc/record.py. This module
reads transcripts, looks the call up in the call-state table (queue, agent, on hold?) on the
event loop, runs the engine in the detection executor (sentence embeddings never run on the
loop) and sends alerts keyed by call id to the call's partition. The engine and its executor
are shared through agents/shared.py, where the audio agent (agents/audio.py) feeds it the audio
features of each decoded frame (``on_audio_features``).

Detection state is in memory per worker: after a restart or rebalance a call's
partial/final bookkeeping and cooldowns start afresh, but alert ids are derived from the
content (utterance, speaker, rule, match index), so a re-processed transcript yields the
same alert id and consumers dedupe it (docs/detection.md).

Also hosts the rules hot-reload timer: the rules file is re-checked every
``rules_reload_interval_s``; every agent reads the live rules via ``current_rules()``, and a
reload re-embeds the semantic examples and retrains their heads in the executor.
"""

from __future__ import annotations

import asyncio
import logging
import time

from streamproc import metrics
from streamproc.record import process_transcript_record

from .app import app, settings
from .outputs import send_alerts, send_result, send_risk
from .shared import call_info, engine, in_detection_executor, rules_watcher
from .topics import transcripts_topic

log = logging.getLogger("streamproc.detection")

#: Detection state of an ended call is dropped this long after its last input (late finals still count).
ENDED_GRACE_S = 60.0
#: How often open said/not-said windows and the risk score are re-checked without new input.
TICK_INTERVAL_S = 2.0


@app.agent(transcripts_topic)
async def detect_on_transcripts(stream):
    async for event in stream.events():
        message = event.message
        started = time.perf_counter()
        # The call-state table is read here, on the loop; detection (embeddings) runs in the executor.
        key_text = message.key.decode("utf-8", "replace") if isinstance(message.key, bytes) else None
        info = call_info(key_text) if key_text else None
        now = time.time()

        def detect():  # in the executor: detection, then the risk scores that moved (engine state stays off the loop)
            result = process_transcript_record(
                engine, key=message.key, value=message.value, info_for=lambda _call_id: info, now=now,
                topic=message.topic, partition=message.partition, offset=message.offset,
            )
            return result, engine.risk_updates(now)

        result, risk = await in_detection_executor(detect)
        metrics.DETECTION_SECONDS.labels("transcript").observe(time.perf_counter() - started)
        metrics.DETECTION_SEGMENTS.labels(result.stage).inc()
        await send_result(result, message.partition)
        await send_risk(risk, lambda _call_id: message.partition)


@app.task
async def warm_detection() -> None:
    """Load the embedding model and train the semantic heads at start, off the event loop."""
    started = time.perf_counter()
    model = await in_detection_executor(engine.semantic_model)
    if model:
        log.info("semantic intents ready: %d heads in %.1f s", len(model.heads), time.perf_counter() - started)


@app.timer(interval=TICK_INTERVAL_S)
async def detection_tick() -> None:
    """Said/not-said windows close and hold time adds to the risk score even when nobody speaks."""
    call_ids = engine.call_ids()
    if not call_ids:
        return
    infos = {call_id: call_info(call_id) for call_id in call_ids}
    now = time.time()

    def tick():
        return engine.on_tick(infos.get, now), engine.risk_updates(now)

    alerts, risk = await in_detection_executor(tick)
    for alert in alerts:
        info = infos.get(alert.call_id)
        await send_alerts([alert], info.partition if info is not None else None)

    def partition_of(call_id: str) -> int | None:
        info = infos.get(call_id)
        return info.partition if info is not None else None

    await send_risk(risk, partition_of)


@app.timer(interval=30.0)
async def forget_finished_calls() -> None:
    now = time.time()
    infos = {call_id: call_info(call_id) for call_id in engine.call_ids()}

    def forget() -> None:  # in the executor: the engine's state is only touched from there
        for call_id, info in infos.items():
            if info is not None and info.ended and engine.idle_for(call_id, now) > ENDED_GRACE_S:
                engine.forget(call_id)
        engine.evict_idle(now)

    await in_detection_executor(forget)
    metrics.DETECTION_CALLS.set(engine.call_count)


if settings.rules_reload_interval_s > 0:

    @app.timer(interval=settings.rules_reload_interval_s)
    async def reload_rules() -> None:
        """Hot reload: a changed, valid rules file replaces the rules in force; a bad one is rejected."""
        if await asyncio.get_running_loop().run_in_executor(None, rules_watcher.check):
            await in_detection_executor(engine.semantic_model)  # re-embed and retrain the semantic heads
