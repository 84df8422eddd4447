"""The worker runs both ways (`streamproc worker`, `faust -A agents.app worker`) and refuses bad rules."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, WorkerProcess, event, send

pytestmark = pytest.mark.broker


def test_faust_way_runs_the_same_app(worker_factory, reader, producer):
    worker: WorkerProcess = worker_factory(start=False)
    faust = shutil.which("faust", path=str(Path(sys.executable).parent)) or "faust"
    worker.log_path.write_text("")
    with open(worker.log_path, "ab") as log:
        worker.process = subprocess.Popen(
            [faust, "-A", "agents.app", "worker", "-l", "info"],
            env=worker.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    worker.wait_ready()
    alerts = reader(worker.topic("alerts"))
    now = time.time()
    send(producer, worker.topic("events"), "fw", event("fw", "call_started", ts=now - 10, agent_id="a", queue="q"))
    send(producer, worker.topic("events"), "fw", event("fw", "hold_started", ts=now - 2.5))
    values = alerts.wait_for(lambda v: any(a["call_id"] == "fw" for a in v), timeout_s=15)
    assert [a["rule_id"] for a in values if a["call_id"] == "fw"][:1] == ["hold-warning"]


def test_worker_refuses_an_invalid_rules_file_with_a_clear_message(tmp_path, broker):
    bad = tmp_path / "rules.yaml"
    bad.write_text("version: 1\nhold:\n  defaults:\n    thresholds:\n      - {id: w, after: 60, severity: warning}\n")
    env = dict(os.environ, STREAMPROC_BROKER=broker.url, STREAMPROC_RULES_FILE=str(bad))
    result = subprocess.run(
        [sys.executable, "-m", "streamproc", "worker"], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 2
    assert "line 5" in result.stderr and "after_s" in result.stderr and "Traceback" not in result.stderr
