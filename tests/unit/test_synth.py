"""Scenario → stereo WAV + events/script JSONL, with real flite, espeak-ng and sox."""

from __future__ import annotations

import json
import textwrap
import wave

import numpy as np
import pytest

from streamproc.replay import read_wav
from streamproc.scenario import ScenarioError, load_scenario, packaged_scenarios, parse_scenario
from streamproc.synth import DEFAULT_VOICES, SynthError, parse_voice, render, synthesize, tts

SCENARIO = textwrap.dedent(
    """
    version: 1
    name: synth test
    participants:
      agent: {id: agent-1}
      customer: {id: cust-1}
      queue: support
    timeline:
      - say: agent
        text: {en: "Hello, how can I help?", ko: "안녕하세요"}
      - say: customer
        text: {en: "My order is late.", ko: "주문이 늦어요"}
        after: 0.5
      - hold: 3
      - say: agent
        text: {en: "It ships today.", ko: "오늘 배송됩니다"}
      - end: true
    """
)


def _rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if len(samples) else 0.0


def _span(samples: np.ndarray, rate: int, start_s: float, end_s: float) -> np.ndarray:
    return samples[int(start_s * rate):int(end_s * rate)]


@pytest.mark.parametrize("language, rate", [("en", 16000), ("ko", 8000)])
def test_wav_is_stereo_with_each_side_on_its_channel_and_events_match(tmp_path, language, rate):
    files = synthesize(parse_scenario(SCENARIO), tmp_path / "call.wav", language, rate=rate, call_id="c-1")
    with wave.open(str(files.wav)) as handle:
        assert (handle.getnchannels(), handle.getsampwidth(), handle.getframerate()) == (2, 2, rate)
        frames = handle.getnframes()
        pcm = np.frombuffer(handle.readframes(frames), "<i2").reshape(-1, 2)
    assert frames / rate == pytest.approx(files.duration_s, abs=1 / rate * 2)

    script = [json.loads(line) for line in files.script.read_text().splitlines()]
    events = [json.loads(line) for line in files.events.read_text().splitlines()]
    assert [line["speaker"] for line in script] == ["agent", "customer", "agent"]
    assert all(line["language"] == language for line in script)
    agent, customer = pcm[:, 0], pcm[:, 1]
    for line in script:
        speaking, silent = (agent, customer) if line["speaker"] == "agent" else (customer, agent)
        # Speech on the speaker's channel during the line, nothing on the other channel.
        assert _rms(_span(speaking, rate, line["start_s"], line["end_s"])) > 300
        assert _rms(_span(silent, rate, line["start_s"], line["end_s"])) == 0
    # Silence on both channels before the first line and during the hold.
    assert [e["type"] for e in events] == ["call_started", "hold_started", "hold_ended", "call_ended"]
    assert all(e["call_id"] == "c-1" for e in events)
    assert events[0] == {"offset_s": 0.0, "type": "call_started", "call_id": "c-1", "agent_id": "agent-1",
                         "queue": "support", "customer_id": "cust-1", "direction": "inbound"}
    hold_start, hold_end = events[1]["offset_s"], events[2]["offset_s"]
    assert hold_end - hold_start == pytest.approx(3.0)
    assert hold_start == pytest.approx(script[1]["end_s"] + 0.4)
    assert script[2]["start_s"] == pytest.approx(hold_end + 0.4)
    assert _rms(_span(pcm, rate, hold_start, hold_end)) == 0
    assert _rms(_span(pcm, rate, 0, script[0]["start_s"])) == 0
    assert events[-1]["offset_s"] == pytest.approx(files.duration_s)
    assert events[-1]["offset_s"] == pytest.approx(script[-1]["end_s"] + 1.5)


