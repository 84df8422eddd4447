"""Pin the embedded broker's behaviour that shapes our design (see docs/broker.md).

If a future Tansu fixes ListOffsets, the first test fails: then the fetch-based
workaround (streamproc.kafka_admin.true_end_offsets, used by agents/compat.py) can go.
"""

from __future__ import annotations

import asyncio

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from streamproc.kafka_admin import classify_broker, detect_broker, true_end_offsets

pytestmark = pytest.mark.broker


def _batch_of_ten(broker, topic):
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    admin.create_topics([NewTopic(topic, 1, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=200, batch_size=1 << 20)
    for i in range(10):
        producer.send(topic, key=b"k", value=b"%d" % i, partition=0)
    producer.flush()
    producer.close()
    return TopicPartition(topic, 0)


def test_list_offsets_latest_returns_last_batch_base_plus_one(broker):
    tp = _batch_of_ten(broker, "quirk-list-offsets")
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap)
    try:
        assert consumer.end_offsets([tp])[tp] == 1, "Tansu reports base offset of the last batch + 1, not 10"
        consumer.assign([tp])
        consumer.seek_to_beginning()
        records = []
        for _ in range(20):
            for batch in consumer.poll(200).values():
                records += batch
            if len(records) >= 10:
                break
        assert [r.offset for r in records] == list(range(10))
        assert consumer.highwater(tp) == 10, "the fetch response carries the true high watermark"
    finally:
        consumer.close()


def test_true_end_offsets_uses_the_fetch_high_watermark(broker):
    tp = _batch_of_ten(broker, "quirk-true-end")
    empty = TopicPartition("quirk-true-end-empty", 0)
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    admin.create_topics([NewTopic(empty.topic, 1, 1)])
    admin.close()
    assert asyncio.run(true_end_offsets(broker.bootstrap, [tp, empty])) == {tp: 10, empty: 0}


def test_metadata_request_auto_creates_topics_with_four_partitions(broker):
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    try:
        # The producer asks for metadata naming the topic; the broker creates it on the spot.
        assert producer.partitions_for("quirk-auto-created") == {0, 1, 2, 3}
    finally:
        producer.close()


# ----------------------------------------------------------------------------- Apache Kafka
# The workarounds above are applied on every broker. These show they are harmless on Apache
# Kafka, and that streamproc can tell the two apart (detect, don't guess).


@pytest.mark.apache_only
def test_on_apache_kafka_list_offsets_is_right_and_the_fetch_workaround_agrees(broker):
    tp = _batch_of_ten(broker, "kquirk-list-offsets")
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap)
    try:
        assert consumer.end_offsets([tp])[tp] == 10, "Apache Kafka reports the true end offset"
    finally:
        consumer.close()
    assert asyncio.run(true_end_offsets(broker.bootstrap, [tp])) == {tp: 10}, "the fetch-highwater path gives the same number"


@pytest.mark.both_brokers
def test_detect_broker_reports_the_broker_it_runs_on(broker):
    assert detect_broker(bootstrap=broker.bootstrap) == broker.kind


def test_classify_broker_from_reported_facts():
    assert classify_broker("tansu_cluster", []) == "tansu"
    assert classify_broker("SlPAe14wS-GVxetkmG_2XQ", ["metadata.version"]) == "kafka"
    assert classify_broker("SlPAe14wS-GVxetkmG_2XQ", []) == "unknown"


def test_exactly_once_is_refused_on_tansu_with_a_clear_message():
    from streamproc.config import Settings
    from streamproc.kafka_admin import check_processing_guarantee

    settings = Settings(processing_guarantee="exactly_once", broker="kafka://127.0.0.1:1")
    with pytest.raises(RuntimeError, match="Tansu broker .* rejects"):
        check_processing_guarantee(settings, "tansu")
    check_processing_guarantee(settings, "kafka")
    check_processing_guarantee(Settings(), "tansu")


def test_exactly_once_worker_on_tansu_exits_at_once_with_the_reason(broker, tmp_path):
    import os
    import subprocess
    import sys

    from streamproc.broker import free_port

    env = dict(os.environ, STREAMPROC_BROKER=broker.url, STREAMPROC_PROCESSING_GUARANTEE="exactly_once",
               STREAMPROC_WEB_PORT=str(free_port()), STREAMPROC_DATA_DIR=str(tmp_path / "data"),
               STREAMPROC_AUDIO_ENABLED="false", STREAMPROC_TOPIC_PREFIX="eos.")
    result = subprocess.run([sys.executable, "-m", "streamproc", "worker"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "exactly_once needs Kafka transactions" in result.stderr.replace("\n", " "), result.stderr[-2000:]
