"""Audio on the wire: G.711/PCM codecs, channel split, 8→16 kHz resampling, levels, frame validation.

Pure numpy, no Faust, no Vosk. Samples are ``int16`` numpy arrays throughout.

The G.711 tables follow the ITU reference (and sox's ``g711.c``): encoding a 16-bit
sample first rounds it to 14 bits (μ-law) or 13 bits (A-law), exactly as sox does, so
``encode`` produces the same bytes as ``sox -e u-law`` / ``-e a-law``.

:class:`StreamTracker` validates every frame of a call's streams (format, size,
sequence) and turns gaps into a bounded amount of silence; anything it cannot accept
raises :class:`~streamproc.errors.InputRejected` with a :class:`RejectReason`.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from .errors import InputRejected, RejectReason
from .schemas import AudioEncoding, AudioFrameMeta, AudioLayout, Speaker

log = logging.getLogger(__name__)

#: Rate the recogniser runs at; 8 kHz telephony audio is upsampled to it.
RECOGNIZER_RATE = 16000
MAX_FRAME_S = 1.0
MIN_DBFS = -120.0  # level reported for digital silence (log10(0) is -inf, which JSON cannot carry)


# --------------------------------------------------------------------------- G.711


def _mulaw_decode_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = ((u & 0x0F) << 3) + 0x84
    t <<= (u & 0x70) >> 4
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)


def _alaw_decode_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(a & 0x80, t, -t).astype(np.int16)


def _segment(values: np.ndarray, ends: tuple[int, ...]) -> np.ndarray:
    """Index of the first segment end >= value (len(ends) when above all), like g711.c's search()."""
    return np.searchsorted(np.asarray(ends), values, side="left")


def _mulaw_encode_table() -> np.ndarray:
    pcm = np.minimum((np.arange(-32768, 32768, dtype=np.int32) + 2) >> 2, 8191)  # round to 14 bits, as sox does
    negative = pcm < 0
    mask = np.where(negative, 0x7F, 0xFF)
    value = np.minimum(np.where(negative, -pcm, pcm), 8159) + 33
    seg = _segment(value, (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF))
    uval = (np.minimum(seg, 7) << 4) | ((value >> (np.minimum(seg, 7) + 1)) & 0x0F)
    uval = np.where(seg >= 8, 0x7F, uval)
    return (uval ^ mask).astype(np.uint8)


def _alaw_encode_table() -> np.ndarray:
    pcm = np.minimum((np.arange(-32768, 32768, dtype=np.int32) + 4) >> 3, 4095)  # round to 13 bits
    negative = pcm < 0
    mask = np.where(negative, 0x55, 0xD5)
    value = np.where(negative, -pcm - 1, pcm)
    seg = _segment(value, (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF))
    shift = np.where(seg < 2, 1, np.minimum(seg, 7))
    aval = (np.minimum(seg, 7) << 4) | ((value >> shift) & 0x0F)
    aval = np.where(seg >= 8, 0x7F, aval)
    return (aval ^ mask).astype(np.uint8)


_DECODE = {AudioEncoding.mulaw: _mulaw_decode_table(), AudioEncoding.alaw: _alaw_decode_table()}
_ENCODE = {AudioEncoding.mulaw: _mulaw_encode_table(), AudioEncoding.alaw: _alaw_encode_table()}


def _encoding(encoding: AudioEncoding | str) -> AudioEncoding:
    try:
        return AudioEncoding(encoding)
    except ValueError:
        raise InputRejected(RejectReason.unknown_encoding, f"unknown audio encoding {encoding!r}") from None


def bytes_per_sample(encoding: AudioEncoding | str) -> int:
    return 2 if _encoding(encoding) is AudioEncoding.pcm16 else 1


def decode(payload: bytes, encoding: AudioEncoding) -> np.ndarray:
    """Bytes → int16 samples (interleaved if multi-channel). Odd PCM16 byte counts are rejected."""
    encoding = _encoding(encoding)
    if encoding is AudioEncoding.pcm16:
        if len(payload) % 2:
            raise InputRejected(RejectReason.odd_byte_count, f"pcm16 payload has an odd byte count ({len(payload)})")
        return np.frombuffer(payload, dtype="<i2").astype(np.int16)
    return _DECODE[encoding][np.frombuffer(payload, dtype=np.uint8)]


