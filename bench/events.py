"""Event-path throughput: the worker's call-event processing vs a raw aiokafka passthrough.

Both run in the same process tree against the same embedded broker in one run:

* baseline — one aiokafka consumer reads N records from a topic and produces each to
  another topic (the most a single Python process can move through this broker);
* pipeline — a real ``streamproc worker`` drains a backlog of N call events (calls with
  holds: state-table writes, changelog, hold alerts) from ``calls.events``.

Reported: records/s of each and the ratio. Run: ``python -m bench.events [--events N]
[--broker tansu|kafka] [--guarantee at_least_once|exactly_once]``; both paths always run on the
same broker in the same run, so the ratio compares like with like.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from bench.brokers import add_broker_argument, running_broker
from streamproc.broker import free_port
from streamproc.config import Settings
from streamproc.kafka_admin import ensure_topics

ROOT = Path(__file__).resolve().parents[1]


def make_events(n: int) -> list[tuple[bytes, bytes]]:
    """n call events: calls of 4 events (start, hold, hold end, end), timestamps in the past."""
    now = time.time() - 3600
    records = []
    call = 0
    while len(records) < n:
        call_id = f"bench-{call}"
        t = now + call * 0.001
        for offset, kind, extra in (
            (0, "call_started", {"agent_id": f"agent-{call % 50}", "queue": "billing"}),
            (10, "hold_started", {}),
            (75, "hold_ended", {}),  # crosses the 60 s default warning: one alert per call
            (90, "call_ended", {}),
        ):
            body = {"type": kind, "call_id": call_id, "ts": t + offset} | extra
            records.append((call_id.encode(), json.dumps(body).encode()))
        call += 1
    return records[:n]


async def raw_passthrough(bootstrap: str, source: str, sink: str, n: int) -> float:
    import aiokafka

    consumer = aiokafka.AIOKafkaConsumer(source, bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=100)
    producer = aiokafka.AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await consumer.start()
    await producer.start()
    seen = 0
    started = None
    try:
        while seen < n:
            batches = await consumer.getmany(timeout_ms=500, max_records=2000)
            for records in batches.values():
                if started is None:
                    started = time.perf_counter()
                for record in records:
                    await producer.send(sink, key=record.key, value=record.value)
                    seen += 1
        await producer.flush()
        return time.perf_counter() - (started or time.perf_counter())
    finally:
        await consumer.stop()
        await producer.stop()


def produce(bootstrap: str, topic: str, records) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=256 * 1024)
    for key, value in records:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def scrape_events_total(url: str) -> float:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return sum(float(v) for v in re.findall(r"^streamproc_call_events_total\{[^}]*\} ([0-9.e+]+)$", text, re.M))


def pipeline(broker, records, tmp: Path, guarantee: str = "at_least_once") -> tuple[float, float]:
    suffix = uuid.uuid4().hex[:6]
    env = dict(
        os.environ,
        STREAMPROC_BROKER=broker.url,
        STREAMPROC_APP_ID=f"bench-{suffix}",
        STREAMPROC_TOPIC_PREFIX=f"b{suffix}.",
        STREAMPROC_WEB_PORT=str(free_port()),
        STREAMPROC_DATA_DIR=str(tmp / "data"),
        STREAMPROC_PROCESSING_GUARANTEE=guarantee,
    )
    settings = Settings(broker=broker.url, topic_prefix=f"b{suffix}.")
    ensure_topics(settings)
    produce(broker.bootstrap, settings.topic("events"), records)
    log = open(tmp / "worker.log", "wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "streamproc", "worker", "--loglevel", "warning"],
        env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{env['STREAMPROC_WEB_PORT']}/metrics"
    try:
        first = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with {worker.returncode}; see its log:\n"
                                   + (tmp / "worker.log").read_text(errors="replace")[-3000:])
            try:
                done = scrape_events_total(url)
            except OSError:
                time.sleep(0.2)
                continue
            if done > 0 and first is None:
                first = (time.perf_counter(), done)
            if done >= len(records):
                elapsed = time.perf_counter() - first[0]
                return elapsed, len(records) - first[1]
            time.sleep(0.1)
        raise RuntimeError("the worker did not finish the backlog in time")
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    add_broker_argument(parser)
    parser.add_argument("--guarantee", choices=("at_least_once", "exactly_once", "both"), default="at_least_once",
                        help="the worker's STREAMPROC_PROCESSING_GUARANTEE (exactly_once needs --broker kafka)")
    args = parser.parse_args()
    records = make_events(args.events)
    guarantees = ["at_least_once", "exactly_once"] if args.guarantee == "both" else [args.guarantee]
    pipes = {}
    with tempfile.TemporaryDirectory() as tmp, running_broker(args.broker, Path(tmp)) as broker:
        settings = Settings(broker=broker.url, topic_prefix="raw.")
        ensure_topics(settings)
        produce(broker.bootstrap, settings.topic("events"), records)
        raw_s = asyncio.run(raw_passthrough(broker.bootstrap, settings.topic("events"), settings.topic("alerts"), len(records)))
        for guarantee in guarantees:
            (Path(tmp) / guarantee).mkdir()
            pipes[guarantee] = pipeline(broker, records, Path(tmp) / guarantee, guarantee)
    raw_rate = len(records) / raw_s
    print(f"broker: {args.broker}; events: {len(records)} ({len(records) // 4} calls with one hold breach each)")
    print("| path | records/s |")
    print("|---|---|")
    print(f"| raw aiokafka consume→produce (baseline) | {raw_rate:,.0f} |")
    for guarantee, (pipe_s, counted) in pipes.items():
        pipe_rate = counted / pipe_s
        print(f"| streamproc worker ({guarantee}): events → state table → alerts | {pipe_rate:,.0f} |")
        print(f"| ratio pipeline ({guarantee}) / baseline | {pipe_rate / raw_rate:.3f} |")


if __name__ == "__main__":
    main()
