"""Codecs, channels, resampling and frame validation against sox's output on real speech."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from streamproc import audio
from streamproc.errors import InputRejected, RejectReason
from streamproc.schemas import AudioEncoding, AudioFrameMeta, AudioLayout, Speaker
from tests.speech import RATES, speech_corpus, tools_available

pytestmark = pytest.mark.skipif(not tools_available(), reason="needs espeak-ng and sox")


@pytest.fixture(scope="session")
def corpus():
    return speech_corpus()


@pytest.mark.parametrize("encoding", ["mulaw", "alaw"])
@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("channels", [1, 2])
def test_g711_matches_sox_both_ways(corpus, encoding, rate, channels):
    variant = corpus.get(encoding, rate, channels)
    sox_pcm = np.fromfile(variant.sox_decoded, dtype="<i2")
    # Decoding sox's G.711 bytes gives exactly sox's own decoding ...
    assert np.array_equal(audio.decode(variant.data, AudioEncoding(encoding)), sox_pcm)
    # ... and encoding sox's PCM16 of the same audio gives exactly sox's G.711 bytes.
    pcm = corpus.pcm16(rate, channels)
    assert audio.encode(pcm, AudioEncoding(encoding)) == variant.data


@pytest.mark.parametrize("encoding", list(AudioEncoding))
def test_round_trip_error_is_within_one_quantisation_step(encoding):
    every = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)
    back = audio.decode(audio.encode(every, encoding), encoding).astype(np.int64)
    error = np.abs(back - every.astype(np.int64))
    if encoding is AudioEncoding.pcm16:
        assert error.max() == 0
    else:
        # G.711 is logarithmic: the step is ~1/16 of the magnitude (plus a floor near zero).
        assert np.all(error <= np.maximum(np.abs(every.astype(np.int64)) / 16, 16) + 1)


def test_pcm16_is_little_endian_and_odd_lengths_are_rejected():
    assert audio.decode(b"\x01\x00\xff\xff", AudioEncoding.pcm16).tolist() == [1, -1]
    with pytest.raises(InputRejected) as caught:
        audio.decode(b"\x01\x00\xff", AudioEncoding.pcm16)
    assert caught.value.reason is RejectReason.odd_byte_count


def test_split_channels_separates_agent_and_customer(corpus):
    stereo = corpus.pcm16(8000, 2)
    agent, customer = audio.split_channels(stereo, 2)
    left = np.fromfile(corpus.get("pcm16", 8000, 1).path, dtype="<i2")
    assert np.array_equal(agent[: len(left)], left)
    # The customer channel is a different sentence, not a copy.
    assert not np.array_equal(customer[: len(left)], left)
    assert audio.rms_dbfs(customer) > -40


def test_resample_8k_to_16k_matches_sox(corpus):
    mine = audio.resample(corpus.pcm16(8000), 8000, 16000)
    reference = corpus.pcm16(16000)
    n = min(len(mine), len(reference))
    assert abs(len(mine) - len(reference)) <= 2
    assert np.corrcoef(mine[:n], reference[:n])[0, 1] > 0.999


def test_streaming_upsampler_equals_one_shot_apart_from_its_delay(corpus):
    pcm = corpus.pcm16(8000)
    upsampler = audio.Upsampler()
    streamed = np.concatenate([upsampler.process(pcm[i:i + 160]) for i in range(0, len(pcm), 160)])  # 20 ms frames
    one_shot = audio.resample(pcm, 8000, 16000)
    delay = (len(audio._H) - 1) // 2
    assert np.abs(streamed[delay:].astype(int) - one_shot[:-delay].astype(int)).max() <= 1


def test_rms_dbfs_levels():
    assert audio.rms_dbfs(np.zeros(100, np.int16)) == audio.MIN_DBFS
    assert audio.rms_dbfs(np.array([], np.int16)) == audio.MIN_DBFS
    assert audio.rms_dbfs(np.full(100, -32768, np.int16)) == pytest.approx(0.0, abs=1e-6)
    tone = (np.sin(np.arange(8000) * 2 * np.pi * 440 / 8000) * 3277).astype(np.int16)  # -20 dBFS peak
    assert audio.rms_dbfs(tone) == pytest.approx(-20 - 3.01, abs=0.1)


# --------------------------------------------------------------------------- validation


def meta(seq: int, **fields) -> AudioFrameMeta:
    return AudioFrameMeta(**({"encoding": "pcm16", "rate": 8000, "speaker": "agent", "seq": seq} | fields))


FRAME = b"\x00\x01" * 2000  # 250 ms of 8 kHz PCM16


def test_sequence_tracking_duplicates_gaps_and_formats():
    tracker = audio.StreamTracker(max_gap_fill_s=0.5)
    first = tracker.admit("c", meta(0), FRAME)
    assert (first.start_s, first.duration_s, first.gap_fill_s) == (0.0, 0.25, 0.0)
    assert tracker.admit("c", meta(0), FRAME) is None  # duplicate: dropped
    assert tracker.admit("c", meta(1), FRAME).start_s == 0.25
    gap = tracker.admit("c", meta(5), FRAME)  # frames 2..4 lost: 0.75 s, 0.5 s filled
    assert (gap.missing_frames, gap.gap_fill_s, gap.gap_skip_s, gap.start_s) == (3, 0.5, 0.25, 1.25)
    assert tracker.admit("c", meta(3), FRAME) is None  # late frame from the gap: dropped
    assert tracker.admit("c", meta(6), FRAME).start_s == 1.5
    # offset_ms, when sent, decides the timeline of a gap.
    jump = tracker.admit("c", meta(8, offset_ms=3000), FRAME)
    assert (jump.start_s, jump.gap_fill_s, jump.gap_skip_s) == (3.0, 0.5, pytest.approx(0.75))
    # Another stream of the same call has its own sequence.
    assert tracker.admit("c", meta(0, stream="customer-leg", speaker="customer"), FRAME).start_s == 0.0

    for bad_meta, payload, reason in (
        (meta(9, rate=16000), FRAME, RejectReason.sample_rate_changed),
        (meta(9, encoding="mulaw"), FRAME, RejectReason.format_changed),
        (meta(9), FRAME[:-1], RejectReason.odd_byte_count),
        (meta(9), b"", RejectReason.odd_byte_count),
        (meta(9), b"\x00" * 16_002, RejectReason.oversize_frame),
        (meta(0, channels=2, layout="agent_customer", stream="s2"), b"\x00" * 6, RejectReason.odd_byte_count),
    ):
        with pytest.raises(InputRejected) as caught:
            tracker.admit("c", bad_meta, payload)
        assert caught.value.reason is reason, (bad_meta, reason)
    # Rejected frames do not advance the sequence.
    assert tracker.admit("c", meta(9), FRAME).missing_frames == 0

    tracker.end_call("c")
    with pytest.raises(InputRejected) as caught:
        tracker.admit("c", meta(10), FRAME)
    assert caught.value.reason is RejectReason.call_ended


def test_frames_of_20ms_to_1s_are_accepted_for_every_format():
    for encoding in AudioEncoding:
        for rate in RATES:
            for channels, layout in ((1, "mono"), (2, "agent_customer")):
                m = dict(encoding=encoding, rate=rate, channels=channels, layout=layout, speaker=None)
                tracker = audio.StreamTracker()
                width = audio.bytes_per_sample(encoding) * channels
                for seq, ms in enumerate((20, 250, 500, 1000)):
                    frame = tracker.admit("c", meta(seq, **m), b"\x00" * (rate * ms // 1000 * width))
                    assert frame.duration_s == pytest.approx(ms / 1000)


def test_unknown_encoding_in_headers_is_rejected():
    headers = [(k, v) for k, v in meta(0).to_headers() if k != "sp-encoding"] + [("sp-encoding", b"opus")]
    with pytest.raises(InputRejected) as caught:
        AudioFrameMeta.from_headers(headers)
    assert caught.value.reason is RejectReason.unknown_encoding
    with pytest.raises(InputRejected) as caught:
        audio.decode(b"\x00\x00", "opus")
    assert caught.value.reason is RejectReason.unknown_encoding


# --------------------------------------------------------------------------- fuzz

header_names = st.sampled_from(
    ["sp-encoding", "sp-rate", "sp-channels", "sp-layout", "sp-speaker", "sp-stream", "sp-seq", "sp-offset_ms",
     "sp-sent_at_ms", "sp-schema_version", "other"]
)
header_values = st.one_of(
    st.binary(max_size=12),
    st.sampled_from([b"pcm16", b"mulaw", b"alaw", b"8000", b"16000", b"1", b"2", b"0", b"-1", b"mono",
                     b"agent_customer", b"agent", b"customer", b"99999999999999999999"]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    headers=st.lists(st.tuples(header_names, header_values), max_size=12),
    payload=st.binary(max_size=3000),
    encoding=st.one_of(st.sampled_from(list(AudioEncoding)), st.text(max_size=6)),
)
def test_fuzzed_frames_only_ever_raise_input_rejected(headers, payload, encoding):
    tracker = audio.StreamTracker(max_gap_fill_s=0.1)
    try:
        samples = audio.decode(payload, encoding)
        assert samples.dtype == np.int16
        for channels in (1, 2):
            try:
                parts = audio.split_channels(samples, channels)
                assert sum(len(p) for p in parts) == len(samples)
            except InputRejected:
                pass
        audio.rms_dbfs(samples)
        audio.resample(samples, 8000, 16000)
    except InputRejected:
        pass
    try:
        parsed = AudioFrameMeta.from_headers(headers)
        for _ in range(2):  # twice: the second is a duplicate or a continuation
            tracker.admit("call", parsed, payload)
    except InputRejected:
        pass


@settings(max_examples=200, deadline=None)
@given(seqs=st.lists(st.integers(0, 40), min_size=1, max_size=30), ms=st.sampled_from([20, 100, 250]))
def test_fuzzed_sequences_keep_a_monotonic_timeline(seqs, ms):
    tracker = audio.StreamTracker(max_gap_fill_s=0.3)
    payload = b"\x00\x00" * (8000 * ms // 1000)
    last_end = 0.0
    accepted = []
    for seq in seqs:
        frame = tracker.admit("call", meta(seq), payload)
        if frame is None:
            assert accepted and seq <= accepted[-1]
            continue
        assert frame.start_s >= last_end - 1e-9
        assert frame.gap_fill_s <= 0.3 + 1e-9
        assert frame.start_s == pytest.approx(seq * ms / 1000)
        last_end = frame.start_s + frame.duration_s
        accepted.append(seq)
    assert accepted == sorted(set(accepted))


def test_wav_reader_reads_every_sox_format(corpus):
    for variant in corpus.variants.values():
        wav = audio.read_wav(variant.wav)
        assert (wav.encoding.value, wav.rate, wav.channels) == (variant.encoding, variant.rate, variant.channels)
        assert wav.data == variant.data
    with pytest.raises(ValueError):
        audio.read_wav(__file__)


def test_speakers_of_layouts():
    assert audio.speakers_of(meta(0)) == [Speaker.agent]
    assert audio.speakers_of(meta(0, speaker=None)) == [Speaker.unknown]
    stereo = meta(0, channels=2, layout=AudioLayout.agent_customer, speaker=None)
    assert audio.speakers_of(stereo) == [Speaker.agent, Speaker.customer]
