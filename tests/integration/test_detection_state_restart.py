"""Detection state across a SIGKILL: the same alerts, the same ids, none missed, none extra.

One scripted call (tests/detection_state_script.py) whose part-2 alerts depend on what part 1
left in the detection engine: a cooldown, a sentiment window, said-within windows, risk-score
levels. It runs twice on the real broker with real worker processes: once on a worker that is
left alone, once on a worker that is SIGKILLed between the parts (after its offsets are
committed) and replaced by a new process, which must take the call's state over from the
detection-state table. Compared: the alerts as a multiset of (alert id, rule, occurrence).
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.detection_state_script import CRASH_AFTER, LINES, RULES_YAML, segment_bytes
from tests.integration.reliability_support import write_figures

pytestmark = [pytest.mark.broker, pytest.mark.slow]

CALL = "state-call-1"


def committed_total(bootstrap: str, group: str, topic: str) -> int:
    """Records of ``topic`` the group has committed (an offset fetch; does not join the group)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        return sum(consumer.committed(TopicPartition(topic, p)) or 0 for p in partitions)
    finally:
        consumer.close(autocommit=False)


def wait_committed(bootstrap: str, group: str, topic: str, count: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if committed_total(bootstrap, group, topic) >= count:
            return
        time.sleep(0.5)
    raise AssertionError(f"{group} did not commit {count} records of {topic} within {timeout_s} s")


def send_lines(producer, topic: str, utterances) -> None:
    for utterance in utterances:
        producer.send(topic, key=CALL.encode(), value=segment_bytes(CALL, utterance))
    producer.flush()


def summary(alerts: list[dict]) -> Counter:
    return Counter((a["alert_id"], a["rule_id"], a["occurrence"]) for a in alerts if a["call_id"] == CALL)


def test_detection_state_survives_sigkill_same_alerts_as_without_crash(worker_factory, reader, producer, broker):
    # Without a crash.
    calm = worker_factory(RULES_YAML, dashboard_enabled="false", audio_enabled="false")
    transcripts = calm.topic("transcripts")
    send_lines(producer, transcripts, range(len(LINES)))
    wait_committed(broker.bootstrap, calm.settings.app_id, transcripts, len(LINES))
    # Committed offsets: the alerts those records caused are published (Faust flushes before it commits).
    expected = summary(reader(calm.topic("alerts")).wait_for(lambda v: sum(summary(v).values()) >= 6, timeout_s=15))
    calm.stop(timeout_s=15)
    kinds = Counter(rule for _, rule, _ in expected)
    assert kinds == {"manager-request": 1, "customer-negative-sentiment": 1, "apology-after-complaint": 2,
                     "call-at-risk": 2}, expected

    # The same call, SIGKILL between the parts.
    worker = worker_factory(RULES_YAML, dashboard_enabled="false", audio_enabled="false")
    transcripts = worker.topic("transcripts")
    send_lines(producer, transcripts, range(CRASH_AFTER))
    # Offsets committed = the state those records left is in the changelog (Faust flushes before it commits).
    wait_committed(broker.bootstrap, worker.settings.app_id, transcripts, CRASH_AFTER)
    worker.kill()
    killed_at = time.time()
    worker.start()
    ready_s = time.time() - killed_at
    send_lines(producer, transcripts, range(CRASH_AFTER, len(LINES)))
    wait_committed(broker.bootstrap, worker.settings.app_id, transcripts, len(LINES))
    alerts = reader(worker.topic("alerts"))
    got = summary(alerts.wait_for(lambda v: summary(v) == expected, timeout_s=15))
    print(f"\nnew worker ready {ready_s:.1f} s after SIGKILL; alerts without crash {sum(expected.values())}, "
          f"with crash {sum(got.values())}")
    missing, extra = expected - got, got - expected
    write_figures("faults", "detection_state_sigkill", {
        "alerts_without_crash": sum(expected.values()), "alerts_with_crash": sum(got.values()),
        "missing": sum(missing.values()), "extra": sum(extra.values()), "new_worker_ready_s": round(ready_s, 1),
        "command": ".venv/bin/pytest tests/integration/test_detection_state_restart.py -s",
    })
    assert not missing and not extra, f"missing {dict(missing)}; extra {dict(extra)}"
    assert "stored detection state unreadable" not in worker.log_path.read_text(errors="replace")
