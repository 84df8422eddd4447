"""The call scenario format: strict validation with path and line, timeline resolution, packaged scenarios."""

from __future__ import annotations

import textwrap

import pytest

from streamproc.scenario import (
    End,
    Hold,
    Say,
    ScenarioError,
    estimate_duration,
    find_scenario,
    load_scenario,
    packaged_scenarios,
    parse_scenario,
    resolve,
)

GOOD = textwrap.dedent(
    """
    version: 1
    name: test call
    participants:
      agent: {id: agent-1}
      customer: {id: cust-1}
      queue: billing
    timeline:
      - say: agent
        text: {en: "Hello there", ko: "안녕하세요"}
      - say: customer
        text: {en: "I want a manager", ko: "매니저 바꿔 주세요"}
        after: 0.5
        gain_db: 6
      - hold: 10
        reason: checking
        after: 1
      - pause: 2
      - transfer: true
        to_queue: supervisors
      - say: customer
        text: {en: "Thanks", ko: "감사합니다"}
        after: -0.5
      - end: true
        reason: done
    """
)


def test_a_good_scenario_resolves_to_a_timeline_with_events_at_the_right_times():
    scenario = parse_scenario(GOOD)
    assert scenario.languages == ("en", "ko")
    timeline = resolve(scenario, "en", lambda index, line: 2.0)  # every line lasts 2 s
    assert [(line.speaker, line.text, line.start_s, line.end_s) for line in timeline.lines] == [
        ("agent", "Hello there", 0.4, 2.4),
        ("customer", "I want a manager", 2.9, 4.9),
        ("customer", "Thanks", 17.8, 19.8),  # 0.5 s before the transfer (at 18.3): overlap is allowed
    ]
    assert timeline.lines[1].gain_db == 6
    # hold after 1 s: 5.9..15.9; pause 2 s → 17.9; transfer after the default 0.4 s gap → 18.3;
    # end after its 1.5 s default gap from the last step's end (19.8) → 21.3.
    assert [(e.offset_s, e.type) for e in timeline.events] == [
        (0.0, "call_started"),
        (5.9, "hold_started"),
        (15.9, "hold_ended"),
        (18.3, "transferred"),
        (21.3, "call_ended"),
    ]
    events = {e.type: e for e in timeline.events}
    assert events["transferred"].fields == {"to_queue": "supervisors"}
    assert events["call_started"].fields["agent_id"] == "agent-1" and events["call_started"].fields["queue"] == "billing"
    assert events["call_ended"].fields == {"reason": "done"}
    assert timeline.holds == ((5.9, 15.9),)
    assert timeline.duration_s == pytest.approx(21.3)


def test_language_choice_and_fallback():
    scenario = parse_scenario(GOOD)
    assert scenario.pick_language(["ko"]) == "ko"
    assert scenario.pick_language(["fr", "en"]) == "en"
    assert scenario.pick_language(["fr"]) == "en"  # first language the scenario has
    assert resolve(scenario, "ko").lines[0].text == "안녕하세요"
    with pytest.raises(KeyError):
        resolve(scenario, "fr")


def test_without_an_end_step_the_call_ends_after_the_last_step():
    scenario = parse_scenario(GOOD.replace("  - end: true\n    reason: done\n", ""))
    timeline = resolve(scenario, "en", lambda index, line: 1.0)
    assert timeline.events[-1].type == "call_ended" and timeline.events[-1].fields == {"reason": "completed"}
    assert timeline.events[-1].offset_s == pytest.approx(timeline.lines[-1].end_s + End.model_fields["after"].default)


def test_pinned_duration_wins_and_estimates_are_used_without_tts():
    scenario = parse_scenario(GOOD.replace("gain_db: 6", "gain_db: 6\n    duration: 3.25"))
    timeline = resolve(scenario, "en")
    assert timeline.lines[1].end_s - timeline.lines[1].start_s == pytest.approx(3.25)
    assert timeline.lines[0].end_s - timeline.lines[0].start_s == pytest.approx(estimate_duration("Hello there"), abs=0.002)


@pytest.mark.parametrize(
    "mutation, line, path, words",
    [
        (("gain_db: 6", "gain_db: 6\n    volume: 3"), 15, "timeline.1.volume", "Extra inputs"),
        (("hold: 10", "hold: -10"), 15, "timeline.2.hold", "greater than 0"),
        (("say: customer\n    text: {en: \"Thanks\"", "say: caller\n    text: {en: \"Thanks\""), 21, "timeline.5.say", "'agent' or 'customer'"),
        (("  - pause: 2\n", "  - pause: 2\n    hold: 3\n"), 18, "timeline.3", "exactly one of"),
        (("  - transfer: true\n    to_queue: supervisors\n", "  - transfer: true\n"), 19, "timeline.4", "to_queue or to_agent"),
        (("queue: billing", "queue: ''"), 7, "participants.queue", "at least 1"),
        (('{en: "Thanks", ko: "감사합니다"}', '{en: "Thanks"}'), None, "", "same languages"),
        (('ko: "감사합니다"}', 'ko: 5}'), 22, "timeline.5.text.ko", "valid string"),
    ],
)
def test_invalid_scenarios_report_path_and_line(mutation, line, path, words):
    text = GOOD.replace(*mutation)
    assert text != GOOD
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, "call.yaml")
    problem = caught.value.problems[0]
    assert words in problem.message
    assert problem.path == path
    if line is not None:
        assert problem.line == line
    assert "call.yaml" in str(caught.value)


def test_end_must_be_last_and_yaml_errors_are_reported():
    with pytest.raises(ScenarioError, match="must be the last step"):
        parse_scenario(GOOD.replace("  - pause: 2\n", "  - end: true\n"))
    with pytest.raises(ScenarioError, match="line"):
        parse_scenario("name: [unclosed\n")
    with pytest.raises(ScenarioError, match="mapping"):
        parse_scenario("- just a list\n")


def test_packaged_demo_scenarios_are_valid_and_cover_the_demo_cases():
    scenarios = packaged_scenarios()
    assert {"calm_call", "long_hold", "angry_customer", "rude_agent", "repeat_caller", "legal_threat"} <= set(scenarios)
    for name, path in scenarios.items():
        scenario = load_scenario(path)
        # The demo picks the language of the installed speech model: Korean here, English elsewhere.
        assert {"en", "ko"} <= set(scenario.languages), name
        timeline = resolve(scenario, "ko")
        assert timeline.events[0].type == "call_started" and timeline.events[-1].type == "call_ended"
    long_hold = load_scenario(scenarios["long_hold"])
    assert any(isinstance(step, Hold) and step.hold >= 16 for step in long_hold.timeline)  # past the demo's critical threshold
    angry = load_scenario(scenarios["angry_customer"])
    assert any(isinstance(s, Say) and "manager" in s.text_for("en") for s in angry.timeline)
    assert find_scenario("rude_agent") == scenarios["rude_agent"]
    with pytest.raises(ScenarioError, match="packaged"):
        find_scenario("no_such_scenario")


def test_the_example_in_docs_replay_md_is_a_valid_scenario():
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "replay.md").read_text()
    example = re.search(r"```yaml\n(.*?)```", doc, re.S).group(1)
    scenario = parse_scenario(example, "docs/replay.md")
    timeline = resolve(scenario, "ko", lambda index, line: 1.0)
    assert [e.type for e in timeline.events] == ["call_started", "hold_started", "hold_ended", "transferred", "call_ended"]
