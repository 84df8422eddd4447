"""What several agent modules share: the live rules, the detection engine, typed table reads.

Imports the app, the topics and the output helper, never an agent module.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

from faust.streams import current_event

from streamproc import metrics
from streamproc.detect.acoustic import AudioFeatures
from streamproc.detect.engine import CallInfo, DetectionEngine
from streamproc.detect.hold import CallState
from streamproc.detect.snapshot import DetectionSnapshot
from streamproc.rules import RulesFile, RulesWatcher

from .app import settings
from .outputs import send_alerts
from .topics import call_state, detection_state

log = logging.getLogger("streamproc.detection")

#: Set by agents/audio.py once the speech model is loaded and has decoded a warm-up chunk; /ready waits on it.
speech_ready = threading.Event()

# Hot reload: agents/detection.py checks the file every settings.rules_reload_interval_s; a bad
# new file is rejected and these rules stay. Read the live rules with current_rules().
rules_watcher = RulesWatcher(settings.rules_file)
metrics.RULES_LOADED.set_to_current_time()


def current_rules() -> RulesFile:
    return rules_watcher.current()


#: Per-worker detection state: transcripts (agents/detection.py) and audio features
#: (agents/audio.py, through on_audio_features below) feed the same engine.
engine = DetectionEngine(current_rules, redact_pii=settings.redact_alert_evidence)
#: The engine runs here, never on the event loop (sentence embeddings take ~5-10 ms, training the
#: semantic heads at start and on hot reload seconds). One thread: the engine's state is not shared.
DETECTION_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="detection")
_T = TypeVar("_T")


async def in_detection_executor(fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    return await asyncio.get_running_loop().run_in_executor(DETECTION_EXECUTOR, functools.partial(fn, *args, **kwargs))


def stored_state(call_id: str) -> CallState | None:
    """The call's state from the call-state table, or None when the table does not know the call."""
    return CallState.from_stored(call_state.get(call_id))


def call_info(call_id: str) -> CallInfo | None:
    return CallInfo.from_state(stored_state(call_id))


# ---------------------------------------------------------------------- detection state across workers
# The engine's per-call state is mirrored in the detection-state table (agents/topics.py). Race-free by
# construction: the engine is only touched on its one executor thread, where each job adopts the stored
# state (if newer than the engine's), runs, and takes the snapshot of what it changed, all in one go;
# the loop reads and writes the table, and never stores a snapshot older than the one already there.

#: call id → partition its inputs arrive on (transcripts, audio), for table writes made by timers.
call_partitions: dict[str, int] = {}


def partition_of_call(call_id: str) -> int | None:
    partition = call_partitions.get(call_id)
    if partition is None:
        info = call_info(call_id)
        partition = info.partition if info is not None else None
    return partition


detection_state.partition_of = partition_of_call


def stored_detection(call_id: str) -> object:
    """The call's stored detection state as the table holds it (JSON); parsed in the executor."""
    return detection_state.get(call_id)


def adopt_stored(call_id: str, stored: object, now: float) -> None:
    """In the detection executor: continue from the stored state unless the engine holds newer."""
    if stored is None:
        return
    revision = stored.get("revision") if isinstance(stored, dict) else None
    if isinstance(revision, int) and engine.revision_of(call_id) >= revision:
        return  # the usual case: this engine wrote it (no parsing on every input)
    try:
        snapshot = DetectionSnapshot.from_json(stored)
    except ValueError:  # pydantic's ValidationError: a value no release of ours wrote
        log.warning("call %s: stored detection state unreadable, starting afresh", call_id, exc_info=True)
        return
    if engine.adopt(snapshot, now):
        metrics.DETECTION_STATE_ADOPTED.inc()


def store_snapshots(snapshots: list[DetectionSnapshot]) -> None:
    """On the loop, right after the executor job that took them."""
    for snapshot in snapshots:
        if current_event() is None and partition_of_call(snapshot.call_id) is None:
            continue  # a timer, and no record of the call seen yet: its next record stores the state
        current = detection_state.get(snapshot.call_id)
        if isinstance(current, dict) and current.get("revision", -1) >= snapshot.revision:
            continue  # a later job of this engine stored newer state meanwhile
        detection_state[snapshot.call_id] = snapshot.to_json()


def forget_stored(call_ids: list[str]) -> None:
    for call_id in call_ids:
        if call_id in detection_state and partition_of_call(call_id) is not None:
            del detection_state[call_id]
        call_partitions.pop(call_id, None)


def _features_job(features: list[AudioFeatures], stored: dict[str, object], infos: dict[str, CallInfo | None],
                  now: float) -> tuple[list, list[DetectionSnapshot]]:
    for call_id, value in stored.items():
        adopt_stored(call_id, value, now)
    alerts = engine.on_features(features, infos.get, now)
    snapshots = [s for s in (engine.snapshot_if_changed(call_id) for call_id in infos) if s is not None]
    return alerts, snapshots


async def on_audio_features(features: list[AudioFeatures]) -> None:
    """Acoustic detection: the audio agent awaits this with the features of each decoded frame."""
    if not features:
        return
    started = time.perf_counter()
    # The tables are read on the loop; the detectors run in the detection executor.
    infos: dict[str, CallInfo | None] = {}
    for feature in features:
        if feature.call_id not in infos:
            infos[feature.call_id] = call_info(feature.call_id)
    stored = {call_id: stored_detection(call_id) for call_id in infos}
    alerts, snapshots = await in_detection_executor(_features_job, features, stored, infos, time.time())
    metrics.DETECTION_SECONDS.labels("audio").observe(time.perf_counter() - started)
    for alert in alerts:
        info = infos.get(alert.call_id)
        await send_alerts([alert], info.partition if info is not None else None)
    store_snapshots(snapshots)
