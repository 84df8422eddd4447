"""Streaming voice-activity detection with Silero VAD (the ONNX model faster-whisper ships; no torch).

faster-whisper runs the model over a whole file: windows of 512 samples at 16 kHz (32 ms),
each with the previous window's last 64 samples as context, and the LSTM state carried from
one batch of windows to the next. :class:`StreamingVad` does the same incrementally, so a
live stream gets the same probabilities as the file would, chunk by chunk.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np

from .models import ModelError

WINDOW = 512  # samples at 16 kHz: 32 ms
CONTEXT = 64
WINDOW_S = WINDOW / 16000
#: The ONNX file inside faster-whisper 1.2.1 (pinned): checked at load like the speech models.
SILERO_SHA256 = "4cbf549b8326f60f80f2536d9eefeb450a9abe83365a098031c89719f1be17d2"

_session = None
_session_lock = threading.Lock()


def silero_session():
    """The process-wide ONNX session (one thread: it is tiny, and decoders need the cores)."""
    global _session
    with _session_lock:
        if _session is None:
            import onnxruntime
            from faster_whisper.utils import get_assets_path

            path = Path(get_assets_path()) / "silero_vad_v6.onnx"
            if hashlib.sha256(path.read_bytes()).hexdigest() != SILERO_SHA256:
                raise ModelError(f"{path}: unexpected sha256 (faster-whisper is pinned; reinstall it)")
            options = onnxruntime.SessionOptions()
            options.inter_op_num_threads = 1
            options.intra_op_num_threads = 1
            options.log_severity_level = 4
            _session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"], sess_options=options)
        return _session


class StreamingVad:
    """Speech probability per 32 ms window of one speaker's 16 kHz float audio, fed in any chunk size."""

    def __init__(self) -> None:
        self.session = silero_session()
        self.h = np.zeros((1, 1, 128), dtype=np.float32)
        self.c = np.zeros((1, 1, 128), dtype=np.float32)
        self.context = np.zeros(CONTEXT, dtype=np.float32)
        self.pending = np.zeros(0, dtype=np.float32)

    def process(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Feed float32 samples; return (windows, probabilities) for every complete window.

        ``windows`` has shape (n, 512): the audio each probability is about, in order.
        """
        self.pending = np.concatenate([self.pending, samples.astype(np.float32, copy=False)])
        count = len(self.pending) // WINDOW
        if count == 0:
            return np.zeros((0, WINDOW), dtype=np.float32), np.zeros(0, dtype=np.float32)
        windows = self.pending[: count * WINDOW].reshape(count, WINDOW)
        self.pending = self.pending[count * WINDOW:]
        contexts = np.concatenate([self.context[None, :], windows[:-1, -CONTEXT:]], axis=0)
        self.context = windows[-1, -CONTEXT:].copy()
        batch = np.concatenate([contexts, windows], axis=1)
        probs, self.h, self.c = self.session.run(None, {"input": batch, "h": self.h, "c": self.c})
        return windows, np.asarray(probs, dtype=np.float32).reshape(-1)