def test_line_durations_are_the_measured_tts_lengths_and_a_custom_tts_command_works(tmp_path):
    # A "TTS" that says every line as a 1.5 s tone: durations become exactly 1.5 s.
    command = "sox -n -r 22050 -c 1 {out} synth 1.5 sine 440"
    files = synthesize(parse_scenario(SCENARIO), tmp_path / "tone.wav", "en", rate=16000, tts_command=command)
    script = [json.loads(line) for line in files.script.read_text().splitlines()]
    assert [round(line["end_s"] - line["start_s"], 3) for line in script] == [1.5, 1.5, 1.5]
    audio = read_wav(files.wav)
    assert audio.duration_s == pytest.approx(0.4 + 1.5 + 0.5 + 1.5 + 0.4 + 3 + 0.4 + 1.5 + 1.5, abs=0.001)


def test_louder_lines_are_louder(tmp_path):
    loud = SCENARIO.replace('ko: "주문이 늦어요"}', 'ko: "주문이 늦어요"}\n    gain_db: 10')
    quiet_files = synthesize(parse_scenario(SCENARIO), tmp_path / "q.wav", "en")
    loud_files = synthesize(parse_scenario(loud), tmp_path / "l.wav", "en")
    line = json.loads(quiet_files.script.read_text().splitlines()[1])
    q = np.frombuffer(read_wav(quiet_files.wav).data, "<i2").reshape(-1, 2)[:, 1]
    l_ = np.frombuffer(read_wav(loud_files.wav).data, "<i2").reshape(-1, 2)[:, 1]
    ratio_db = 20 * np.log10(_rms(_span(l_, 16000, line["start_s"], line["end_s"])) / _rms(_span(q, 16000, line["start_s"], line["end_s"])))
    assert 7 < ratio_db <= 10.5  # +10 dB, less what clipping takes off


def test_a_failing_tts_command_is_a_clear_error():
    with pytest.raises(SynthError, match="exited"):
        tts("hi", voice="x", rate=16000, command="false {out}")
    with pytest.raises(SynthError, match="failed"):
        tts("hi", voice="x", rate=16000, command="/no/such/tts {out}")


def test_every_packaged_scenario_renders_in_korean_and_english(tmp_path):
    for name, path in packaged_scenarios().items():
        for language in ("ko", "en"):
            files = synthesize(load_scenario(path), tmp_path / f"{name}-{language}.wav", language)
            assert read_wav(files.wav).channels == 2
            assert read_wav(files.wav).duration_s == pytest.approx(files.duration_s, abs=0.001)


