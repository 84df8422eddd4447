"""Post-call summaries through the real broker and a real worker: one per call, the expected figures,
the same id and no duplicate after a SIGKILL mid-call (the call-summaries table's changelog)."""

from __future__ import annotations

import json
import time

import pytest

from streamproc.rules import packaged_rules_text
from streamproc.scenario import find_scenario, load_scenario, resolve
from streamproc.schemas import CallSummary, Speaker, TranscriptSegment, parse_message
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TopicReader, event, http_get, reader_isolation

pytestmark = [pytest.mark.broker, pytest.mark.slow]

SUMMARY_SETTINGS = {"audio_enabled": "false", "summary_quiet_s": "3", "summary_max_wait_s": "60"}


def scenario_records(name: str, call_id: str, t0: float) -> list[tuple[str, bytes]]:
    """A packaged scenario as the call's events and final transcripts (topic kind, value), in time order."""
    timeline = resolve(load_scenario(find_scenario(name)), "en")
    records: list[tuple[float, int, str, bytes]] = []
    for timed in timeline.events:
        records.append((timed.offset_s, 0, "events", event(call_id, timed.type, ts=t0 + timed.offset_s, **timed.fields)))
    numbers: dict[str, int] = {}
    for line in timeline.lines:
        number = numbers[line.speaker] = numbers.get(line.speaker, -1) + 1
        segment = TranscriptSegment(
            segment_id=TranscriptSegment.make_id(call_id, line.speaker, number, 0, True), call_id=call_id,
            speaker=Speaker(line.speaker), utterance=number, is_final=True, text=line.text,
            start_s=line.start_s, end_s=line.end_s, source="script",
        )
        records.append((line.end_s, 1, "transcripts", segment.to_json_bytes()))
    return [(kind, value) for _, _, kind, value in sorted(records, key=lambda r: (r[0], r[1]))]


def of_call(values: list[dict], call_id: str) -> list[dict]:
    return [v for v in values if v.get("call_id") == call_id]


def send_all(producer, worker, call_id: str, records) -> None:
    for kind, value in records:
        producer.send(worker.topic(kind), key=call_id.encode(), value=value)
    producer.flush()


@pytest.mark.both_brokers
def test_scripted_call_yields_exactly_one_summary_with_the_expected_figures(worker_factory, reader, producer):
    worker = worker_factory(packaged_rules_text("default_rules.yaml"), summary_metric_agents="agent-cho", **SUMMARY_SETTINGS)
    summaries, alerts = reader(worker.topic("summaries")), reader(worker.topic("alerts"))
    t0 = time.time() - 60
    send_all(producer, worker, "sum-1", scenario_records("angry_customer", "sum-1", t0))
    values = summaries.wait_for(lambda v: of_call(v, "sum-1"), timeout_s=60)
    assert of_call(values, "sum-1"), worker.log_tail()
    # A second call after it: once its summary is out, any duplicate of the first would be too.
    send_all(producer, worker, "sum-2", scenario_records("long_hold", "sum-2", t0))
    values = summaries.wait_for(lambda v: of_call(v, "sum-2"), timeout_s=60)
    assert len(of_call(values, "sum-1")) == 1 and len(of_call(values, "sum-2")) == 1

    first = parse_message(CallSummary, json.dumps(of_call(values, "sum-1")[0]))
    timeline = resolve(load_scenario(find_scenario("angry_customer")), "en")
    assert first.summary_id == CallSummary.make_id("sum-1")
    assert first.durations.total_s == pytest.approx(timeline.duration_s, abs=0.01)
    assert first.conversation.utterances == len(timeline.lines)
    assert first.durations.talk_s == pytest.approx(sum(line.end_s - line.start_s for line in timeline.lines), abs=0.01)
    assert first.escalation.transferred and first.escalation.to_queue == "supervisors"
    assert (first.queue, first.agent_id) == ("billing", "agent-cho")
    assert first.sentiment["customer"].start < 0  # "charged me twice … nobody fixed it" / "ridiculous … angry"
    call_alerts = of_call(alerts.wait_for(lambda v: len(of_call(v, "sum-1")) >= first.alert_count, timeout_s=10), "sum-1")
    assert {a["alert_id"] for a in call_alerts} == {i for r in first.alerts.values() for i in r.alert_ids}
    assert any(r.kind.value == "escalation" for r in first.alerts.values()), first.alerts  # the manager request
    assert first.transcript.first_offset is not None and first.transcript.final_segments == len(timeline.lines)
    assert first.transcription_complete

    second = parse_message(CallSummary, json.dumps(of_call(values, "sum-2")[0]))
    assert (second.durations.hold_count, second.durations.hold_total_s, second.durations.longest_hold_s) == (1, 20.0, 20.0)
    assert not second.escalation.transferred

    # Aggregates on /metrics: queues not named in the rules are "other"; only allow-listed agents keep their id.
    status, body = http_get(f"{worker.base_url}/metrics")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode()) for sample in family.samples
    }
    assert samples[("streamproc_call_handle_seconds_count", (("queue", "other"),))] == 2
    assert samples[("streamproc_call_handle_seconds_sum", (("queue", "other"),))] == pytest.approx(
        first.durations.total_s + second.durations.total_s, abs=0.01
    )
    assert samples[("streamproc_call_hold_total_seconds_sum", (("queue", "other"),))] == pytest.approx(20.0)
    assert samples[("streamproc_call_transfers_total", (("queue", "other"),))] == 1
    assert samples[("streamproc_agent_handle_seconds_count", (("agent", "agent-cho"),))] == 1
    assert samples[("streamproc_agent_handle_seconds_count", (("agent", "other"),))] == 1  # agent-ben is not listed
    assert not any("agent-ben" in str(key) or "sum-1" in str(key) for key in samples), "no unlisted agent id, no call id"