def encode(samples: np.ndarray, encoding: AudioEncoding) -> bytes:
    """int16 samples → bytes on the wire (PCM16 little-endian, or one G.711 byte per sample)."""
    encoding = _encoding(encoding)
    samples = np.asarray(samples, dtype=np.int16)
    if encoding is AudioEncoding.pcm16:
        return samples.astype("<i2").tobytes()
    return _ENCODE[encoding][samples.astype(np.int32) + 32768].tobytes()


def split_channels(samples: np.ndarray, channels: int) -> list[np.ndarray]:
    """De-interleave: channel c is samples[c::channels]. A trailing partial sample frame is an error."""
    if channels < 1:
        raise ValueError("channels must be >= 1")
    if len(samples) % channels:
        raise InputRejected(
            RejectReason.odd_byte_count, f"{len(samples)} samples do not divide into {channels} channels"
        )
    if channels == 1:
        return [samples]
    return [np.ascontiguousarray(samples[c::channels]) for c in range(channels)]


def rms_dbfs(samples: np.ndarray) -> float:
    """RMS level in dB relative to full scale (0 dBFS = a full-scale square wave); MIN_DBFS for silence."""
    if len(samples) == 0:
        return MIN_DBFS
    x = np.asarray(samples, dtype=np.float64)
    rms = math.sqrt(float(np.mean(x * x)))
    if rms <= 0:
        return MIN_DBFS
    return max(MIN_DBFS, 20.0 * math.log10(rms / 32768.0))


# --------------------------------------------------------------------------- resampling


def _halfband_filter(taps: int = 63) -> np.ndarray:
    """Windowed-sinc low-pass at a quarter of the output rate (the 4 kHz input Nyquist), gain 2 for zero-stuffing."""
    n = np.arange(taps) - (taps - 1) / 2
    h = np.sinc(n / 2) * np.blackman(taps)
    return (2 * h / h.sum()).astype(np.float64)


_H = _halfband_filter()


class Upsampler:
    """Streaming 2× upsampler (8 → 16 kHz): keeps the filter history between frames so frame
    boundaries leave no clicks. The output lags the input by (taps-1)/2 output samples (~2 ms)."""

    def __init__(self) -> None:
        self._history = np.zeros(len(_H) - 1, dtype=np.float64)

    def process(self, samples: np.ndarray) -> np.ndarray:
        if len(samples) == 0:
            return np.zeros(0, dtype=np.int16)
        stuffed = np.zeros(2 * len(samples), dtype=np.float64)
        stuffed[::2] = samples
        buffer = np.concatenate((self._history, stuffed))
        self._history = buffer[-(len(_H) - 1):]
        out = np.convolve(buffer, _H, mode="valid")
        return np.clip(np.rint(out), -32768, 32767).astype(np.int16)


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """One-shot resampling between the supported rates (8000 ↔ 16000), zero-phase (no delay)."""
    samples = np.asarray(samples, dtype=np.int16)
    if from_rate == to_rate:
        return samples
    if len(samples) == 0:
        return samples
    if (from_rate, to_rate) == (8000, 16000):
        stuffed = np.zeros(2 * len(samples), dtype=np.float64)
        stuffed[::2] = samples
        out = np.convolve(stuffed, _H, mode="same")
    elif (from_rate, to_rate) == (16000, 8000):
        out = np.convolve(samples.astype(np.float64), _H / 2, mode="same")[::2]
    else:
        raise ValueError(f"unsupported resampling {from_rate} -> {to_rate} Hz (8000 and 16000 only)")
    return np.clip(np.rint(out), -32768, 32767).astype(np.int16)


# --------------------------------------------------------------------------- frame validation


def speakers_of(meta: AudioFrameMeta) -> list[Speaker]:
    """Speaker of each channel of a frame."""
    if meta.layout is AudioLayout.agent_customer:
        return [Speaker.agent, Speaker.customer]
    return [meta.speaker or Speaker.unknown]


