"""Sending what a record produced: alerts and dead letters, keyed by call id, on a given partition.

Every output goes to the partition number of the record that caused it (not re-hashed from the
key), so a call's records stay co-located whatever partitioner the source used.
"""

from __future__ import annotations

import logging

from streamproc.record import RecordResult
from streamproc.schemas import Alert, CallRisk, CallSummary, DeadLetter

from .app import app, settings
from .topics import alerts_topic, deadletter_topic, risk_topic, summaries_topic, ticks_topic

log = logging.getLogger("streamproc.worker")


async def send_alerts(alerts: list[Alert], partition: int | None) -> None:
    for alert in alerts:
        await alerts_topic.send(key=alert.call_id.encode(), value=alert.to_json_bytes(), partition=partition)
        log.info("alert %s %s rule=%s call=%s id=%s", alert.severity.value, alert.kind.value, alert.rule_id,
                 alert.call_id, alert.alert_id)


async def send_risk(updates: list[CallRisk], partition_of) -> None:
    """Live risk scores, keyed by call id, each on its call's partition (``partition_of(call_id)``)."""
    for update in updates:
        await risk_topic.send(key=update.call_id.encode(), value=update.to_json_bytes(), partition=partition_of(update.call_id))


async def send_dead_letters(letters: list[DeadLetter], partition: int | None) -> None:
    for letter in letters:
        await deadletter_topic.send(
            key=letter.key.encode() if letter.key else None, value=letter.to_json_bytes(), partition=partition
        )
        log.warning("dead letter from %s[%s]@%s: %s %s", letter.source_topic, letter.partition, letter.offset,
                    letter.reason.value, letter.detail)


async def send_result(result: RecordResult, partition: int | None) -> None:
    """Alerts, then dead letters (transcript segments are the audio agent's own output)."""
    await send_alerts(result.alerts, partition)
    await send_dead_letters(result.dead_letters, partition)


async def send_summary(summary: CallSummary, partition: int | None) -> None:
    await summaries_topic.send(key=summary.call_id.encode(), value=summary.to_json_bytes(), partition=partition)
    log.info("summary call=%s id=%s alerts=%d complete=%s", summary.call_id, summary.summary_id, summary.alert_count,
             summary.transcription_complete)


async def send_tick(key: bytes, value: bytes, partition: int | None) -> None:
    """Send a tick so that the events agent reads it back at once, whatever the guarantee.

    Under ``exactly_once`` ``ticks_topic.send`` would go through Faust's TransactionManager into the
    open transaction of ``<app>-<group>-<partition>``, which Faust commits only together with new
    consumer offsets of that group and partition. A hold is quiet (no event between hold_started and
    hold_ended), so nothing commits it: the tick stays invisible to the ``read_committed`` agent, and
    the alert never fires (docs/state-and-restarts.md, the exactly_once section).

    A tick is a wake-up, not the output of a consumed record: there is no input offset to commit it
    with, and a duplicate or lost tick is harmless (the alert's "fired" mark is in the table; the
    timer re-ticks). So under ``exactly_once`` it goes through the app's plain idempotent producer,
    outside any transaction. What the tick causes (the alert, the table update) is produced while
    the agent consumes it, inside the transaction committed with the tick's offset.
    """
    if not app.in_transaction:
        await ticks_topic.send(key=key, value=value, partition=partition)
        return
    producer = app.producer  # plain idempotent producer: transactional_id=None
    await producer.maybe_start()
    await producer.send(settings.topic("ticks"), key, value, partition, None, None, transactional_id=None)
