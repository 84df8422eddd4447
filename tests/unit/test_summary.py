"""Post-call summaries: the accumulator, the builder, the due rule and the schema (streamproc/summary.py)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from streamproc import metrics
from streamproc.config import Settings
from streamproc.rules import parse_rules
from streamproc.schemas import (
    Alert,
    AlertKind,
    CallSummary,
    Evidence,
    Severity,
    Speaker,
    Tick,
    TranscriptSegment,
    parse_message,
)
from streamproc.summary import SummaryProcessor, SummaryResult, SummaryState, build_summary, observe

T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=timezone.utc)
TOPICS = {"events": "calls.events", "transcripts": "calls.transcripts", "alerts": "calls.alerts", "ticks": "calls.ticks"}
RULES = parse_rules(
    """
version: 1
detection:
  phrases:
    - {id: mgr, kind: escalation, category: manager_request, speaker: customer, severity: warning,
       phrases: ["speak|talk to * manager|supervisor"]}
  dead_air:
    - {id: dead-air, after_s: 4, severity: info}
  windows:
    - {id: greeting, severity: info, within_s: 20, cue: {speaker: agent, phrases: ["thank you for calling"]}}
    - {id: no-price, severity: warning, expect: not_said, within_s: 30, cue: {speaker: agent, phrases: ["price"]}}
    - {id: disclosure, severity: warning, within_s: 600, cue: {speaker: agent, phrases: ["recorded"]}}
  risk:
    - {id: call-at-risk, severity: warning, threshold: 60, hold_full_s: 180}
"""
)


def event(kind: str, at_s: float, call_id: str = "call-0001", **fields) -> bytes:
    body = {"type": kind, "call_id": call_id, "ts": (T0 + timedelta(seconds=at_s)).isoformat(), **fields}
    if kind == "call_started":
        body.setdefault("agent_id", "agent-7")
        body.setdefault("queue", "billing")
    import json

    return json.dumps(body).encode()


def segment(speaker: str, utterance: int, start: float, end: float, text: str, *, final: bool = True,
            revision: int = 0, call_id: str = "call-0001") -> bytes:
    return TranscriptSegment(
        segment_id=TranscriptSegment.make_id(call_id, speaker, utterance, revision, final),
        call_id=call_id, speaker=Speaker(speaker), utterance=utterance, revision=revision, is_final=final,
        text=text, start_s=start, end_s=end,
    ).to_json_bytes()


def alert(rule_id: str, kind: AlertKind, occurrence: int = 0, value: float | None = None, call_id: str = "call-0001") -> bytes:
    return Alert(
        alert_id=Alert.make_id(call_id, rule_id, occurrence), call_id=call_id, kind=kind, rule_id=rule_id,
        severity=Severity.warning, occurrence=occurrence, title="t", evidence=Evidence(value=value),
        event_time=T0, detected_at=T0,
    ).to_json_bytes()


def tick(at_wall: float, call_id: str = "call-0001") -> bytes:
    return Tick(call_id=call_id, at=datetime.fromtimestamp(at_wall, timezone.utc)).to_json_bytes()


class Harness:
    """The agent's loop without Faust: a dict as the table, records with offsets, ticks at chosen wall times."""

    def __init__(self, *, quiet_s: float = 5.0, max_wait_s: float = 60.0, retention_s: float = 900.0):
        self.table: dict[str, dict] = {}
        self.summaries: list[CallSummary] = []
        self.offsets: dict[str, int] = {}
        self.processor = SummaryProcessor(
            topics=TOPICS, rules=lambda: RULES, transcripts_redacted=True,
            quiet_s=quiet_s, max_wait_s=max_wait_s, retention_s=retention_s,
        )

    def feed(self, kind: str, value: bytes, now: float, key: str = "call-0001", offset: int | None = None):
        if offset is None:
            offset = self.offsets.get(kind, 0)
            self.offsets[kind] = offset + 1
        step = self.processor.process(
            topic=TOPICS[kind], key=key.encode(), value=value, load_state=self.table.get,
            now_wall=now, partition=2, offset=offset,
        )
        if step.delete:
            self.table.pop(step.call_id, None)
        elif step.store is not None:
            self.table[step.call_id] = step.store
        if isinstance(step, SummaryResult) and step.summary is not None:
            self.summaries.append(step.summary)
        return step