@dataclass
class AdmittedFrame:
    """A frame that passed validation, with where it sits in the stream's timeline."""

    meta: AudioFrameMeta
    start_s: float  # seconds into the stream's audio (offset_ms when given, else counted)
    duration_s: float
    gap_fill_s: float = 0.0  # silence to insert before this frame (lost frames, bounded)
    gap_skip_s: float = 0.0  # lost audio beyond the bound: the timeline jumps, nothing is fed
    missing_frames: int = 0


@dataclass
class _StreamState:
    encoding: AudioEncoding
    rate: int
    channels: int
    next_seq: int
    next_start_s: float
    frames: int = 0
    gaps: int = 0
    duplicates: int = 0


# Audio sent up to this long after call_ended (event time) still belongs to the call: producers
# flush their last chunk after the hang-up event.
CALL_END_GRACE_S = 2.0


@dataclass
class StreamTracker:
    """Per-call, per-stream validation and sequence tracking. Thread-safe.

    * format (encoding, rate, channels) is fixed by a stream's first frame; a change is rejected;
    * payloads must be whole sample frames and at most ``max_frame_s`` long;
    * ``seq`` below the next expected one is a duplicate (or a late re-send): dropped, not an error;
    * ``seq`` above it is a gap: counted, logged, and filled with up to ``max_gap_fill_s`` of
      silence so word times stay aligned with the call; a longer gap moves the timeline on;
    * after :meth:`end_call`, frames of the call are rejected (``call_ended``).
    """

    max_gap_fill_s: float = 2.0
    max_frame_s: float = MAX_FRAME_S
    ended_memory: int = 10_000
    max_streams: int = 50_000  # least recently used stream states beyond this are forgotten
    _streams: OrderedDict = field(default_factory=OrderedDict)
    _ended: OrderedDict = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def admit(self, call_id: str, meta: AudioFrameMeta, payload: bytes) -> AdmittedFrame | None:
        """Validate one frame. Returns None for a duplicate; raises InputRejected for a bad frame."""
        width = bytes_per_sample(meta.encoding) * meta.channels
        if not payload:
            raise InputRejected(RejectReason.odd_byte_count, "empty audio frame")
        if len(payload) % width:
            raise InputRejected(
                RejectReason.odd_byte_count,
                f"{len(payload)} bytes is not a whole number of {meta.encoding.value}×{meta.channels} sample frames",
            )
        duration_s = len(payload) / width / meta.rate
        if duration_s > self.max_frame_s + 1e-9:
            raise InputRejected(
                RejectReason.oversize_frame,
                f"frame of {duration_s * 1000:.1f} ms exceeds {self.max_frame_s * 1000:.0f} ms ({len(payload)} bytes)",
            )
        key = (call_id, meta.stream)
        with self._lock:
            if call_id in self._ended:
                raise InputRejected(RejectReason.call_ended, f"audio frame seq {meta.seq} after the call ended")
            state = self._streams.get(key)
            start_s = meta.offset_ms / 1000.0 if meta.offset_ms is not None else None
            if state is None:
                # A stream first seen at seq N > 0 (lost start, or taken over after a rebalance) starts
                # where N frames of this size would have put it, unless offset_ms says exactly.
                first_start = start_s if start_s is not None else meta.seq * duration_s
                state = _StreamState(meta.encoding, meta.rate, meta.channels, next_seq=meta.seq, next_start_s=first_start)
                self._streams[key] = state
                while len(self._streams) > self.max_streams:
                    self._streams.popitem(last=False)
            elif meta.rate != state.rate:
                raise InputRejected(
                    RejectReason.sample_rate_changed, f"stream {meta.stream!r} changed rate {state.rate} -> {meta.rate} Hz"
                )
            elif meta.encoding is not state.encoding or meta.channels != state.channels:
                raise InputRejected(
                    RejectReason.format_changed,
                    f"stream {meta.stream!r} changed format {state.encoding.value}/{state.channels}ch -> "
                    f"{meta.encoding.value}/{meta.channels}ch",
                )
            if meta.seq < state.next_seq:
                state.duplicates += 1
                return None
            frame = AdmittedFrame(meta=meta, start_s=state.next_start_s, duration_s=duration_s)
            if meta.seq > state.next_seq:
                missing = meta.seq - state.next_seq
                lost_s = (start_s - state.next_start_s) if start_s is not None else missing * duration_s
                lost_s = max(0.0, lost_s)
                frame.missing_frames = missing
                frame.gap_fill_s = min(lost_s, self.max_gap_fill_s)
                frame.gap_skip_s = lost_s - frame.gap_fill_s
                frame.start_s = state.next_start_s + lost_s
                state.gaps += 1
                log.info(
                    "audio gap call=%s stream=%s: %d frame(s) missing before seq %d (%.2f s; %.2f s filled with silence)",
                    call_id, meta.stream, missing, meta.seq, lost_s, frame.gap_fill_s,
                )
            state.next_seq = meta.seq + 1
            state.next_start_s = frame.start_s + duration_s
            state.frames += 1
            self._streams.move_to_end(key)
            return frame

    def end_call(self, call_id: str) -> None:
        with self._lock:
            for key in [k for k in self._streams if k[0] == call_id]:
                del self._streams[key]
            self._ended[call_id] = True
            self._ended.move_to_end(call_id)
            while len(self._ended) > self.ended_memory:
                self._ended.popitem(last=False)

    def is_ended(self, call_id: str) -> bool:
        with self._lock:
            return call_id in self._ended

    def forget(self, call_id: str) -> None:
        """Drop a call's stream state without marking it ended (idle timeout)."""
        with self._lock:
            for key in [k for k in self._streams if k[0] == call_id]:
                del self._streams[key]

    def stream_count(self) -> int:
        with self._lock:
            return len(self._streams)


