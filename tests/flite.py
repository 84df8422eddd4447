"""English speech as sample arrays: flite speaks, sox puts it through an 8 kHz G.711 μ-law phone line.

tests/speech.py has the English WAV corpus and the WER; this gives one sentence as 8 kHz PCM16,
for tests and benchmarks that place speech on a timeline themselves (stereo calls, crashes).
"""

from __future__ import annotations

import functools
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from tests.speech import flite_available as available  # noqa: F401  (re-exported)
from tests.speech import normalize_english, wer  # noqa: F401  (re-exported)

_DIR = Path(tempfile.mkdtemp(prefix="streamproc-flite-"))


@functools.lru_cache(maxsize=None)
def phone_line(text: str, voice: str = "slt") -> np.ndarray:
    """``text`` spoken by flite ``voice``, through 8 kHz μ-law and back: 8 kHz PCM16 mono."""
    stem = _DIR / f"{voice}-{abs(hash(text))}"
    raw, line, pcm = stem.with_suffix(".wav"), stem.with_suffix(".ulaw.wav"), stem.with_suffix(".raw")
    subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(raw)], check=True, capture_output=True)
    subprocess.run(["sox", "-D", str(raw), "-r", "8000", "-e", "u-law", str(line)], check=True, capture_output=True)
    subprocess.run(["sox", str(line), "-t", "raw", "-e", "signed-integer", "-b", "16", str(pcm)], check=True, capture_output=True)
    return np.frombuffer(pcm.read_bytes(), dtype="<i2").copy()


def words(text: str) -> list[str]:
    return normalize_english(text).split()