SCRIPT: list[tuple[str, bytes]] = [
    ("events", event("call_started", 0)),
    ("transcripts", segment("agent", 0, 0.5, 3.0, "thank you for calling this is sam", final=False)),
    ("transcripts", segment("agent", 0, 0.5, 3.5, "thank you for calling this is sam how can i help")),
    ("transcripts", segment("customer", 0, 3.0, 9.0, "this is terrible I want to speak to a manager now")),
    ("alerts", alert("mgr", AlertKind.escalation)),
    ("events", event("hold_started", 10)),
    ("events", event("hold_ended", 40)),
    ("transcripts", segment("agent", 1, 41.0, 45.0, "thanks for waiting the price is fine")),
    ("alerts", alert("no-price", AlertKind.window_phrase)),
    ("events", event("hold_started", 50)),
    ("events", event("hold_ended", 60)),
    ("transcripts", segment("customer", 1, 61.0, 64.0, "okay that is great thank you so much")),
    ("events", event("transferred", 70, to_queue="retention")),
    ("alerts", alert("call-at-risk", AlertKind.call_at_risk, value=63.5)),
    ("events", event("call_ended", 80, reason="hangup")),
]


def run_script(script, *, start_wall: float = 1000.0) -> Harness:
    harness = Harness()
    for index, (kind, value) in enumerate(script):
        harness.feed(kind, value, start_wall + index * 0.1)
    harness.feed("ticks", tick(start_wall + 100), start_wall + 100)
    return harness


def test_golden_summary_id() -> None:
    # Consumers dedupe on this id: it must never change for a call (namespace and tag are frozen).
    assert CallSummary.make_id("call-0001") == "e2a3320c-d437-55cf-9d95-fb38c6d6eca5"
    assert CallSummary.make_id("call-0001") != Alert.make_id("call-0001", "summary", 0)


def test_scripted_call_gives_expected_figures() -> None:
    harness = run_script(SCRIPT)
    assert len(harness.summaries) == 1
    summary = harness.summaries[0]
    assert summary.summary_id == CallSummary.make_id("call-0001")
    assert (summary.queue, summary.agent_id, summary.end_reason) == ("billing", "agent-7", "hangup")
    d = summary.durations
    assert (d.total_s, d.hold_total_s, d.hold_count, d.longest_hold_s) == (80.0, 40.0, 2, 30.0)
    # speech: agent 0.5-3.5, 41-45; customer 3-9, 61-64 → union 0.5-9, 41-45, 61-64 = 8.5 + 4 + 3
    assert d.talk_s == 15.5
    speakers = summary.conversation.speakers
    assert summary.conversation.crosstalk_s == 0.5
    assert speakers["agent"].talk_s == 7.0 and speakers["customer"].talk_s == 9.0
    assert speakers["customer"].interruptions == 1 and speakers["agent"].interruptions == 0
    assert speakers["agent"].talk_ratio == round(6.5 / 15.5, 3)
    # silences outside holds, ≥ 4 s: 0-0.5 no, 9-10 no, 40-41 no, 45-50 (5 s) yes, 60-61 no, 64-80 (16 s) yes
    assert d.dead_air_s == 21.0
    assert summary.sentiment["customer"].start < 0 < summary.sentiment["customer"].end
    assert set(summary.alerts) == {"mgr", "no-price", "call-at-risk"}
    assert summary.alerts["mgr"].alert_ids == [Alert.make_id("call-0001", "mgr", 0)]
    assert summary.escalation.transferred and summary.escalation.to_queue == "retention"
    assert summary.escalation.escalation_alerts == 1
    checklist = {item.rule_id: item.result for item in summary.checklist}
    assert checklist == {"greeting": "passed", "no-price": "failed", "disclosure": "not_judged"}
    assert summary.peak_risk_score == 63.5  # the alert's score beats the recomputed one
    ref = summary.transcript
    assert (ref.topic, ref.partition, ref.first_offset, ref.last_offset, ref.final_segments) == (
        "calls.transcripts", 2, 1, 4, 4,
    )
    assert ref.redacted and summary.transcription_complete
    # no text anywhere in the record: nothing said on the call can leak through it
    assert "manager" not in summary.to_json_bytes().decode() and "sam" not in summary.to_json_bytes().decode()


