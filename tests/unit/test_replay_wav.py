"""Recorded-call WAV reading (every supported layout, converted by real sox) and frame cutting."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from streamproc.replay import ReplayError, audio_frames, read_wav
from streamproc.schemas import AudioEncoding
from streamproc.synth import write_wav


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = tmp_path_factory.mktemp("wav") / "source.wav"
    t = np.arange(16000 * 2) / 16000
    tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    write_wav(path, np.stack([tone, tone // 2], axis=1), 16000)
    return path


@pytest.mark.parametrize(
    "args, encoding, rate, channels",
    [
        ([], AudioEncoding.pcm16, 16000, 2),
        (["-r", "8000", "-e", "u-law", "-b", "8", "-c", "1"], AudioEncoding.mulaw, 8000, 1),
        (["-r", "8000", "-e", "a-law", "-b", "8"], AudioEncoding.alaw, 8000, 2),
        (["-e", "a-law", "-b", "8", "-c", "1"], AudioEncoding.alaw, 16000, 1),
        (["-r", "8000", "-e", "signed-integer", "-b", "16", "-c", "1"], AudioEncoding.pcm16, 8000, 1),
    ],
)
def test_every_supported_layout_is_read(source, tmp_path, args, encoding, rate, channels):
    out = tmp_path / "out.wav"
    subprocess.run(["sox", str(source), *args, str(out)], check=True)
    audio = read_wav(out)
    assert (audio.encoding, audio.rate, audio.channels) == (encoding, rate, channels)
    assert audio.duration_s == pytest.approx(2.0, abs=0.01)
    frames = list(audio_frames(audio, 250))
    assert len(frames) == 8 and all(duration == 250 for _, duration, _ in frames)
    assert b"".join(piece for _, _, piece in frames) == audio.data


@pytest.mark.parametrize(
    "args, words",
    [(["-r", "44100"], "sample rate 44100"), (["-b", "24"], "24-bit"), (["-c", "3"], "3 channels"), (["-e", "floating-point", "-b", "32"], "format tag 3")],
)
def test_unsupported_layouts_are_refused_with_a_hint(source, tmp_path, args, words):
    out = tmp_path / "out.wav"
    subprocess.run(["sox", str(source), *args, str(out)], check=True)
    with pytest.raises(ReplayError, match=words):
        read_wav(out)


def test_a_short_tail_joins_the_previous_frame(tmp_path):
    path = tmp_path / "odd.wav"
    write_wav(path, np.zeros(8000 + 80, np.int16), 8000)  # 1 s + 10 ms
    frames = list(audio_frames(read_wav(path), 250))
    assert [(offset, duration) for offset, duration, _ in frames] == [(0, 250), (250, 250), (500, 250), (750, 260)]
