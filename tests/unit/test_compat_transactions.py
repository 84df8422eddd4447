"""agents/compat.py fixes 4 and 5 (exactly_once only), without a broker: fakes around Faust's classes."""

from __future__ import annotations

import weakref
from types import SimpleNamespace
from unittest import mock

import pytest
from faust.streams import _current_event

from agents import compat


class FakeProducer:
    def __init__(self):
        self.sent: list[tuple] = []

    async def send(self, topic, key, value, partition, timestamp, headers, *, transactional_id=None):
        self.sent.append((topic, partition, transactional_id))


def manager(known_topics: set[str], fixes: compat.DriverFixes = compat.DriverFixes()):
    groups = {"calls.events": 1, "calls.ticks": 1}
    app = SimpleNamespace(conf=SimpleNamespace(id="app"), driver_fixes=fixes,
                          assignor=SimpleNamespace(group_for_topic=groups.__getitem__))
    # Faust's consumer: None for a topic it has no metadata for (one no agent consumes).
    consumer = SimpleNamespace(key_partition=lambda topic, key, partition: partition if topic in known_topics else None)
    producer = FakeProducer()
    tm = compat.TransactionManager(SimpleNamespace(app=app), consumer=consumer, producer=producer)
    return tm, producer


class Event:
    def __init__(self, topic: str, partition: int):
        self.message = SimpleNamespace(topic=topic, partition=partition)


@pytest.mark.asyncio
async def test_output_to_an_unconsumed_topic_goes_into_the_source_records_transaction():
    tm, producer = manager(known_topics={"calls.events"})
    event = Event("calls.events", 2)
    token = _current_event.set(weakref.ref(event))
    try:
        await tm.send("calls.alerts", b"c1", b"{}", 2, None, None)
    finally:
        _current_event.reset(token)
    # Faust's own send: no transactional id and partition None (outside every transaction, re-hashed).
    assert producer.sent == [("calls.alerts", 2, "app-1-2")]


@pytest.mark.asyncio
async def test_known_topics_and_sends_without_an_event_keep_fausts_behaviour():
    tm, producer = manager(known_topics={"calls.events", "calls.ticks"})
    event = Event("calls.events", 3)
    token = _current_event.set(weakref.ref(event))
    try:
        await tm.send("calls.ticks", b"c1", b"{}", 3, None, None)  # consumed topic: Faust picks the transaction
    finally:
        _current_event.reset(token)
    await tm.send("calls.alerts", b"c1", b"{}", 1, None, None)  # no current event (a timer): Faust's send
    assert producer.sent == [("calls.ticks", 3, "app-1-3"), ("calls.alerts", None, None)]


@pytest.mark.asyncio
async def test_fix_5_off_is_fausts_send():
    tm, producer = manager(known_topics=set(), fixes=compat.DriverFixes(transactional_outputs=False))
    event = Event("calls.events", 0)
    token = _current_event.set(weakref.ref(event))
    try:
        await tm.send("calls.alerts", b"c1", b"{}", 0, None, None)
    finally:
        _current_event.reset(token)
    assert producer.sent == [("calls.alerts", None, None)]


@pytest.mark.asyncio
@pytest.mark.parametrize("in_transaction, fix_on, flushed", [(True, True, True), (True, False, False), (False, True, False)])
async def test_buffered_changelog_writes_are_flushed_before_a_transactional_commit(in_transaction, fix_on, flushed):
    calls: list[str] = []
    producer = SimpleNamespace(flush=mock.AsyncMock(side_effect=lambda: calls.append("flush")))
    consumer = object.__new__(compat.Consumer)  # only the override runs; Faust's commit is mocked
    app = SimpleNamespace(producer=producer, driver_fixes=compat.DriverFixes(flush_before_transaction_commit=fix_on))

    async def faust_commit(self, offsets, start_new_transaction=True):
        calls.append("commit")
        return True

    consumer.in_transaction = in_transaction
    consumer.app = app
    with mock.patch.object(compat.faust_aiokafka.Consumer, "_commit_offsets", faust_commit):
        assert await consumer._commit_offsets({"tp": 1})
    assert calls == (["flush", "commit"] if flushed else ["commit"])