def test_summary_round_trips_through_the_parser() -> None:
    summary = run_script(SCRIPT).summaries[0]
    assert parse_message(CallSummary, summary.to_json_bytes()) == summary


def test_not_due_before_call_ended_nor_while_quiet_time_runs() -> None:
    harness = Harness(quiet_s=5.0)
    for index, (kind, value) in enumerate(SCRIPT[:-1]):
        harness.feed(kind, value, 1000.0 + index)
    harness.feed("ticks", tick(5000.0), 5000.0)
    assert harness.summaries == []  # no call_ended: never due
    harness.feed("events", SCRIPT[-1][1], 5001.0)
    harness.feed("ticks", tick(5003.0), 5003.0)
    assert harness.summaries == []  # ended, but transcripts may still come
    harness.feed("ticks", tick(5006.5), 5006.5)
    assert len(harness.summaries) == 1


def test_transcripts_after_call_ended_are_waited_for() -> None:
    """call_ended first, the last final later (decoding lags): the summary includes it."""
    script = SCRIPT[:-1]
    harness = Harness(quiet_s=5.0)
    harness.feed("events", SCRIPT[-1][1], 999.0)
    harness.feed("transcripts", segment("customer", 2, 70.0, 75.0, "bye now", final=False), 1000.0)
    harness.feed("ticks", tick(1020.0), 1020.0)
    assert harness.summaries == []  # an utterance is open: not drained yet
    for index, (kind, value) in enumerate(script):
        harness.feed(kind, value, 1021.0 + index * 0.1)
    harness.feed("transcripts", segment("customer", 2, 70.0, 75.0, "bye now then"), 1030.0)
    harness.feed("ticks", tick(1034.0), 1034.0)
    assert harness.summaries == []
    harness.feed("ticks", tick(1035.0), 1035.0)
    assert len(harness.summaries) == 1 and harness.summaries[0].conversation.utterances == 5
    assert harness.summaries[0].transcription_complete


def test_bounded_wait_emits_with_open_utterance() -> None:
    harness = Harness(quiet_s=5.0, max_wait_s=60.0)
    harness.feed("events", event("call_started", 0), 1000.0)
    harness.feed("transcripts", segment("agent", 0, 0.0, 2.0, "hello there", final=False), 1001.0)
    harness.feed("events", event("call_ended", 30), 1002.0)
    harness.feed("ticks", tick(1061.0), 1061.0)
    assert harness.summaries == []
    harness.feed("ticks", tick(1062.0), 1062.0)
    assert len(harness.summaries) == 1 and not harness.summaries[0].transcription_complete


def test_a_call_that_never_ends_is_dropped_after_six_hours_without_input() -> None:
    from streamproc.summary import ABANDONED_AFTER_S

    harness = Harness()
    harness.feed("events", event("call_started", 0), 1000.0)
    assert SummaryState.from_stored(harness.table["call-0001"]).next_check(5, 60) == 1000.0 + ABANDONED_AFTER_S
    harness.feed("ticks", tick(1000.0 + ABANDONED_AFTER_S - 1), 1000.0 + ABANDONED_AFTER_S - 1)
    assert "call-0001" in harness.table
    harness.feed("ticks", tick(1000.0 + ABANDONED_AFTER_S), 1000.0 + ABANDONED_AFTER_S)
    assert "call-0001" not in harness.table and harness.summaries == []


