"""calls.transcripts → detectors → calls.alerts, and audio features → acoustic detectors. Wiring only.

Decisions live in streamproc.detect (engine, phrases, escalation, acoustic); parsing and dead
letters in streamproc/record.py. This module reads transcripts, looks the call up in the
call-state table (queue, agent, on hold?), and sends alerts keyed by call id to the call's
partition. The engine is shared through agents/shared.py, where the audio agent
(agents/audio.py) feeds it the audio features of each decoded frame (``on_audio_features``).

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
from streamproc.record import process_transcript_record

from .app import app, settings
from .outputs import send_result
from .shared import call_info, engine, rules_watcher
from .topics import transcripts_topic

log = logging.getLogger("streamproc.detection")

#: Detection state of an ended call is dropped this long after its last input (late finals still count).
ENDED_GRACE_S = 60.0


@app.agent(transcripts_topic)
async def detect_on_transcripts(stream):
    async for event in stream.events():
        message = event.message
        started = time.perf_counter()
        result = process_transcript_record(
            engine, key=message.key, value=message.value, info_for=call_info, now=time.time(),
            topic=message.topic, partition=message.partition, offset=message.offset,
        )
        metrics.DETECTION_SECONDS.labels("transcript").observe(time.perf_counter() - started)
        metrics.DETECTION_SEGMENTS.labels(result.stage).inc()
        await send_result(result, message.partition)


@app.timer(interval=30.0)
async def forget_finished_calls() -> None:
    now = time.time()
    for call_id in engine.call_ids():
        info = call_info(call_id)
        if info is not None and info.ended and engine.idle_for(call_id, now) > ENDED_GRACE_S:
            engine.forget(call_id)
    engine.evict_idle(now)
    metrics.DETECTION_CALLS.set(engine.call_count)


if settings.rules_reload_interval_s > 0:

    @app.timer(interval=settings.rules_reload_interval_s)
    async def reload_rules() -> None:
        """Hot reload: a changed, valid rules file replaces the rules in force; a bad one is rejected."""
        await asyncio.get_running_loop().run_in_executor(None, rules_watcher.check)
