"""Kafka housekeeping: topic creation (kafka-python) and end offsets you can trust (aiokafka).

Topics are created up front with one partition count for all of them, because a call's
events, audio, transcripts and alerts must land on the same partition number (keyed by
call id) so that one worker owns the call end to end, and because Tansu auto-creates a
topic with 4 partitions on the first metadata request naming it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Iterable, Mapping

from .config import TOPIC_NAMES, Settings

log = logging.getLogger(__name__)


def _admin(bootstrap: list[str] | str, settings: Settings | None = None):
    from kafka import KafkaAdminClient

    return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="streamproc-admin", **client_security(settings))


def client_security(settings: Settings | None) -> dict:
    """kafka-python keyword arguments for TLS/SASL, from the worker settings."""
    if settings is None or settings.security_protocol == "PLAINTEXT":
        return {}
    options: dict = {"security_protocol": settings.security_protocol}
    if settings.sasl_mechanism:
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = (
            settings.sasl_password.get_secret_value() if settings.sasl_password else None
        )
    if settings.ssl_cafile:
        options["ssl_cafile"] = str(settings.ssl_cafile)
    return options


def topic_names(settings: Settings) -> list[str]:
    return [settings.topic(name) for name in TOPIC_NAMES]


def ensure_topics(settings: Settings, extra: Iterable[str] = (), timeout_s: float = 20.0) -> dict[str, int]:
    """Create every streamproc topic that does not exist yet; return {topic: partitions}.

    Existing topics with a different partition count are reported loudly: co-partitioning
    is what keeps a call on one worker, and partitions cannot be changed afterwards here.
    """
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    wanted = topic_names(settings) + list(extra)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin = _admin(settings.bootstrap_servers, settings)
            break
        except Exception as exc:  # broker not up yet
            if time.monotonic() > deadline:
                raise RuntimeError(f"cannot reach Kafka at {settings.broker}: {exc}") from exc
            time.sleep(0.5)
    try:
        existing = set(admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        if missing:
            try:
                admin.create_topics(
                    [NewTopic(name, settings.partitions, settings.replication_factor) for name in missing]
                )
            except TopicAlreadyExistsError:
                pass  # another worker raced us
            log.info("created topics %s with %d partitions", missing, settings.partitions)
        counts = {}
        for description in admin.describe_topics(wanted):
            counts[description.get("topic") or description["name"]] = len(description["partitions"])
        mismatched = {name: count for name, count in counts.items() if count != settings.partitions}
        if mismatched:
            log.error(
                "topics %s do not have the configured %d partitions: calls will not co-locate",
                mismatched,
                settings.partitions,
            )
        return counts
    finally:
        admin.close()


async def true_end_offsets(
    bootstrap: list[str] | str,
    partitions: Iterable,
    listed: Mapping | None = None,
    *,
    timeout_s: float = 10.0,
    client_options: Mapping[str, Any] | None = None,
) -> dict:
    """End offsets (next offset to be written) read from fetch-response high watermarks.

    ListOffsets(latest) — ``listed``, or asked here when not given — is what Kafka clients
    normally trust; Tansu answers it with the last batch's base offset + 1, which undercounts
    when the last batch holds several records. A fetch from just before the listed end carries
    the real high watermark on any broker, so this is correct on Apache Kafka too (same numbers,
    one fetch per non-empty partition). ``partitions`` are ``(topic, partition)`` named tuples
    (Faust's ``TP`` or kafka-python's ``TopicPartition``); the result is keyed by them.
    ``client_options`` are extra aiokafka consumer arguments (TLS/SASL).
    """
    import aiokafka

    partitions = list(partitions)
    if listed is not None and not any(listed.get(tp, 0) > 0 for tp in partitions):
        return dict(listed)  # nothing written yet: no fetch needed
    consumer = aiokafka.AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        client_id="streamproc-highwater",
        **dict(client_options or {}),
    )
    await consumer.start()
    try:
        kafka_tps = {tp: aiokafka.TopicPartition(tp.topic, tp.partition) for tp in partitions}
        if listed is None:
            ends = await consumer.end_offsets(list(kafka_tps.values()))
            listed = {tp: ends[ktp] for tp, ktp in kafka_tps.items()}
        result = dict(listed)
        probe = [tp for tp in partitions if listed.get(tp, 0) > 0]
        if not probe:
            return result
        consumer.assign([kafka_tps[tp] for tp in probe])
        for tp in probe:
            consumer.seek(kafka_tps[tp], listed[tp] - 1)
        pending = {kafka_tps[tp]: tp for tp in probe}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while pending and loop.time() < deadline:
            batches = await consumer.getmany(*pending.keys(), timeout_ms=200)
            for ktp, records in batches.items():
                if records and ktp in pending:
                    result[pending[ktp]] = max(result[pending[ktp]], records[-1].offset + 1)
            for ktp in list(pending):
                highwater = consumer.highwater(ktp)
                if highwater is not None:
                    tp = pending.pop(ktp)
                    result[tp] = max(result[tp], highwater)
        if pending:
            log.warning("could not verify end offsets of %s; using ListOffsets values", list(pending.values()))
    finally:
        await consumer.stop()
    changed = {tp: (listed[tp], result[tp]) for tp in partitions if result[tp] != listed[tp]}
    if changed:
        log.info("corrected end offsets from fetch high watermarks: %s", changed)
    return result
