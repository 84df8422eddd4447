"""Detection rules in the rules file, and hot reload: a good change takes effect, a bad one is rejected."""

from __future__ import annotations

import os
import time

import pytest

from streamproc import metrics
from streamproc.detect.engine import DetectionEngine
from streamproc.rules import RulesError, RulesWatcher, load_rules, parse_rules
from streamproc.schemas import Speaker, TranscriptSegment

V1 = """
version: 1
hold:
  defaults:
    thresholds: [{id: hold-warning, after_s: 60, severity: warning}]
detection:
  phrases:
    - {id: mgr, kind: escalation, speaker: customer, severity: warning, phrases: ["speak to * manager"]}
"""
V2 = V1.replace('phrases: ["speak to * manager"]', 'phrases: ["speak to * manager", "매니저 바꿔"]')
BAD = V1.replace("severity: warning}\n", "severity: loud}\n", 1).replace("speaker: customer, severity: warning", "speaker: customer, severity: loud")


def counter(result: str) -> float:
    return metrics.RULES_RELOADS.labels(result)._value.get()


def rewrite(path, text):
    path.write_text(text)
    # make sure the mtime moves even on coarse filesystems
    stamp = time.time() + 1 + counter("ok") + counter("rejected")
    os.utime(path, (stamp, stamp))


def segment(text: str, utterance: int) -> TranscriptSegment:
    return TranscriptSegment(segment_id=f"c/{utterance}", call_id="c", speaker=Speaker.customer, utterance=utterance,
                             is_final=True, text=text)


def test_reload_good_change_then_reject_bad_change(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(V1)
    watcher = RulesWatcher(path)
    engine = DetectionEngine(watcher.current)
    assert watcher.check() is False  # unchanged
    assert engine.on_transcript(segment("매니저를 바꿔 주세요", 0), None, 1).alerts == []

    ok_before = counter("ok")
    rewrite(path, V2)
    assert watcher.check() is True
    assert counter("ok") == ok_before + 1
    assert [a.rule_id for a in engine.on_transcript(segment("매니저를 바꿔 주세요", 1), None, 2).alerts] == ["mgr"]

    rejected_before = counter("rejected")
    good = watcher.current()
    rewrite(path, BAD)
    assert watcher.check() is False
    assert watcher.current() is good, "a bad file must leave the old rules in force"
    assert counter("rejected") == rejected_before + 1
    assert "severity" in str(watcher.last_error) and str(path) in str(watcher.last_error) and "line" in str(watcher.last_error)
    assert watcher.check() is False and counter("rejected") == rejected_before + 1  # reported once

    path.unlink()
    assert watcher.check() is False and watcher.current() is good  # a deleted file keeps the rules too


def test_detection_rules_validation_errors_have_paths_and_lines():
    text = V1.replace('phrases: ["speak to * manager"]', 'phrases: ["speak to * manager", "* boss"]')
    with pytest.raises(RulesError) as info:
        parse_rules(text, "r.yaml")
    message = str(info.value)
    assert "detection.phrases.0.phrases.1" in message and "line 8" in message and "cannot start" in message
    with pytest.raises(RulesError, match="used twice"):
        parse_rules(V1 + "  dead_air:\n    - {id: mgr, after_s: 5, severity: info}\n")
    with pytest.raises(RulesError, match="unknown field"):
        parse_rules(V1.replace("speaker: customer", "speakr: customer"))
    with pytest.raises(RulesError, match="also hold rule ids"):
        parse_rules(V1 + "  dead_air:\n    - {id: hold-warning, after_s: 5, severity: info}\n")
    with pytest.raises(RulesError, match="speaker"):
        parse_rules(V1.replace("speaker: customer", "speaker: supervisor"))


def test_packaged_default_rules_have_every_detector():
    detection = load_rules().detection
    kinds = {r.kind for r in detection.phrases}
    assert kinds == {"rude_phrase", "customer_abuse", "escalation"}
    assert detection.sentiment and detection.raised_voice and detection.dead_air and detection.crosstalk
    assert {r.category for r in detection.phrases} >= {"manager_request", "churn", "legal_threat", "repeat_contact"}
