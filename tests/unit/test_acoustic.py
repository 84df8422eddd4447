"""Acoustic detectors: raised voice vs the speaker's own baseline, dead air outside holds, cross-talk."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from streamproc.detect.acoustic import AcousticState, AudioFeatures
from streamproc.detect.engine import CallInfo, DetectionEngine
from streamproc.rules import CrosstalkRule, DeadAirRule, RaisedVoiceRule, load_rules
from streamproc.schemas import AlertKind, Severity, Speaker

RAISED = RaisedVoiceRule(id="rv", severity=Severity.warning, above_baseline_db=10, min_duration_s=1.0, baseline_min_speech_s=5)
DEAD = DeadAirRule(id="da", severity=Severity.warning, after_s=10)
CROSS = CrosstalkRule(id="ct", severity=Severity.info, count=3, min_overlap_s=0.5, window_s=60)

A, C = Speaker.agent, Speaker.customer


def frames(speaker, start, seconds, level, speech=True, step=0.25):
    out, t = [], start
    while t < start + seconds - 1e-9:
        out.append(AudioFeatures("c1", speaker, round(t, 3), round(t + step, 3), level, speech))
        t += step
    return out


def feed(state, features, *, raised=(RAISED,), dead=(), cross=(), on_hold=False, batch=1):
    hits = []
    for i in range(0, len(features), batch):
        hits += state.update(features[i : i + batch], raised=raised, dead_air=dead, crosstalk=cross, on_hold=on_hold)
    return hits


@settings(max_examples=60, deadline=None)
@given(base=st.floats(-50, -15), jitter=st.floats(0, 3))
def test_raised_voice_is_relative_to_the_speakers_own_baseline(base, jitter):
    state = AcousticState()
    normal = [
        AudioFeatures(f.call_id, f.speaker, f.start_s, f.end_s, base + (jitter if i % 2 else -jitter), True)
        for i, f in enumerate(frames(C, 0, 8, base))
    ]
    assert feed(state, normal) == []
    hits = feed(state, frames(C, 8, 2, base + 14))
    assert len(hits) == 1 and hits[0].kind == "raised_voice" and hits[0].speaker is C
    assert hits[0].start_s == pytest.approx(8.0) and hits[0].value >= 10
    # a quiet speaker getting 14 dB louder is raised; a loud speaker at the same absolute level is not
    state2 = AcousticState()
    feed(state2, frames(C, 0, 8, base + 14))
    assert feed(state2, frames(C, 8, 2, base + 14)) == []


def test_raised_voice_needs_a_baseline_and_duration_and_fires_once_per_run():
    state = AcousticState()
    assert feed(state, frames(A, 0, 2, -40) + frames(A, 2, 2, -20)) == []  # 2 s of speech is no baseline yet
    state = AcousticState()
    feed(state, frames(A, 0, 6, -40))
    assert feed(state, frames(A, 6, 0.5, -20) + frames(A, 6.5, 1, -40)) == []  # a short peak is not shouting
    hits = feed(state, frames(A, 8, 4, -20))
    assert len(hits) == 1
    assert feed(state, frames(A, 70, 0.25, -40) + frames(A, 71, 3, -20)) != []  # a new run after the cooldown


def test_dead_air_fires_once_per_silence_and_not_on_hold():
    state = AcousticState()
    hits = feed(state, frames(A, 0, 2, -30) + frames(A, 2, 15, -70, speech=False), raised=(), dead=(DEAD,))
    assert len(hits) == 1 and hits[0].kind == "dead_air" and hits[0].start_s == pytest.approx(2.0)
    assert hits[0].end_s == pytest.approx(12.0)
    state = AcousticState()
    assert feed(state, frames(A, 0, 2, -30) + frames(A, 2, 15, -70, speech=False), raised=(), dead=(DEAD,), on_hold=True) == []
    # after the hold the silence clock restarts
    hits = feed(state, frames(A, 17, 9, -70, speech=False), raised=(), dead=(DEAD,))
    assert hits == []
    assert len(feed(state, frames(A, 26, 2, -70, speech=False), raised=(), dead=(DEAD,))) == 1


def test_dead_air_waits_for_the_slowest_stream():
    state = AcousticState()
    # the customer's stream is behind: we only know up to 3 s for it, so no 10 s silence yet
    feed(state, frames(C, 0, 3, -70, speech=False), raised=(), dead=(DEAD,))
    assert feed(state, frames(A, 0, 15, -70, speech=False), raised=(), dead=(DEAD,)) == []


def test_crosstalk_counts_overlap_stretches():
    state = AcousticState()
    features = []
    for k in range(3):  # three 1 s overlaps, 10 s apart
        features += frames(A, k * 10, 3, -30) + frames(C, k * 10 + 2, 2, -30)
    hits = feed(state, sorted(features, key=lambda f: f.start_s), raised=(), cross=(CROSS,), batch=2)
    assert len(hits) == 1 and hits[0].kind == "crosstalk" and hits[0].value == 3
    # turn-taking without overlap is not cross-talk
    state = AcousticState()
    turns = []
    for k in range(6):
        turns += frames(A if k % 2 else C, k * 3, 3, -30)
    assert feed(state, turns, raised=(), cross=(CROSS,)) == []


def test_engine_turns_hits_into_alerts_with_queue_targeting():
    rules = load_rules()
    engine = DetectionEngine(lambda: rules)
    silence = frames(A, 0, 1, -30) + frames(A, 1, 20, -70, speech=False)
    alerts = engine.on_features(silence, lambda cid: CallInfo(queue="billing", agent_id="a1"), now=1000.0)
    assert [a.rule_id for a in alerts] == ["dead-air-warning"]
    assert alerts[0].kind is AlertKind.dead_air and alerts[0].evidence.value >= 15 and alerts[0].agent_id == "a1"
    again = engine.on_features(frames(A, 21, 1, -70, speech=False), lambda cid: None, now=1001.0)
    assert again == []


def test_lagging_audio_recorded_during_a_hold_that_has_since_ended_is_not_dead_air():
    """Decoding lags: the table already says the hold ended (at audio time 20 s) while the
    silent audio of the hold (0–20 s) is only now being judged. No dead air for it; silence
    after the hold still counts (from the hold's end)."""
    rules = load_rules()
    engine = DetectionEngine(lambda: rules)
    info = CallInfo(queue="billing", agent_id="a1", on_hold=False, started_at=1_000.0, last_event_at=1_020.0)
    during_hold = frames(A, 0, 1, -30) + frames(A, 1, 19, -70, speech=False)
    assert engine.on_features(during_hold, lambda cid: info, now=1_030.0) == []
    after_hold = frames(A, 20, 16, -70, speech=False)
    alerts = engine.on_features(after_hold, lambda cid: info, now=1_036.0)
    assert [a.rule_id for a in alerts] == ["dead-air-warning"]
    assert alerts[0].evidence.audio_start_s >= 20.0