def test_call_without_audio() -> None:
    harness = Harness(quiet_s=5.0)
    harness.feed("events", event("call_started", 0), 1000.0)
    harness.feed("events", event("call_ended", 42), 1001.0)
    harness.feed("ticks", tick(1006.0), 1006.0)
    (summary,) = harness.summaries
    assert summary.durations.total_s == 42.0 and summary.durations.talk_s == 0.0
    assert summary.durations.dead_air_s == 0.0  # nothing is known about silence without a transcript
    assert summary.transcript.first_offset is None and summary.conversation.utterances == 0
    assert summary.sentiment["customer"].start is None


def test_redelivery_after_emission_changes_nothing_and_retention_purges() -> None:
    harness = run_script(SCRIPT)
    first = harness.summaries[0]
    for kind, value in SCRIPT:  # the whole call redelivered after its summary went out
        harness.feed(kind, value, 1200.0)
    harness.feed("ticks", tick(1300.0), 1300.0)
    assert harness.summaries == [first]
    harness.feed("ticks", tick(1000.0 + 900.0 + 2), 1000.0 + 900.0 + 2)
    assert "call-0001" not in harness.table


def test_redelivered_inputs_before_emission_give_the_same_summary() -> None:
    """A crash before the table write was committed: some records are read twice (new offsets too)."""
    once = run_script(SCRIPT).summaries[0]
    harness = Harness()
    for index, (kind, value) in enumerate(SCRIPT[:9]):
        harness.feed(kind, value, 1000.0 + index * 0.1, offset=index)
    for index, (kind, value) in enumerate(SCRIPT):
        harness.feed(kind, value, 1010.0 + index * 0.1, offset=index)
    harness.feed("ticks", tick(1100.0), 1100.0)
    assert harness.summaries[0] == once.model_copy(update={"transcript": harness.summaries[0].transcript})
    assert harness.summaries[0].summary_id == once.summary_id


def test_bad_records_are_left_to_their_owning_agent() -> None:
    harness = Harness()
    step = harness.feed("events", b"{not json", 1000.0)
    assert step.dead_letters == [] and step.stage.startswith("rejected:")
    assert harness.table == {}


def test_agent_label_cap() -> None:
    with pytest.raises(ValueError):
        Settings(summary_metric_agents=",".join(f"a{i}" for i in range(51)))
    assert Settings(summary_metric_agents="a1, a2").metric_agents == frozenset({"a1", "a2"})
    summary = run_script(SCRIPT).summaries[0]
    before = metrics.AGENT_HANDLE_TIME.labels("other")._sum.get()
    observe(summary, frozenset({"billing"}), frozenset({"agent-1"}))
    assert metrics.AGENT_HANDLE_TIME.labels("other")._sum.get() == before + 80.0
    assert metrics.CALL_ESCALATIONS.labels("billing")._value.get() >= 1


# ---------------------------------------------------------------------- properties

speech = st.lists(
    st.tuples(
        st.sampled_from(["agent", "customer"]),
        st.floats(0, 300, allow_nan=False),
        st.floats(0.05, 30, allow_nan=False),
        st.sampled_from(["yes that is fine", "this is awful and I hate it", "thank you so much", "ok"]),
    ),
    max_size=25,
)
holds = st.lists(st.tuples(st.floats(0, 300, allow_nan=False), st.floats(0, 120, allow_nan=False)), max_size=4)


