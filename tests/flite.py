"""English speech for the tests: flite speaks, sox puts it through an 8 kHz G.711 μ-law phone line."""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from rapidfuzz.distance import Levenshtein

_DIR = Path(tempfile.mkdtemp(prefix="streamproc-flite-"))


def available() -> bool:
    return bool(shutil.which("flite") and shutil.which("sox"))


@functools.lru_cache(maxsize=None)
def phone_line(text: str, voice: str = "slt") -> np.ndarray:
    """``text`` spoken by flite ``voice``, through 8 kHz μ-law and back: 8 kHz PCM16 mono."""
    stem = _DIR / f"{voice}-{abs(hash(text))}"
    raw, line, pcm = stem.with_suffix(".wav"), stem.with_suffix(".ulaw.wav"), stem.with_suffix(".raw")
    subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(raw)], check=True, capture_output=True)
    subprocess.run(["sox", str(raw), "-r", "8000", "-e", "u-law", str(line)], check=True, capture_output=True)
    subprocess.run(["sox", str(line), "-t", "raw", "-e", "signed-integer", "-b", "16", str(pcm)], check=True, capture_output=True)
    return np.frombuffer(pcm.read_bytes(), dtype="<i2").copy()


def words(text: str) -> list[str]:
    return [w.strip(".,?!;:\"").lower() for w in text.replace("-", " ").split() if w.strip(".,?!;:\"")]


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of ``hypothesis`` against ``reference`` (case and punctuation ignored)."""
    ref = words(reference)
    return Levenshtein.distance(ref, words(hypothesis)) / max(1, len(ref))
