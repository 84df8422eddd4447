"""bench.sizing at smoke-test scale (``--quick``): it runs end to end on both engines and its figures are
well-formed and consistent. No timing bound is asserted here (benchmarks report ratios; docs/deployment.md#sizing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("language", ["ko", "en"])
def test_sizing_quick(language: str, tmp_path: Path) -> None:
    out = tmp_path / "sizing.json"
    run = subprocess.run([sys.executable, "-m", "bench.sizing", "--language", language, "--quick", "--json", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=840)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "| speech gate | live calls per core" in run.stdout
    assert "calls interleaved: calls per core (wall)" in run.stdout
    figures = json.loads(out.read_text(), parse_constant=lambda name: pytest.fail(f"non-JSON constant {name}"))[f"{language}:quick"]

    assert (figures["bounds"]["alert_p95_s"] is None) == (language == "ko")
    assert figures["engine"] == f"lang:{language}" and figures["cores"] == figures["decoder_threads"] == 1
    assert 0 <= figures["loadavg"]["min"] <= figures["loadavg"]["median"] <= figures["loadavg"]["max"]
    gates = ["off", "on"] if language == "ko" else ["on"]
    assert sorted(figures["by_gate"]) == gates
    if language == "ko":
        assert figures["gate_gain_raw"]["median"] > 0 and figures["gate_gain_cpu"]["median"] > 0
    heard = [s["phrase_end_s"]["on"] for s in figures["scenarios"].values()]
    assert heard and all(end is not None and end > 0 for end in heard), figures["scenarios"]
    for gate in gates:
        g = figures["by_gate"][gate]
        (run_figures,) = g["runs"]
        raw, ramp = run_figures["raw"], run_figures["ramp"]
        # the baseline decoded every call: stream seconds = 2 × audio, at a sane speed for a CPU decoder
        assert raw["stream_s"] == pytest.approx(2 * sum(s["duration_s"] for s in figures["scenarios"].values()), abs=0.5)
        assert 0.5 < raw["streams_per_cpu_s"] < 500 and raw["cpu_s"] > 0
        steps = ramp["steps"]
        assert steps and [s["calls"] for s in steps] == sorted({s["calls"] for s in steps})
        for step in steps:
            assert step["segments"] > 0, step  # the worker transcribed the step's calls
            assert step["lag_p50_s"] <= step["lag_p95_s"]
            done, sent = map(int, step["alerts"].split("/"))
            assert sent == step["calls"] and 0 <= done <= sent
            alert_bound = figures["bounds"]["alert_p95_s"]  # None: not a bound for this engine (Korean)
            assert step["behind_p95_s"] is not None and 0 <= step["behind_p95_s"] <= step["behind_max_s"]
            within = (step["drain_s"] is not None and step["drain_s"] <= figures["bounds"]["drain_s"]
                      and step["behind_p95_s"] <= figures["bounds"]["behind_p95_s"]
                      and step["lag_p95_s"] <= figures["bounds"]["lag_p95_s"]
                      and (alert_bound is None or (done == sent and step["alert_p95_s"] <= alert_bound)))
            assert step["passed"] == within, step
            assert 0 < step["worker_cpu_per_stream_s"] < 5 and step["peak_rss_mb"] > 100
        capacity = max((s["calls"] for s in steps if s["passed"]), default=0)
        assert ramp["capacity_calls"] == capacity <= 2
        assert g["live_calls_per_core"]["median"] == capacity
        assert g["live_to_raw"]["median"] == pytest.approx(capacity / raw["calls_per_core"], abs=0.01)
        assert g["live_to_raw_cpu"]["median"] == pytest.approx(ramp["cpu_calls_per_core"] / (raw["streams_per_cpu_s"] / 2), abs=0.02)
        memory = ramp["memory"]
        assert memory["idle_rss_mb"] > 100  # the model is loaded
        assert memory["calls"] == max(s["calls"] for s in steps)
        assert memory["per_call_mb"] == pytest.approx((memory["rss_at_calls_mb"] - memory["idle_rss_mb"]) / memory["calls"], abs=0.1)
        # the engine alone at the ramp's concurrency: the ramp's calls, decoded a frame of each in turn
        (interleaved,) = g["raw_interleaved_runs"]
        durations = [s["duration_s"] for s in figures["scenarios"].values()]
        calls = interleaved["interleaved_calls"]
        assert calls == max(1, capacity)
        expected_s = 2 * (sum(durations[i % len(durations)] for i in range(calls)) if calls > 1 else sum(durations))
        assert interleaved["stream_s"] == pytest.approx(expected_s, abs=0.5) and interleaved["cpu_s"] > 0
        assert g["live_to_raw_interleaved_cpu"]["median"] == pytest.approx(
            ramp["cpu_calls_per_core"] / (interleaved["streams_per_cpu_s"] / 2), abs=0.02)