def test_synth_command(tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT

    out = tmp_path / "calm.wav"
    result = subprocess.run([sys.executable, "-m", "streamproc", "synth", "calm_call", "-L", "ko", "--rate", "8000", "-o", str(out)],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    audio = read_wav(out)
    assert (audio.channels, audio.rate) == (2, 8000)
    assert (tmp_path / "calm.events.jsonl").exists() and (tmp_path / "calm.script.jsonl").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text(SCENARIO.replace("hold: 3", "hold: three"))
    result = subprocess.run([sys.executable, "-m", "streamproc", "synth", str(bad)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 1 and "line 14" in result.stderr and "timeline.2.hold" in result.stderr and "Traceback" not in result.stderr
    result = subprocess.run([sys.executable, "-m", "streamproc", "synth", "calm_call", "-L", "fr", "-o", str(out)],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 1 and "no 'fr' lines" in result.stderr
    # English, as a phone line delivers it: 8 kHz G.711 μ-law.
    phone = tmp_path / "rude.wav"
    result = subprocess.run([sys.executable, "-m", "streamproc", "synth", "rude_agent", "--rate", "8000", "--encoding", "mulaw", "-o", str(phone)],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "8000 Hz mulaw stereo" in result.stdout and "language en" in result.stdout
    audio = read_wav(phone)
    assert (audio.encoding.value, audio.rate, audio.channels) == ("mulaw", 8000, 2)
    bad.write_text(SCENARIO.replace("agent: {id: agent-1}", 'agent: {id: agent-1, voice: {en: "flite:hal9000"}}'))
    result = subprocess.run([sys.executable, "-m", "streamproc", "synth", str(bad)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 1 and "line 5" in result.stderr and "unknown flite voice 'hal9000'" in result.stderr, result.stderr


def test_voice_names_select_the_engine_and_bad_ones_are_reported_with_the_line():
    assert parse_voice("flite:slt") == ("flite", "slt")
    assert parse_voice("espeak:ko+f2") == ("espeak", "ko+f2")
    assert parse_voice("en-us+m3") == ("espeak", "en-us+m3")  # a bare name is an espeak-ng voice (old files)
    for voice, words in (("flite:nobody", "unknown flite voice"), ("festival:kal", "unknown TTS engine"), ("flite:", "names no voice")):
        with pytest.raises(ValueError, match=words):
            parse_voice(voice)
        text = SCENARIO.replace("customer: {id: cust-1}", f'customer: {{id: cust-1, voice: {{en: "{voice}"}}}}')
        with pytest.raises(ScenarioError) as caught:
            parse_scenario(text, "call.yaml")
        problem = caught.value.problems[0]
        assert (problem.path, problem.line) == ("participants.customer.voice", 6) and words in problem.message
    # English speaks with flite by default, a different voice on each side.
    assert DEFAULT_VOICES["en"]["agent"].startswith("flite:") and DEFAULT_VOICES["en"]["customer"].startswith("flite:")
    assert DEFAULT_VOICES["en"]["agent"] != DEFAULT_VOICES["en"]["customer"]
    with pytest.raises(SynthError, match="unknown flite voice"):
        tts("hi", voice="flite:nobody", rate=16000)


def test_packaged_english_voices_are_flite_and_differ_between_agent_and_customer():
    for name, path in packaged_scenarios().items():
        scenario = load_scenario(path)
        agent, customer = scenario.participants.agent.voice["en"], scenario.participants.customer.voice["en"]
        assert parse_voice(agent)[0] == parse_voice(customer)[0] == "flite", name
        assert agent != customer, name


def test_flite_speaks_english_and_a_slower_speed_stretches_it():
    normal = tts("I want to speak to a manager.", voice="flite:slt", rate=8000)
    slow = tts("I want to speak to a manager.", voice="flite:slt", rate=8000, speed=120)
    assert 1.0 < len(normal) / 8000 < 4.0 and _rms(normal) > 300
    assert len(slow) > len(normal) * 1.2


def _band_energy(samples: np.ndarray, rate: int, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    return float(spectrum[(freqs >= low) & (freqs < high)].sum())


def test_the_call_goes_through_an_8_khz_mulaw_phone_line(tmp_path):
    scenario = parse_scenario(SCENARIO)
    clean = render(scenario, "en", rate=16000, phone=False).samples[:, 0]
    phone = render(scenario, "en", rate=16000).samples[:, 0]
    assert len(clean) == len(phone)
    # Band-limited to the phone band: what flite puts above 4 kHz is gone.
    assert _band_energy(clean, 16000, 4200, 8000) > 1e-3 * _band_energy(clean, 16000, 0, 8000)
    assert _band_energy(phone, 16000, 4200, 8000) < 1e-4 * _band_energy(phone, 16000, 0, 8000)
    # μ-law at 8 kHz on disk: the file's samples are exactly what the phone-line render gives.
    files = synthesize(scenario, tmp_path / "line.wav", "en", rate=8000, encoding="mulaw")
    audio = read_wav(files.wav)
    assert (audio.encoding.value, audio.rate, audio.channels) == ("mulaw", 8000, 2)
    assert len(audio.data) == 2 * round(files.duration_s * 8000)
    from streamproc.audio import decode, encode

    decoded = decode(audio.data, audio.encoding)
    assert encode(decoded, audio.encoding) == audio.data  # μ-law round trip is exact on μ-law values
    assert _rms(decoded) > 100
    with pytest.raises(SynthError, match="encoding"):
        synthesize(scenario, tmp_path / "x.wav", "en", encoding="gsm")
