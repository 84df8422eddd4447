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


TANSU = "tansu"
APACHE_KAFKA = "kafka"
UNKNOWN = "unknown"


def classify_broker(cluster_id: str | None, finalized_features: Iterable[str]) -> str:
    """Which broker this is, from facts it reports about itself (pure: no I/O).

    Apache Kafka in KRaft mode (3.3+) finalizes the ``metadata.version`` feature and reports it
    in every ApiVersions response (v3+); Tansu reports no features and the cluster id
    ``tansu_cluster`` unless configured otherwise. Anything else (ZooKeeper-mode Kafka, other
    Kafka-protocol brokers) is ``unknown``: callers treat it like Apache Kafka except where a
    Tansu workaround would hurt.
    """
    if "metadata.version" in set(finalized_features):
        return APACHE_KAFKA
    if cluster_id is not None and cluster_id.lower().startswith("tansu"):
        return TANSU
    return UNKNOWN


def detect_broker(settings: Settings | None = None, bootstrap: list[str] | str | None = None) -> str:
    """Ask the broker (ApiVersions v3 features + DescribeCluster) and :func:`classify_broker` it."""
    if bootstrap is None:
        if settings is None:
            raise ValueError("detect_broker needs settings or a bootstrap address")
        bootstrap = settings.bootstrap_servers
    admin = _admin(bootstrap, settings)
    try:
        features = admin.describe_features()
        finalized = [name for name, info in features.items() if "finalized" in info]
        try:
            cluster_id = admin.describe_cluster().get("cluster_id")
        except Exception:  # very old brokers: no DescribeCluster
            cluster_id = None
        return classify_broker(cluster_id, finalized)
    finally:
        admin.close()


def check_processing_guarantee(settings: Settings, broker_kind: str) -> None:
    """exactly_once on Tansu fails deep inside Faust's producer; say why up front instead."""
    if settings.processing_guarantee == "exactly_once" and broker_kind == TANSU:
        raise RuntimeError(
            "STREAMPROC_PROCESSING_GUARANTEE=exactly_once needs Kafka transactions, which the embedded "
            f"Tansu broker at {settings.broker} rejects: use at_least_once there (alerts are deduplicated by id)"
        )


class KafkaSecurityError(RuntimeError):
    """TLS or SASL is misconfigured: retrying will not help, so fail at once and say what is wrong."""


def _tls_handshake(settings: Settings, server: str, timeout_s: float) -> None:
    import socket
    import ssl

    host, _, port = server.rpartition(":")
    cafile = str(settings.ssl_cafile) if settings.ssl_cafile else None
    context = ssl.create_default_context(cafile=cafile)
    where = f"the broker at {server}"
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s) as raw:
            with context.wrap_socket(raw, server_hostname=host):
                return
    except ssl.SSLCertVerificationError as exc:
        if exc.verify_code == 62 or "hostname" in str(exc).lower() or "IP address mismatch" in str(exc):
            raise KafkaSecurityError(
                f"TLS: the certificate of {where} does not match the host name {host!r} "
                f"(connect by a name or IP its certificate lists): {exc.verify_message}"
            ) from None
        raise KafkaSecurityError(
            f"TLS: the certificate of {where} is not signed by the CA in STREAMPROC_SSL_CAFILE "
            f"({cafile or 'system CAs'}): {exc.verify_message}"
        ) from None
    except ssl.SSLError as exc:
        raise KafkaSecurityError(f"TLS handshake with {where} failed ({exc.reason}); is it a TLS listener?") from None
    except OSError:
        return  # not reachable yet: the caller's retry loop deals with that


class _AuthFailures:
    """Collects kafka-python's SASL failure log lines (it logs them and retries until its bootstrap
    timeout, then reports only "Unable to bootstrap") and keeps its retry noise off the console."""

    def __init__(self) -> None:
        import logging as _logging

        self.lines: list[str] = []
        outer = self

        class Catch(_logging.Handler):
            def emit(self, record: _logging.LogRecord) -> None:
                text = record.getMessage()
                if "uthentication" in text:
                    outer.lines.append(text)

        self._handler = Catch(level=_logging.DEBUG)
        self._log = _logging.getLogger("kafka")

    def __enter__(self) -> "_AuthFailures":
        self._log.addHandler(self._handler)
        self._propagate, self._log.propagate = self._log.propagate, False
        return self

    def __exit__(self, *exc) -> None:
        self._log.removeHandler(self._handler)
        self._log.propagate = self._propagate

    def raise_if_any(self, settings: Settings, detail: str = "") -> None:
        if self.lines or "uthentication" in detail:
            raise KafkaSecurityError(
                f"SASL authentication failed for user {settings.sasl_username!r} "
                f"({settings.sasl_mechanism or 'PLAIN'}) at the broker at {','.join(settings.bootstrap_servers)}: check STREAMPROC_SASL_USERNAME / STREAMPROC_SASL_PASSWORD"
                f" / STREAMPROC_SASL_MECHANISM ({(self.lines or [detail])[-1][:200]})"
            )


