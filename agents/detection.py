"""calls.transcripts → detectors → calls.alerts (and live risk scores → calls.risk), plus the detection timers. Wiring only.

Decisions live in streamproc.detect (engine, phrases, semantic intents, said/not-said windows,
risk score, escalation, acoustic); parsing and dead letters in streamproc/record.py. This module
reads transcripts, looks the call up in the call-state table (queue, agent, on hold?) on the
event loop, runs the engine in the detection executor (sentence embeddings never run on the
loop) and sends alerts keyed by call id to the call's partition. The engine and its executor
are shared through agents/shared.py, where the audio agent (agents/audio.py) feeds it the audio
features of each decoded frame (``on_audio_features``).

Detection state (cooldowns, partial/final bookkeeping, sentiment and said/not-said windows,
the risk score's counts and levels) lives in the engine, on its executor thread, and is
mirrored per call in the changelog-backed ``detection-state`` table
(streamproc.detect.snapshot, agents/shared.py): every job that changes a call's state returns
its snapshot, the loop stores it after the job's alerts are sent, and the worker that owns the
call next (after a crash or a rebalance) adopts it before the call's next input. Alert ids are
derived from the content (utterance, speaker, rule, match index), so a transcript re-processed
after a crash yields the same alert id (docs/state-and-restarts.md, "Detection state").

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
from .shared import (
    adopt_stored,
    call_info,
    call_partitions,
    engine,
    forget_stored,
    in_detection_executor,
    partition_of_call,
    rules_watcher,
    store_snapshots,
    stored_detection,
)
from .topics import detection_state, transcripts_topic

log = logging.getLogger("streamproc.detection")

#: Detection state of an ended call is dropped this long after its last input (late finals still count).
ENDED_GRACE_S = 60.0
#: How often open said/not-said windows and the risk score are re-checked without new input.
TICK_INTERVAL_S = 2.0


def _transcript_job(message, key_text: str | None, info, stored, now: float):
    """In the detection executor: adopt the stored state, detect, snapshot what changed, in one go."""
    if key_text:
        adopt_stored(key_text, stored, now)
    result = process_transcript_record(
        engine, key=message.key, value=message.value, info_for=lambda _call_id: info, now=now,
        topic=message.topic, partition=message.partition, offset=message.offset,
    )
    snapshot = engine.snapshot_if_changed(result.call_id) if result.call_id else None
    # The risk scores that moved, computed here too: the engine's state is only touched on its thread.
    return result, [snapshot] if snapshot is not None else [], engine.risk_updates(now)


@app.agent(transcripts_topic)
async def detect_on_transcripts(stream):
    async for event in stream.events():
        message = event.message
        started = time.perf_counter()
        # The tables are read here, on the loop; detection (embeddings) runs in the executor.
        key_text = message.key.decode("utf-8", "replace") if isinstance(message.key, bytes) else None
        info = call_info(key_text) if key_text else None
        stored = stored_detection(key_text) if key_text else None
        if key_text:
            call_partitions[key_text] = message.partition
        result, snapshots, risk = await in_detection_executor(_transcript_job, message, key_text, info, stored, time.time())
        metrics.DETECTION_SECONDS.labels("transcript").observe(time.perf_counter() - started)
        metrics.DETECTION_SEGMENTS.labels(result.stage).inc()
        # Alerts first: a crash in between re-sends them with the same ids, never loses them.
        await send_result(result, message.partition)
        await send_risk(risk, lambda _call_id: message.partition)
        store_snapshots(snapshots)


async def train_semantic_heads(done: str) -> None:
    """Embed the examples and train the semantic heads of the rules in force, in the detection executor, and
    log ``done`` with the head count and the time: the moment segments meet the new heads."""
    started = time.perf_counter()
    model = await in_detection_executor(engine.semantic_model)
    if model:
        log.info("%s: %d heads in %.1f s", done, len(model.heads), time.perf_counter() - started)


@app.task
async def warm_detection() -> None:
    """Load the embedding model and train the semantic heads at start, off the event loop."""
    await train_semantic_heads("semantic intents ready")


def owned_partitions() -> set[int]:
    """Partitions of the transcripts topic this worker actively owns (the calls it may tick)."""
    return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == transcripts_topic.get_topic_name()}


def _tick_job(infos: dict, stored: dict, not_owned: list[str], now: float):
    for call_id in not_owned:  # moved to another worker: its state is that worker's now
        engine.forget(call_id)
    for call_id, value in stored.items():  # taken over, no input since: windows may still close
        adopt_stored(call_id, value, now)
    alerts = engine.on_tick(infos.get, now)
    snapshots = [s for s in (engine.snapshot_if_changed(call_id) for call_id in engine.call_ids()) if s is not None]
    return alerts, snapshots, engine.risk_updates(now)


@app.timer(interval=TICK_INTERVAL_S)
async def detection_tick() -> None:
    """Said/not-said windows close and hold time adds to the risk score even when nobody speaks."""
    owned = owned_partitions()
    partitions = {call_id: partition_of_call(call_id) for call_id in set(engine.call_ids()) | set(detection_state_keys())}
    not_owned = [call_id for call_id, partition in partitions.items() if partition is not None and partition not in owned]
    ticked = [call_id for call_id in partitions if call_id not in not_owned]
    if not ticked and not not_owned:
        return
    infos = {call_id: call_info(call_id) for call_id in ticked}
    stored = {call_id: stored_detection(call_id) for call_id in ticked if partitions[call_id] is not None}
    alerts, snapshots, risk = await in_detection_executor(_tick_job, infos, stored, not_owned, time.time())
    for alert in alerts:
        await send_alerts([alert], partition_of_call(alert.call_id))
    await send_risk(risk, partition_of_call)
    store_snapshots(snapshots)


def detection_state_keys() -> list[str]:
    """Calls in this worker's copy of the detection-state table (its active and standby partitions)."""
    return [key for key in detection_state.keys() if isinstance(key, str)]


@app.timer(interval=30.0)
async def forget_finished_calls() -> None:
    now = time.time()
    infos = {call_id: call_info(call_id) for call_id in engine.call_ids()}

    def forget() -> list[str]:  # in the executor: the engine's state is only touched from there
        before = set(engine.call_ids())
        for call_id, info in infos.items():
            if info is not None and info.ended and engine.idle_for(call_id, now) > ENDED_GRACE_S:
                engine.forget(call_id)
        engine.evict_idle(now)
        return sorted(before - set(engine.call_ids()))

    forgotten = await in_detection_executor(forget)
    forget_stored([call_id for call_id in forgotten if partition_of_call(call_id) in owned_partitions()])
    metrics.DETECTION_CALLS.set(engine.call_count)


if settings.rules_reload_interval_s > 0:

    @app.timer(interval=settings.rules_reload_interval_s)
    async def reload_rules() -> None:
        """Hot reload: a changed, valid rules file replaces the rules in force; a bad one is rejected."""
        if await asyncio.get_running_loop().run_in_executor(None, rules_watcher.check):
            # segments queued behind the training in the one-thread executor meet the new heads
            await train_semantic_heads("semantic intents retrained after reload")
