"""Scenario → stereo WAV + events/script JSONL, with real espeak-ng and sox."""

from __future__ import annotations

import json
import textwrap
import wave

import numpy as np
import pytest

from streamproc.replay import read_wav
from streamproc.scenario import load_scenario, packaged_scenarios, parse_scenario
from streamproc.synth import SynthError, synthesize, tts

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