def _sasl_login(settings: Settings, timeout_s: float) -> None:
    """One SASL login on one connection (aiokafka's create_conn: it raises the broker's answer
    directly, where kafka-python's clients log it and retry until their bootstrap timeout)."""
    import asyncio
    import ssl

    from aiokafka.conn import create_conn
    from aiokafka.errors import KafkaError

    host, _, port = settings.bootstrap_servers[0].rpartition(":")
    context = None
    if settings.security_protocol == "SASL_SSL":
        context = ssl.create_default_context(cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None)

    async def login() -> None:
        conn = await create_conn(
            host, int(port), client_id="streamproc-preflight", request_timeout_ms=int(timeout_s * 1000),
            ssl_context=context, security_protocol=settings.security_protocol,
            sasl_mechanism=settings.sasl_mechanism or "PLAIN", sasl_plain_username=settings.sasl_username,
            sasl_plain_password=settings.sasl_password.get_secret_value() if settings.sasl_password else None,
        )
        conn.close()

    failures = _AuthFailures()
    try:
        asyncio.run(asyncio.wait_for(login(), timeout_s))
    except KafkaError as exc:
        if "uthentication" in f"{type(exc).__name__} {exc}":
            failures.raise_if_any(settings, f"{type(exc).__name__}: {exc}")
    except Exception:
        pass  # not reachable yet, or a timeout: the caller's to retry


def check_security(settings: Settings, timeout_s: float = 8.0) -> None:
    """Fail fast, with a message that names the setting, on a wrong CA, host name or SASL password."""
    if settings.security_protocol == "PLAINTEXT":
        return
    if settings.security_protocol.endswith("SSL"):
        for server in settings.bootstrap_servers:
            _tls_handshake(settings, server, timeout_s)
    if settings.security_protocol.startswith("SASL"):
        _sasl_login(settings, timeout_s)


def topic_names(settings: Settings) -> list[str]:
    return [settings.topic(name) for name in TOPIC_NAMES]


#: Faust tables of the worker (agents/app.py). Their changelog topics are created here too, before
#: Faust looks for them: on a multi-broker Apache Kafka cluster Faust created a missing changelog
#: and then read metadata from a broker that did not list it yet, saw 0 partitions and crashed the
#: agent on every event (PartitionsMismatch) — found by tests/integration/test_kafka_cluster.py.
TABLES = ("call-state", "call-summaries", "detection-state")


def changelog_topic_names(settings: Settings) -> list[str]:
    return [f"{settings.app_id}-{table}-changelog" for table in TABLES]


def _settled_counts(admin, settings: Settings, names: list[str], deadline: float) -> dict[str, int]:
    """Partition counts once every broker's metadata lists the new topics (KRaft propagates
    them asynchronously: right after CreateTopics another broker may still answer 0)."""
    from kafka import KafkaAdminClient

    counts: dict[str, int] = {}
    while True:
        counts = {}
        for description in admin.describe_topics(names):
            counts[description.get("topic") or description["name"]] = len(description["partitions"])
        settled = all(counts.get(name, 0) > 0 for name in names)
        if settled and len(settings.bootstrap_servers) > 1:
            for server in settings.bootstrap_servers:  # each broker, not just the least loaded one
                try:
                    probe = KafkaAdminClient(bootstrap_servers=[server], client_id="streamproc-admin",
                                             **client_security(settings))
                except Exception:
                    continue  # a broker that is down has nothing to say
                try:
                    listed = set(probe.list_topics())
                    settled &= all(name in listed for name in names)
                finally:
                    probe.close()
        if settled or time.monotonic() > deadline:
            return counts
        time.sleep(0.2)


def ensure_topics(settings: Settings, extra: Iterable[str] = (), timeout_s: float = 20.0) -> dict[str, int]:
    """Create every streamproc topic that does not exist yet; return {topic: partitions}.

    Existing topics with a different partition count are reported loudly: co-partitioning
    is what keeps a call on one worker, and partitions cannot be changed afterwards here.
    """
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    wanted = topic_names(settings) + list(extra)
    check_security(settings)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if settings.security_protocol.startswith("SASL"):
                with _AuthFailures() as failures:
                    try:
                        admin = _admin(settings.bootstrap_servers, settings)
                    except Exception as exc:
                        failures.raise_if_any(settings, str(exc))  # a slow broker got past the preflight's timeout
                        raise
            else:
                admin = _admin(settings.bootstrap_servers, settings)
            break
        except KafkaSecurityError:
            raise
        except Exception as exc:  # broker not up yet
            if time.monotonic() > deadline:
                raise RuntimeError(f"cannot reach Kafka at {settings.broker}: {exc}") from exc
            time.sleep(0.5)
    try:
        if settings.processing_guarantee == "exactly_once":
            check_processing_guarantee(settings, detect_broker(settings))
        existing = set(admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        changelogs = [name for name in changelog_topic_names(settings) if name not in existing]
        if missing or changelogs:
            try:
                admin.create_topics(
                    [NewTopic(name, settings.partitions, settings.replication_factor) for name in missing]
                    + [NewTopic(name, settings.partitions, settings.replication_factor,
                                topic_configs={"cleanup.policy": "compact"}) for name in changelogs]
                )
            except TopicAlreadyExistsError:
                pass  # another worker raced us
            log.info("created topics %s with %d partitions", missing + changelogs, settings.partitions)
        counts = _settled_counts(admin, settings, wanted + changelogs, deadline=time.monotonic() + 15)
        counts = {name: count for name, count in counts.items() if name in wanted}
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
