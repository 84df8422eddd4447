"""The rules file: the packaged files are valid; bad files are clear errors with path and line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from streamproc.rules import DEMO_RULES_RESOURCE, RulesError, load_rules, packaged_rules_path, parse_rules


def test_packaged_rules_are_valid():
    defaults = load_rules()
    assert [t.after_s for t in defaults.hold.defaults.thresholds] == [60, 180]
    assert load_rules(packaged_rules_path(DEMO_RULES_RESOURCE)).hold.defaults.thresholds


def test_queue_override_replaces_only_the_lists_it_names():
    rules = load_rules().hold
    vip = rules.for_queue("vip")
    assert [t.id for t in vip.thresholds] == ["vip-hold-warning", "vip-hold-critical"]
    assert vip.cumulative == rules.defaults.cumulative
    assert rules.for_queue("unknown-queue") == rules.defaults


def test_errors_name_the_field_and_line():
    text = "version: 1\nhold:\n  defaults:\n    thresholds:\n      - {id: a, after_sec: 5, severity: warning}\n"
    with pytest.raises(RulesError) as info:
        parse_rules(text, "bad.yaml")
    message = str(info.value)
    assert "bad.yaml" in message and "line 5" in message and "after_sec" in message and "after_s" in message


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("version: 2\n", "unsupported rules version"),
        ("hold: [1, 2]\n", "hold"),
        ("hold:\n  defaults:\n    thresholds:\n      - {id: a, after_s: 0, severity: warning}\n", "greater than 0"),
        ("hold:\n  defaults:\n    thresholds:\n      - {id: a, after_s: 5, severity: loud}\n", "severity"),
        ("hold:\n  defaults:\n    thresholds:\n      - {id: a, after_s: 5, severity: info}\n      - {id: a, after_s: 9, severity: info}\n", "used twice"),
        ("hold:\n  defaults: {\n", "not valid YAML"),
        ("- just a list\n", "mapping"),
    ],
)
def test_bad_files(text, fragment):
    with pytest.raises(RulesError) as info:
        parse_rules(text, "x.yaml")
    assert fragment in str(info.value)


def test_cli_rules_check(tmp_path):
    good = packaged_rules_path(DEMO_RULES_RESOURCE)
    result = subprocess.run([sys.executable, "-m", "streamproc", "rules", "check", str(good)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("hold:\n  defaults:\n    thresholds:\n      - {id: a, after_s: -1, severity: warning}\n")
    result = subprocess.run([sys.executable, "-m", "streamproc", "rules", "check", str(bad)], capture_output=True, text=True)
    assert result.returncode == 1
    assert "line 4" in result.stderr and "after_s" in result.stderr