def _records(spans, hold_spans, total) -> list[tuple[str, bytes]]:
    records = [("events", event("call_started", 0)), ("events", event("call_ended", total))]
    counters: dict[str, int] = {}
    for speaker, start, length, text in spans:
        number = counters[speaker] = counters.get(speaker, -1) + 1
        records.append(("transcripts", segment(speaker, number, start, start + length, text)))
    for number, (start, length) in enumerate(sorted(hold_spans)):
        records.append(("events", event("hold_started", start, event_id=f"h{number}s")))
        records.append(("events", event("hold_ended", start + length, event_id=f"h{number}e")))
    records.append(("alerts", alert("mgr", AlertKind.escalation)))
    return records


@hsettings(max_examples=60, deadline=None)
@given(spans=speech, hold_spans=holds, total=st.floats(1, 400, allow_nan=False), seed=st.integers(0, 2**32 - 1))
def test_properties(spans, hold_spans, total, seed) -> None:
    records = _records(spans, hold_spans, total)
    first = run_script(records)
    shuffled = list(records)
    random.Random(seed).shuffle(shuffled)
    second = run_script(shuffled)
    a, b = first.summaries[0], second.summaries[0]
    # order-independent, apart from which offset each record got
    assert a.model_copy(update={"transcript": None}) == b.model_copy(update={"transcript": None})
    ratios = sum(s.talk_ratio for s in a.conversation.speakers.values()) + a.conversation.crosstalk_ratio
    assert ratios <= 1.0 + 1e-2
    d = a.durations
    assert min(d.talk_s, d.hold_total_s, d.longest_hold_s, d.dead_air_s, d.total_s) >= 0
    rounding = 0.002  # every figure is rounded to milliseconds on its own
    assert d.longest_hold_s <= d.hold_total_s + rounding
    assert a.conversation.crosstalk_s <= min(s.talk_s for s in a.conversation.speakers.values()) + rounding
    assert d.talk_s <= sum(s.talk_s for s in a.conversation.speakers.values()) + rounding


def test_state_survives_json() -> None:
    harness = Harness()
    for index, (kind, value) in enumerate(SCRIPT):
        harness.feed(kind, value, 1000.0 + index)
    import json

    stored = json.loads(json.dumps(harness.table["call-0001"]))
    assert build_summary(SummaryState.from_stored(stored), harness.processor.config()) == build_summary(
        SummaryState.from_stored(harness.table["call-0001"]), harness.processor.config()
    )


def test_partials_of_an_open_utterance_are_not_rewritten_to_the_table_but_still_count_as_input() -> None:
    harness = Harness(quiet_s=5.0)
    harness.feed("events", event("call_started", 0), 1000.0)
    harness.feed("events", event("call_ended", 30), 1000.1)
    first = harness.feed("transcripts", segment("agent", 0, 0.0, 1.0, "hello", final=False), 1000.2)
    assert first.store is not None  # a new open utterance changes the state
    stored = dict(harness.table["call-0001"])
    for revision in range(1, 5):  # the same utterance growing, within a second: nothing new to store
        step = harness.feed("transcripts", segment("agent", 0, 0.0, 1.0, "hello there", final=False, revision=revision),
                            1000.3 + revision * 0.1)
        assert step.store is None
    assert harness.table["call-0001"] == stored
    later = harness.feed("transcripts", segment("agent", 0, 0.0, 1.0, "hello there", final=False, revision=9), 1001.5)
    assert later.store is not None, "written at least once a second"
    harness.feed("transcripts", segment("agent", 0, 0.0, 2.0, "hello there you"), 1002.0)
    harness.feed("ticks", tick(1006.9), 1006.9)
    assert harness.summaries == []  # quiet counts from the last input (1002.0), not from the last write
    # A restart loses what was only in memory: the table alone still makes the same summary.
    restarted = Harness(quiet_s=5.0)
    restarted.table = {k: dict(v) for k, v in harness.table.items()}
    restarted.feed("ticks", tick(1007.1), 1007.1)
    harness.feed("ticks", tick(1007.1), 1007.1)
    assert len(restarted.summaries) == 1 and restarted.summaries == harness.summaries
