"""Speech recognition engines behind one small interface (streamproc.asr.base).

``load_engine(setting)`` resolves the model setting (streamproc.asr.models), checks a
packaged model's sha256, loads the engine once per process and shares it. Engines:
:mod:`streamproc.asr.vosk` (Kaldi streaming) and :mod:`streamproc.asr.whisper`
(faster-whisper, streamed with VAD endpointing and LocalAgreement partials).
"""

from __future__ import annotations

import os
import threading

from .base import DecodeStats, Engine, SessionConfig, SpeechSession
from .models import EngineKind, ModelError, ModelSpec, resolve_model, verify_packaged

__all__ = [
    "DecodeStats", "Engine", "EngineKind", "ModelError", "ModelSpec", "SessionConfig", "SpeechSession",
    "load_engine", "resolve_model",
]

_engines: dict[tuple, Engine] = {}
_lock = threading.Lock()


def load_engine(
    setting: str | os.PathLike | ModelSpec | None, *, workers: int = 2, whisper_min_window_s: float = 10.0,
    device: str = "cpu", whisper_batch_size: int = 1,
) -> Engine:
    """The process-wide engine for a model setting (loaded once, then shared). Raises ModelError.

    ``device`` and ``whisper_batch_size`` concern the Whisper engine (Vosk runs on the CPU)."""
    spec = setting if isinstance(setting, ModelSpec) else resolve_model(setting)
    key = (str(spec.path), workers, whisper_min_window_s, device, whisper_batch_size)
    with _lock:
        if key in _engines:
            return _engines[key]
        verify_packaged(spec)
        engine: Engine
        if spec.engine is EngineKind.vosk:
            from .vosk import VoskEngine

            engine = VoskEngine(spec)
        else:
            from .whisper import WhisperEngine

            engine = WhisperEngine(spec, workers=workers, min_window_s=whisper_min_window_s, device=device, batch_size=whisper_batch_size)
        _engines[key] = engine
        return engine
