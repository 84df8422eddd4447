"""What several agent modules share: the live rules, the detection engine, typed table reads.

Imports the app, the topics and the output helper, never an agent module.
"""

from __future__ import annotations

import threading
import time

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
    infos: dict[str, CallInfo | None] = {}

    def info_for(call_id: str) -> CallInfo | None:
        if call_id not in infos:
            infos[call_id] = call_info(call_id)
        return infos[call_id]

    alerts = engine.on_features(features, info_for, time.time())
    metrics.DETECTION_SECONDS.labels("audio").observe(time.perf_counter() - started)
    for alert in alerts:
        info = infos.get(alert.call_id)
        await send_alerts([alert], info.partition if info is not None else None)
