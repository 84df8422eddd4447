"""The broker a benchmark runs on: ``--broker tansu`` (embedded, the default) or ``--broker kafka``
(an Apache Kafka 3.9 KRaft node from tests/kafka_broker.py, jars fetched by ``make kafka-libs``)."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from streamproc.broker import EmbeddedBroker

KINDS = ("tansu", "kafka")


def add_broker_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", choices=KINDS, default="tansu",
                        help="tansu: the embedded dev broker; kafka: a local Apache Kafka 3.9 node (make kafka-libs)")


@contextlib.contextmanager
def running_broker(kind: str, tmp: Path):
    """Start the broker; yields an object with .url, .bootstrap and .kind."""
    if kind == "kafka":
        from tests.kafka_broker import KafkaCluster, fetch_libs

        fetch_libs()
        with KafkaCluster(tmp / "kafka", nodes=1, heap="1g") as cluster:
            yield cluster
    else:
        with EmbeddedBroker(log_path=tmp / "broker.log") as broker:
            yield broker
