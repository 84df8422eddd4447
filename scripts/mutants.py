"""Does the unit suite bite? Apply hand-written bugs (mutants) one at a time and run the unit
tests that cover the mutated module; a mutant is *killed* when those tests fail.

Mutants target the decision code: ``streamproc/detect/``, ``streamproc/processing.py`` and
``streamproc/redact.py``. Each is a one-line change a careless edit could make (a comparison
flipped, a bound moved by one, a branch dropped). They run in a throw-away copy of the tree, so
the working tree (and anything running from it) is never modified.

    .venv/bin/python scripts/mutants.py            # all mutants, score on stdout
    .venv/bin/python scripts/mutants.py --json out.json --only redact

Result and date: docs/reliability.md ("Mutation score").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

HOLD_TESTS = ("tests/unit/test_hold.py",)
PROCESSING_TESTS = ("tests/unit/test_hold.py", "tests/unit/test_calls_agent.py", "tests/unit/test_record.py")
ENGINE_TESTS = ("tests/unit/test_detection_engine.py", "tests/unit/test_phrases.py", "tests/unit/test_detection_quality.py")
REDACT_TESTS = ("tests/unit/test_redact.py",)
WINDOW_TESTS = ("tests/unit/test_windows_risk.py",)
ACOUSTIC_TESTS = ("tests/unit/test_acoustic.py",)


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTANTS = [
    # --- hold state machine
    Mutant("hold: threshold fires one step late (>= -> >)", "streamproc/detect/hold.py",
           "if hold_s >= rule.after_s and key not in state.fired:", "if hold_s > rule.after_s and key not in state.fired:",
           HOLD_TESTS),
    Mutant("hold: per-hold occurrence always 1", "streamproc/detect/hold.py",
           "                    occurrence=state.hold_count,\n", "                    occurrence=1,\n", HOLD_TESTS),
    Mutant("hold: crossing time ignores the threshold", "streamproc/detect/hold.py",
           "crossed_at=state.hold_started_at + rule.after_s,", "crossed_at=state.hold_started_at,", HOLD_TESTS),
    Mutant("hold: cumulative forgets completed holds", "streamproc/detect/hold.py",
           "    total_s = state.completed_hold_s + hold_s\n", "    total_s = hold_s\n", HOLD_TESTS),
    Mutant("hold: repeated-hold fires one hold early", "streamproc/detect/hold.py",
           "if state.hold_count >= rule.count and key not in state.fired:",
           "if state.hold_count >= rule.count - 1 and key not in state.fired:", HOLD_TESTS),
    Mutant("hold: out-of-order events accepted", "streamproc/detect/hold.py",
           "    if ts < state.last_event_ts:\n", "    if ts < state.last_event_ts - 1e9:\n", HOLD_TESTS),
    Mutant("hold: duplicate event ids not recognised", "streamproc/detect/hold.py",
           "    if event.event_id in state.seen_event_ids:\n", "    if False:\n", HOLD_TESTS),
    Mutant("hold: hold_ended does not evaluate the thresholds passed meanwhile", "streamproc/detect/hold.py",
           "        outcome.alerts += evaluate(new, ts, rules, received_wall)\n        outcome.completed_hold_s = _close_hold(new, ts)\n    elif isinstance(event, Transferred):",
           "        outcome.completed_hold_s = _close_hold(new, ts)\n    elif isinstance(event, Transferred):", HOLD_TESTS),
    Mutant("hold: next deadline ignores the cumulative rules", "streamproc/detect/hold.py",
           "    due += [\n        state.hold_started_at + (rule.after_s - state.completed_hold_s)",
           "    due += [] and [\n        state.hold_started_at + (rule.after_s - state.completed_hold_s)", HOLD_TESTS),
    Mutant("hold: ended calls purged at once", "streamproc/detect/hold.py",
           "        if event_time >= (state.ended_at or state.last_event_ts) + retention_s:",
           "        if event_time >= (state.ended_at or state.last_event_ts):", HOLD_TESTS),
    # --- the events agent's record path
    Mutant("processing: rejected events not raised (no dead letter)", "streamproc/processing.py",
           "        if outcome.rejected is not None:\n            raise outcome.rejected\n",
           "        if outcome.rejected is not None:\n            return RecordResult(call_id=event.call_id)\n",
           PROCESSING_TESTS + ("tests/unit/test_fuzz_parsers.py",)),
    Mutant("processing: key not checked against call_id", "streamproc/processing.py",
           "        check_key(key, event.call_id)\n", "", PROCESSING_TESTS + ("tests/unit/test_fuzz_parsers.py",)),
    Mutant("processing: tick evaluated at the tick's time only", "streamproc/processing.py",
           "max(tick.at.timestamp(), now_wall)", "tick.at.timestamp()", PROCESSING_TESTS),
    Mutant("processing: new state not stored", "streamproc/processing.py",
           "store=state.model_dump(mode=\"json\") if state is not None else None,", "store=None,", PROCESSING_TESTS),
    Mutant("processing: deadline index never re-ticks", "streamproc/processing.py",
           "if entry.ticked_at is not None and now_wall - entry.ticked_at < self.RETICK_S:",
           "if entry.ticked_at is not None:", PROCESSING_TESTS),
    Mutant("processing: deadline index ignores partition ownership", "streamproc/processing.py",
           "if entry.wall_due is None or entry.wall_due > now_wall or not owns_partition(entry.partition):",
           "if entry.wall_due is None or entry.wall_due > now_wall:", PROCESSING_TESTS),
    # --- redaction
    Mutant("redact: Luhn doubles the wrong digits", "streamproc/redact.py",
           "        if index % 2 == 1:\n            value *= 2", "        if index % 2 == 0:\n            value *= 2", REDACT_TESTS),
    Mutant("redact: phone numbers from 8 digits", "streamproc/redact.py",
           "    if 7 <= n <= 15:\n        return PiiKind.phone", "    if 8 <= n <= 15:\n        return PiiKind.phone", REDACT_TESTS),
    Mutant("redact: cards only up to 16 digits", "streamproc/redact.py",
           "    if 13 <= n <= 19 and luhn_valid(digits):", "    if 13 <= n <= 16 and luhn_valid(digits):", REDACT_TESTS),
    Mutant("redact: SSN area 666 allowed", "streamproc/redact.py",
           'area not in ("000", "666")', 'area not in ("000",)', REDACT_TESTS),
    Mutant("redact: spoken e-mails not searched", "streamproc/redact.py",
           "    for match in _SPOKEN_EMAIL.finditer(text):", "    for match in _SPOKEN_EMAIL.finditer(''):", REDACT_TESTS),
    Mutant("redact: 'oh' is not a digit", "streamproc/redact.py", '"zero": "0", "oh": "0",', '"zero": "0",', REDACT_TESTS),
    Mutant("redact: dead-letter JSON numbers never checked", "streamproc/redact.py",
           "    if isinstance(value, int) and key not in _NUMERIC_FIELDS and abs(value) >= 1_000_000:",
           "    if False:", REDACT_TESTS),
    Mutant("redact: dead-letter binary values kept", "streamproc/redact.py",
           "    except UnicodeDecodeError:\n        return None, True", "    except UnicodeDecodeError:\n        return payload, False",
           REDACT_TESTS),
    Mutant("redact: dead-letter timestamps treated as text", "streamproc/redact.py",
           "        return value if _is_timestamp(value) else redact(value)", "        return redact(value)", REDACT_TESTS),
    # --- transcript detection
    Mutant("engine: cooldown never applies", "streamproc/detect/engine.py",
           "        if last is None or cooldown_s <= 0:\n            return False", "        return False", ENGINE_TESTS),
    Mutant("engine: cooldown one-sided (<= instead of <)", "streamproc/detect/engine.py",
           "return (at if at is not None else now) - last < cooldown_s", "return (at if at is not None else now) - last <= cooldown_s + 5",
           ENGINE_TESTS),
    Mutant("engine: speaker filter ignored", "streamproc/detect/engine.py",
           "            if not rule.speaker.allows(segment.speaker) or not rule.applies_to_queue(info.queue):\n                continue\n            if rule.fire_on",
           "            if not rule.applies_to_queue(info.queue):\n                continue\n            if rule.fire_on", ENGINE_TESTS),
    Mutant("engine: fire_on final ignored", "streamproc/detect/engine.py",
           "            if rule.fire_on == \"final\" and not segment.is_final:\n                continue\n            matches",
           "            matches", ENGINE_TESTS),
    Mutant("engine: occurrence ignores the speaker", "streamproc/detect/engine.py",
           "occurrence = (segment.utterance * 4 + _SPEAKER_CODE[segment.speaker]) * MAX_MATCHES_PER_UTTERANCE + k",
           "occurrence = (segment.utterance * 4) * MAX_MATCHES_PER_UTTERANCE + k", ENGINE_TESTS),
    Mutant("phrases: negation never detected", "streamproc/detect/phrases.py",
           "        if tokens[k].norm in NEGATORS:\n            return True", "        if False:\n            return True", ENGINE_TESTS),
    Mutant("phrases: negation crosses clauses", "streamproc/detect/phrases.py",
           "        if tokens[k].clause != clause:\n            break\n", "", ENGINE_TESTS),
    # (Dropping "start_s <= window.closes_s" is an equivalent mutant: advance() closes the window first.)
    Mutant("windows: window cue accepted before it opened", "streamproc/detect/windows.py",
           "if start_s <= window.closes_s and end_s >= window.opens_s and heard(rule, \"cue\"):",
           "if start_s <= window.closes_s and heard(rule, \"cue\"):", WINDOW_TESTS),
    Mutant("windows: max_windows off by one", "streamproc/detect/windows.py",
           "if count >= rule.max_windows or not heard(rule, \"trigger\"):", "if count > rule.max_windows or not heard(rule, \"trigger\"):",
           WINDOW_TESTS),
    Mutant("risk: score crossing fires below the threshold", "streamproc/detect/risk.py",
           "while score >= rule.threshold + fired * STEP", "while score >= rule.threshold - 1 + fired * STEP", WINDOW_TESTS),
]


def run_one(tree: Path, mutant: Mutant, timeout_s: float) -> tuple[str, float, str]:
    target = tree / mutant.path
    original = target.read_text()
    count = original.count(mutant.old)
    if count != 1 or mutant.old == mutant.new:
        return "invalid", 0.0, f"pattern found {count} times"
    target.write_text(original.replace(mutant.old, mutant.new))
    started = time.monotonic()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", *mutant.tests],
            cwd=tree, env=os.environ | {"PYTHONPATH": str(tree), "STREAMPROC_FUZZ_EXAMPLES": "100"},
            capture_output=True, text=True, timeout=timeout_s,
        )
        outcome = "survived" if result.returncode == 0 else "killed"
        tail = (result.stdout.strip().splitlines() or [""])[-1]
    except subprocess.TimeoutExpired:
        outcome, tail = "killed", "timeout"  # a mutant that hangs the tests is caught too
    finally:
        target.write_text(original)
    return outcome, time.monotonic() - started, tail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="run the mutants whose name contains this text")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if not args.only or args.only in m.name]
    with tempfile.TemporaryDirectory(prefix="mutants-") as tmp:
        tree = Path(tmp)
        for name in ("streamproc", "agents", "tests", "pyproject.toml"):
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(source, tree / name, ignore=shutil.ignore_patterns("__pycache__", "libs", "*.onnx", "*.bin"))
            else:
                shutil.copy(source, tree / name)
        check = subprocess.run([sys.executable, "-c", "import streamproc; print(streamproc.__file__)"],
                               cwd=tree, env=os.environ | {"PYTHONPATH": str(tree)}, capture_output=True, text=True)
        assert check.stdout.strip().startswith(str(tree)), f"mutants would not be imported: {check.stdout} {check.stderr}"
        results = []
        for mutant in chosen:
            outcome, seconds, tail = run_one(tree, mutant, args.timeout)
            results.append({"mutant": mutant.name, "file": mutant.path, "outcome": outcome, "seconds": round(seconds, 1),
                            "tests": list(mutant.tests), "last_line": tail})
            print(f"{outcome:9} {seconds:6.1f}s  {mutant.name}  ({tail})", flush=True)
    valid = [r for r in results if r["outcome"] != "invalid"]
    killed = sum(r["outcome"] == "killed" for r in valid)
    print(f"\nmutation score: {killed}/{len(valid)} killed"
          + (f"; {len(results) - len(valid)} invalid" if len(valid) != len(results) else ""))
    if args.json:
        args.json.write_text(json.dumps({"killed": killed, "valid": len(valid), "results": results}, indent=2) + "\n")
    return 0 if killed == len(valid) else 1


if __name__ == "__main__":
    raise SystemExit(main())
