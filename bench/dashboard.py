"""Dashboard view-model cost: how fast a worker's dashboard reader folds records, how big a snapshot is.

Every worker with the dashboard on reads *all* events, alerts, acks and transcripts
(docs/dashboard.md), so this is the per-worker CPU price of the feature. One process, no
Kafka: records are real JSON messages fed to ``streamproc.dashboard.CallBoard.apply``.

Run: ``python -m bench.dashboard [--calls N]``.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone

from streamproc.dashboard import BoardTopics, CallBoard
from streamproc.rules import load_rules
from streamproc.schemas import Alert, AlertKind, Evidence, Severity, TranscriptSegment

TOPICS = BoardTopics(events="calls.events", alerts="calls.alerts", acks="calls.acks", transcripts="calls.transcripts", risk="calls.risk")


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="concurrent calls on the board")
    parser.add_argument("--clients", type=int, default=50, help="browsers polling the change stream")
    args = parser.parse_args()

    board = CallBoard(load_rules(None), TOPICS)
    now = time.time()
    events = []
    for n in range(args.calls):
        events.append(json.dumps({"type": "call_started", "call_id": f"c{n}", "ts": now, "agent_id": f"a{n % 300}", "queue": "billing"}).encode())
        events.append(json.dumps({"type": "hold_started", "call_id": f"c{n}", "ts": now + 1}).encode())
    started = time.perf_counter()
    for value in events:
        board.apply(TOPICS.events, None, value, timestamp_ms=int(now * 1000))
    print(f"call events:        {rate(len(events), time.perf_counter() - started)}")

    transcripts = []
    for n in range(args.calls * 10):
        call, utterance = f"c{n % args.calls}", n // args.calls
        for revision in range(4):
            transcripts.append(TranscriptSegment(
                segment_id="s", call_id=call, speaker="customer", utterance=utterance, revision=revision,
                is_final=revision == 3, text="이번 달에 요금이 두 번 나왔어요 확인해 주세요",
            ).to_json_bytes())
    started = time.perf_counter()
    for value in transcripts:
        board.apply(TOPICS.transcripts, None, value)
    print(f"transcript records: {rate(len(transcripts), time.perf_counter() - started)}")

    alerts = []
    for n in range(1000):
        moment = datetime.fromtimestamp(now + n, timezone.utc)
        alerts.append(Alert(
            alert_id=Alert.make_id(f"c{n}", "hold-warning", 1), call_id=f"c{n}", agent_id="a", queue="billing",
            kind=AlertKind.hold_breach, rule_id="hold-warning", severity=Severity.warning, title="on hold",
            evidence=Evidence(value=61, threshold=60), event_time=moment, detected_at=moment,
        ).to_json_bytes())
    started = time.perf_counter()
    for value in alerts:
        board.apply(TOPICS.alerts, None, value)
    print(f"alerts:             {rate(len(alerts), time.perf_counter() - started)}")

    started = time.perf_counter()
    snapshot = json.dumps(board.snapshot("c1"))
    print(f"snapshot:           {len(board.calls())} calls, {len(board.alerts())} alerts: "
          f"{(time.perf_counter() - started) * 1000:.1f} ms, {len(snapshot) / 1e6:.2f} MB JSON")

    # A burst of 100 changes, read by every connected page (what each SSE wake-up costs).
    seq = board.seq
    for n in range(100):
        board.apply(TOPICS.events, None, json.dumps({"type": "hold_ended", "call_id": f"c{n}", "ts": now + 30}).encode(),
                    timestamp_ms=int((now + 30) * 1000))
    started = time.perf_counter()
    for client in range(args.clients):
        board.changes_since(seq, f"c{client}")
    per_client = (time.perf_counter() - started) / args.clients
    print(f"changes_since:      {per_client * 1e6:.0f} µs per client for a 100-change burst")


if __name__ == "__main__":
    main()
