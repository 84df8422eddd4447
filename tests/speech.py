"""Real Korean speech for the audio tests: espeak-ng synthesises it, sox converts it.

Generated once per test process (``speech_corpus()`` is cached) into a temp directory:
a telephone-band master per sentence (8 kHz PCM16, as a phone line carries it) and,
from it, every supported wire format: pcm16/mulaw/alaw × 8000/16000 Hz × mono/stereo.
Stereo puts the agent sentence on the left channel and the customer sentence on the right.
sox also writes its own decoding of each G.711 file, the reference for our codecs.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

AGENT_TEXT = "안녕하세요. 고객센터 상담원입니다. 무엇을 도와드릴까요"
CUSTOMER_TEXT = "요금 청구서에 문제가 있습니다. 환불해 주세요"
ENCODINGS = {"pcm16": ["-e", "signed-integer", "-b", "16"], "mulaw": ["-e", "u-law"], "alaw": ["-e", "a-law"]}
RATES = (8000, 16000)
TRAILING_SILENCE_S = 1.5  # lets Vosk reach an endpoint and emit a final before the call ends


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@dataclass
class Variant:
    encoding: str
    rate: int
    channels: int
    path: Path  # headerless raw bytes in the wire format
    wav: Path  # the same audio as a WAV (for the CLI)
    sox_decoded: Path  # sox's own conversion of `path` to s16le (codec reference)

    @property
    def name(self) -> str:
        return f"{self.encoding}-{self.rate}-{'stereo' if self.channels == 2 else 'mono'}"

    @property
    def data(self) -> bytes:
        return self.path.read_bytes()

    @property
    def bytes_per_second(self) -> int:
        return self.rate * self.channels * (2 if self.encoding == "pcm16" else 1)


@dataclass
class Corpus:
    root: Path
    agent_master: Path  # 8 kHz PCM16 mono WAV
    customer_master: Path
    variants: dict[str, Variant] = field(default_factory=dict)

    def get(self, encoding: str, rate: int, channels: int = 1) -> Variant:
        return self.variants[f"{encoding}-{rate}-{'stereo' if channels == 2 else 'mono'}"]

    def pcm16(self, rate: int, channels: int = 1) -> np.ndarray:
        return np.frombuffer(self.get("pcm16", rate, channels).data, dtype="<i2")


def tools_available() -> bool:
    return shutil.which("espeak-ng") is not None and shutil.which("sox") is not None


@functools.lru_cache(maxsize=1)
def speech_corpus() -> Corpus:
    root = Path(tempfile.mkdtemp(prefix="streamproc-speech-"))
    atexit.register(shutil.rmtree, root, True)
    masters = {}
    for who, text in (("agent", AGENT_TEXT), ("customer", CUSTOMER_TEXT)):
        raw = root / f"{who}-espeak.wav"
        _run("espeak-ng", "-v", "ko+f2", "-s", "150", text, "-w", str(raw))
        master = root / f"{who}-8k.wav"
        # Telephone band first, then 1.5 s of silence; -D: no dither, so outputs are reproducible.
        _run("sox", "-D", str(raw), "-r", "8000", "-c", "1", "-e", "signed-integer", "-b", "16", str(master),
             "pad", "0.2", str(TRAILING_SILENCE_S))
        masters[who] = master
    # Stereo master: agent left, customer right, padded to the same length.
    stereo_master = root / "stereo-8k.wav"
    _run("sox", "-D", "-M", str(masters["agent"]), str(masters["customer"]), str(stereo_master))
    corpus = Corpus(root=root, agent_master=masters["agent"], customer_master=masters["customer"])
    for channels, source in ((1, masters["agent"]), (2, stereo_master)):
        for rate in RATES:
            # Resample once to PCM16; every encoding at this rate is converted from those same samples.
            pcm_wav = root / f"pcm16-{rate}-{channels}ch-source.wav"
            _run("sox", "-D", str(source), "-r", str(rate), "-e", "signed-integer", "-b", "16", str(pcm_wav))
            for encoding, options in ENCODINGS.items():
                stem = f"{encoding}-{rate}-{'stereo' if channels == 2 else 'mono'}"
                raw = root / f"{stem}.raw"
                wav = root / f"{stem}.wav"
                _run("sox", "-D", str(pcm_wav), *options, "-t", "raw", str(raw))
                _run("sox", "-D", str(pcm_wav), *options, str(wav))
                decoded = root / f"{stem}.s16"
                _run("sox", "-D", "-t", "raw", "-r", str(rate), "-c", str(channels), *options, str(raw),
                     "-t", "raw", "-e", "signed-integer", "-b", "16", str(decoded))
                corpus.variants[stem] = Variant(encoding, rate, channels, raw, wav, decoded)
    return corpus


def frames(variant: Variant, frame_ms: int = 250):
    """(seq, offset_ms, payload) for a variant cut into frames of frame_ms."""
    data = variant.data
    step = variant.bytes_per_second * frame_ms // 1000
    for seq, position in enumerate(range(0, len(data), step)):
        yield seq, seq * frame_ms, data[position:position + step]
