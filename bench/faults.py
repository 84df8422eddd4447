"""Longer reliability runs than CI affords, and the figures table of docs/reliability.md.

The runs are the reliability tests themselves (real broker, real worker processes, the same
oracles and assertions), started with bigger knobs:

* ``soak``: ``tests/integration/test_soak.py`` with ``--calls`` calls starting over ``--minutes``
  minutes (each call lasts up to ~30 s more), ``--poison`` fraction of poison messages; its figures
  include the worker's RSS slope after warm-up (MiB/h, least squares);
* ``backlog``: ``tests/integration/test_faults.py -k backlog`` with ``--backlog-calls`` recorded
  calls (4 events each) fed as fast as the producer can;
* ``crashes``: the repeated-SIGKILL test run ``--repeat`` times (2 crashes each);
* ``fuzz``: the hypothesis suite with ``--fuzz-examples`` examples per target.

Each writes its JSON under test-artifacts/figures/ (bench runs under a ``bench:`` key next to the
CI figures). ``--table`` prints the markdown figures table from whatever JSON is there.

Run: ``python -m bench.faults soak --calls 400 --minutes 10`` · ``python -m bench.faults --table``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "test-artifacts" / "figures"


def _pytest(args: list[str], env: dict[str, str], timeout_s: float) -> int:
    command = [sys.executable, "-m", "pytest", "-q", "-s", "-rxX", "-p", "no:cacheprovider", "-o", f"timeout={int(timeout_s)}", *args]
    print("$", " ".join(f"{k}={v}" for k, v in env.items()), " ".join(command), flush=True)
    return subprocess.run(command, cwd=ROOT, env=os.environ | env, timeout=timeout_s + 120).returncode


def run_soak(calls: int, minutes: float, poison: float) -> int:
    env = {"STREAMPROC_SOAK_CALLS": str(calls), "STREAMPROC_SOAK_SPAN_S": str(minutes * 60),
           "STREAMPROC_SOAK_POISON_FRACTION": str(poison)}
    return _pytest(["tests/integration/test_soak.py"], env, timeout_s=minutes * 60 + 300)


def run_backlog(calls: int) -> int:
    return _pytest(["tests/integration/test_faults.py", "-k", "backlog"], {"STREAMPROC_BACKLOG_CALLS": str(calls)},
                   timeout_s=max(600, calls / 50))


def run_crashes(repeat: int) -> int:
    failures = 0
    for _ in range(repeat):
        failures += _pytest(["tests/integration/test_faults.py", "-k", "sigkill_mid_hold"], {}, timeout_s=300) != 0
    return failures


def run_fuzz(examples: int) -> int:
    return _pytest(["tests/unit/test_fuzz_parsers.py"], {"STREAMPROC_FUZZ_EXAMPLES": str(examples)}, timeout_s=3600)


def _load(name: str) -> dict:
    try:
        return json.loads((FIGURES / f"{name}.json").read_text())
    except (OSError, ValueError):
        return {}


def table() -> str:
    """The figures table of docs/reliability.md, from the JSON the tests wrote."""
    faults, soak, fuzz = _load("faults"), _load("soak"), _load("fuzz")
    rows = [("figure", "value", "reproduce")]

    def add(label: str, value, command: str | None) -> None:
        rows.append((label, "—" if value is None else str(value), f"`{command}`" if command else ""))

    crash = faults.get("crash", {})
    pending, mid = faults.get("pending_events_after_crash", {}), faults.get("mid_utterance", {})
    if crash:
        total = crash.get("crashes_survived", 0) + bool(pending) + bool(mid)
        add(f"crashes survived (SIGKILL, worker replaced): {crash.get('crashes_survived')} mid-hold"
            + (", 1 with events pending" if pending else "") + (", 1 mid-utterance" if mid else ""),
            total, '.venv/bin/pytest tests/integration/test_faults.py -k "sigkill or waiting_in_kafka" -s')
        add("crash: alerts expected / delivered / duplicated / spurious",
            f"{crash['alerts_expected']} / {crash['alerts_delivered']} / {crash['alerts_duplicated']} / {crash.get('alerts_spurious', 0)}",
            crash.get("command"))
        add("crash: takeover (kill → new worker ready), s", crash.get("takeover_s"), crash.get("command"))
    if pending:
        add("crash with hold_ended waiting in Kafka: spurious alerts", pending.get("alerts_spurious"), pending.get("command"))
    if mid:
        add("mid-utterance crash: audio re-decoded / decoded by nobody, s per channel",
            f"{mid['audio_redecoded_s_per_channel']} / {mid['audio_decoded_by_nobody_s_per_channel']}", mid.get("command"))
        add("mid-utterance crash: head of the in-flight utterance missing from its final, s",
            mid.get("utterance_head_missing_from_finals_s"), mid.get("command"))
    runs = faults.get("mid_utterance_runs", {}).get("runs", [])
    if runs:
        add("mid-utterance crash runs recorded: new owner stalled, audio never decoded",
            f"{sum(r['audio_lost'] for r in runs)} of {len(runs)}",
            ".venv/bin/pytest tests/integration/test_faults.py -k mid_utterance -s -rxX")
    reb = faults.get("rebalance", {})
    if reb:
        add("rebalance: alerts expected / delivered / duplicated / spurious",
            f"{reb['alerts_expected']} / {reb['alerts_delivered']} / {reb['alerts_duplicated']} / {reb.get('alerts_spurious', 0)}",
            reb.get("command"))
        add("rebalance stall (worst alert lateness), join / leave / steady, s",
            f"{reb.get('join_rebalance_stall_s')} / {reb.get('leave_rebalance_stall_s')} / {reb.get('steady_max_lateness_s')}",
            reb.get("command"))
    outage = faults.get("broker_outage", {})
    if outage:
        add("broker unreachable 15 s: alerts due meanwhile delivered / lost / duplicated",
            f"{outage['alerts_due_during_outage']} / {outage['alerts_missing']} / {outage['alerts_duplicated']}", outage.get("command"))
    empty = faults.get("broker_restart_empty", {})
    if empty:
        add("memory broker restarted empty (changelog recovered before): resumed without help; new alert after, s",
            f"{empty.get('resumed')}; {empty.get('first_new_alert_after_broker_back_s')}", empty.get("command"))
    recreated = faults.get("input_topic_recreated@kafka", {})
    if recreated:
        add("Kafka: calls.events deleted and recreated under the worker: resumed without help; calls until one alerted",
            f"{recreated.get('resumed')}; {recreated.get('calls_sent_until_first_alert')}", recreated.get("command"))
    state = faults.get("detection_state_sigkill", {})
    if state:
        add("detection state, SIGKILL mid-call: alerts without crash / with crash / missing / extra",
            f"{state['alerts_without_crash']} / {state['alerts_with_crash']} / {state['missing']} / {state['extra']}",
            state.get("command"))
    for key, label in (("backlog", "backlog (CI)"), ("bench:backlog", "backlog (bench)")):
        backlog = faults.get(key, {})
        if backlog:
            add(f"{label}: events, peak lag, drain s, events/s",
                f"{backlog['events']}, {backlog['peak_lag_events']}, {backlog['drain_s']}, {backlog['events_per_s_processed']}",
                backlog.get("command"))
            add(f"{label}: alerts expected / delivered / duplicated",
                f"{backlog['alerts_expected']} / {backlog['alerts_delivered']} / {backlog['alerts_duplicated']}", backlog.get("command"))
            add(f"{label}: peak RSS MiB (idle → peak, growth)",
                f"{backlog['rss_idle_mib']} → {backlog['peak_rss_mib']} (+{backlog['rss_growth_mib']})", backlog.get("command"))
    for key, run in sorted(fuzz.items()):
        if isinstance(run, dict) and "inputs_tried" in run:
            add(f"fuzz inputs tried, {run['max_examples_per_test']} examples per test (crashes)",
                f"{run['inputs_tried']} ({run['crashes']})", run.get("command"))
    for key, run in soak.items():
        add(f"soak {key}: calls (peak concurrent), poison messages",
            f"{run['calls']} ({run['peak_concurrent_calls']}), {run['poison_messages']}", run.get("command"))
        add(f"soak {key}: alerts expected / delivered / duplicated / spurious; poison dead-lettered with reason",
            f"{run['alerts_expected']} / {run['alerts_delivered']} / {run['alerts_duplicated']} / {run['alerts_spurious']}; "
            f"{run['poison_messages'] - run['poison_with_wrong_or_no_reason']} of {run['poison_messages']}", run.get("command"))
        if "detection_alerts_expected" in run:
            add(f"soak {key}: escalation alerts from scripted transcripts expected / delivered; calls with wrong ones",
                f"{run['detection_alerts_expected']} / {run['detection_alerts_delivered']}; {run['calls_with_wrong_detection_alerts']}",
                run.get("command"))
        add(f"soak {key}: peak RSS MiB", run.get("peak_rss_mib"), run.get("command"))
        if "rss_slope_mib_per_hour" in run:
            add(f"soak {key}: RSS slope after {run['rss_warmup_s']:g} s warm-up (least squares, "
                f"{run['rss_samples_after_warmup']} samples over {run['rss_window_s']:g} s); RSS min–max",
                f"{run['rss_slope_mib_per_hour']:+.1f} MiB/h; {run['rss_after_warmup_mib_min_max'][0]}–"
                f"{run['rss_after_warmup_mib_min_max'][1]} MiB", run.get("command"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="*", help="runs to do: soak, backlog, crashes, fuzz")
    parser.add_argument("--calls", type=int, default=400, help="soak: calls")
    parser.add_argument("--minutes", type=float, default=10.0, help="soak: window over which calls start")
    parser.add_argument("--poison", type=float, default=0.1, help="soak: poison messages per good event")
    parser.add_argument("--backlog-calls", type=int, default=20_000, help="backlog: recorded calls (4 events each)")
    parser.add_argument("--repeat", type=int, default=5, help="crashes: how many times to run the 2-crash test")
    parser.add_argument("--fuzz-examples", type=int, default=5000, help="fuzz: hypothesis examples per target")
    parser.add_argument("--table", action="store_true", help="print the figures table (markdown)")
    args = parser.parse_args()
    unknown = set(args.run) - {"soak", "backlog", "crashes", "fuzz"}
    if unknown:
        parser.error(f"unknown run(s): {sorted(unknown)}")
    failures = 0
    for run in args.run:
        if run == "soak":
            failures += run_soak(args.calls, args.minutes, args.poison) != 0
        elif run == "backlog":
            failures += run_backlog(args.backlog_calls) != 0
        elif run == "crashes":
            failures += run_crashes(args.repeat)
        elif run == "fuzz":
            failures += run_fuzz(args.fuzz_examples) != 0
    if args.table or not args.run:
        print(table())
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
