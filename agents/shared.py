"""What several agent modules share: the live rules, the detection engine, typed table reads.

Imports the app, the topics and the output helper, never an agent module.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

from streamproc import metrics
from streamproc.detect.acoustic import AudioFeatures
from streamproc.detect.engine import CallInfo, DetectionEngine
from streamproc.detect.hold import CallState
from streamproc.rules import RulesFile, RulesWatcher

from .app import settings
from .outputs import send_alerts
from .topics import call_state

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


async def on_audio_features(features: list[AudioFeatures]) -> None:
    """Acoustic detection: the audio agent awaits this with the features of each decoded frame."""
    if not features:
        return
    started = time.perf_counter()
    # The call-state table is read on the loop; the detectors run in the detection executor.
    infos: dict[str, CallInfo | None] = {}
    for feature in features:
        if feature.call_id not in infos:
            infos[feature.call_id] = call_info(feature.call_id)
    alerts = await in_detection_executor(engine.on_features, features, infos.get, time.time())
    metrics.DETECTION_SECONDS.labels("audio").observe(time.perf_counter() - started)
    for alert in alerts:
        info = infos.get(alert.call_id)
        await send_alerts([alert], info.partition if info is not None else None)