# --------------------------------------------------------------------------- WAV files


@dataclass
class WavAudio:
    encoding: AudioEncoding
    rate: int
    channels: int
    data: bytes

    @property
    def bytes_per_frame(self) -> int:  # one sample of every channel
        return bytes_per_sample(self.encoding) * self.channels

    @property
    def duration_s(self) -> float:
        return len(self.data) / self.bytes_per_frame / self.rate


_WAV_FORMATS = {1: AudioEncoding.pcm16, 6: AudioEncoding.alaw, 7: AudioEncoding.mulaw}


def read_wav(path) -> WavAudio:
    """Read a WAV file of 16-bit PCM, A-law or μ-law (the stdlib wave module reads only PCM).
    Raises ValueError with a readable message for anything else."""
    import struct

    raw = open(path, "rb").read()
    if len(raw) < 12 or raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        raise ValueError(f"{path}: not a RIFF/WAVE file")
    position, fmt, data = 12, None, None
    while position + 8 <= len(raw):
        chunk_id, size = raw[position:position + 4], struct.unpack("<I", raw[position + 4:position + 8])[0]
        body = raw[position + 8:position + 8 + size]
        if chunk_id == b"fmt ":
            fmt = body
        elif chunk_id == b"data":
            data = body
        position += 8 + size + (size & 1)
    if fmt is None or data is None or len(fmt) < 16:
        raise ValueError(f"{path}: missing fmt or data chunk")
    tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == 0xFFFE and len(fmt) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the real tag starts the sub-format GUID
        tag = struct.unpack("<H", fmt[24:26])[0]
    encoding = _WAV_FORMATS.get(tag)
    if encoding is None:
        raise ValueError(f"{path}: WAV format tag {tag} is not supported (PCM16, A-law or μ-law)")
    if encoding is AudioEncoding.pcm16 and bits != 16:
        raise ValueError(f"{path}: {bits}-bit PCM is not supported; convert with: sox IN -b 16 OUT.wav")
    if encoding is not AudioEncoding.pcm16 and bits != 8:
        raise ValueError(f"{path}: {bits}-bit G.711 is not supported; G.711 samples are 8-bit")
    if rate not in (8000, 16000):
        raise ValueError(f"{path}: sample rate {rate} is not supported (8000 or 16000); convert with: sox IN -r 16000 OUT.wav")
    if channels not in (1, 2):
        raise ValueError(f"{path}: {channels} channels; mono or stereo (agent left, customer right) only")
    width = bytes_per_sample(encoding) * channels
    return WavAudio(encoding, rate, channels, data[: len(data) - len(data) % width])