def _changelog_has(bootstrap: str, topic: str, call_id: str, finals: int, timeout_s: float = 30.0) -> bool:
    """The call's state, with ``finals`` final utterances folded, is on the table's changelog (observable state)."""
    changelog = TopicReader(bootstrap, topic, reader_isolation())
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            changelog.poll(200)
            for record in changelog.records:
                if record.value and json.loads(record.key) == call_id and len(json.loads(record.value)["finals"]) >= finals:
                    return True
        return False
    finally:
        changelog.close()


def _wait_committed(bootstrap: str, group: str, topics: dict[str, int], timeout_s: float = 90.0) -> bool:
    """The group committed at least ``count`` records of each topic (summed over partitions)."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            offsets = admin.list_group_offsets(group).get(group, {})
            done = {topic: sum(m.offset for tp, m in offsets.items() if tp.topic == topic and m.offset > 0) for topic in topics}
            if all(done[topic] >= count for topic, count in topics.items()):
                return True
            time.sleep(0.2)  # polling the broker's state, not waiting on a clock
        return False
    finally:
        admin.close()


@pytest.mark.both_brokers
def test_restart_mid_call_gives_the_same_summary_without_duplicates(worker_factory, reader, producer, broker):
    worker = worker_factory(packaged_rules_text("default_rules.yaml"), **SUMMARY_SETTINGS)
    summaries, alerts = reader(worker.topic("summaries")), reader(worker.topic("alerts"))
    records = scenario_records("angry_customer", "rst-1", time.time() - 60)
    ended = next(i for i, (kind, value) in enumerate(records) if b'"call_ended"' in value)
    before, after = records[: ended - 3], records[ended - 3 :]
    finals_before = sum(1 for kind, _ in before if kind == "transcripts")
    send_all(producer, worker, "rst-1", before)
    changelog = f"{worker.settings.app_id}-call-summaries-changelog"
    assert _changelog_has(broker.bootstrap, changelog, "rst-1", finals_before), worker.log_tail()
    # Offsets committed: the restarted worker does not read these records again, so a complete summary
    # can only come from the call-summaries table recovered from its changelog.
    sent = {worker.topic(kind): sum(1 for k, _ in before if k == kind) for kind in ("events", "transcripts")}
    assert _wait_committed(broker.bootstrap, worker.settings.app_id, sent), worker.log_tail()

    worker.kill()  # SIGKILL mid-call: no clean shutdown, no final commit
    worker.start()
    send_all(producer, worker, "rst-1", after)
    values = summaries.wait_for(lambda v: of_call(v, "rst-1"), timeout_s=60)
    assert of_call(values, "rst-1"), worker.log_tail()
    send_all(producer, worker, "rst-2", scenario_records("calm_call", "rst-2", time.time() - 60))
    values = summaries.wait_for(lambda v: of_call(v, "rst-2"), timeout_s=60)
    copies = of_call(values, "rst-1")
    assert len(copies) == 1, copies
    summary = parse_message(CallSummary, json.dumps(copies[0]))
    timeline = resolve(load_scenario(find_scenario("angry_customer")), "en")
    assert summary.summary_id == CallSummary.make_id("rst-1")
    # complete: what was folded before the kill came back from the changelog
    assert summary.conversation.utterances == len(timeline.lines)
    assert summary.durations.total_s == pytest.approx(timeline.duration_s, abs=0.01)
    assert summary.escalation.transferred
    call_alerts = of_call(alerts.wait_for(lambda v: len(of_call(v, "rst-1")) >= summary.alert_count, timeout_s=10), "rst-1")
    assert {a["alert_id"] for a in call_alerts} == {i for r in summary.alerts.values() for i in r.alert_ids}
