"""Prometheus side of the deployment: promtool on the shipped config, rules and a live scrape, and a
real Prometheus server (Debian package) scraping a real worker."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest
import yaml

from streamproc.broker import free_port
from tests.conftest import ROOT, event, http_get, send
from tests.daemons import Daemon

PROMETHEUS_DIR = ROOT / "docker" / "prometheus"
PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], input=stdin, capture_output=True, timeout=60, cwd=PROMETHEUS_DIR)


class PrometheusServer(Daemon):
    """A real Prometheus on 127.0.0.1 with the shipped rules (or ``rule_files``), scraping the given targets
    every second, sending alerts to ``alertmanager`` (host:port) when given."""

    name = "prometheus"

    def __init__(self, workdir: Path, targets: list[str], *, rule_files: list[Path] | None = None,
                 alertmanager: str | None = None):
        self.workdir = workdir
        self.port = free_port()
        config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        config["rule_files"] = [str(path) for path in rule_files] if rule_files is not None else [
            str(PROMETHEUS_DIR / name) for name in config["rule_files"]]
        [manager] = config["alerting"]["alertmanagers"]
        if alertmanager is None:
            del config["alerting"]  # the compose service name would not resolve here
        else:
            manager["static_configs"] = [{"targets": [alertmanager]}]
        [job] = config["scrape_configs"]
        job["static_configs"] = [{"targets": targets}]
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ready_url(self) -> str:
        return self.url + "/-/ready"

    def command(self) -> list[str]:
        return [PROMETHEUS, f"--config.file={self.config_path}", f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"]

    def api(self, path: str, **params) -> dict:
        status, body = http_get(f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}")
        answer = json.loads(body)
        assert status == 200 and answer["status"] == "success", f"{path} {params}: {answer}"
        return answer["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def wait_for(self, expr: str, predicate, timeout_s: float = 20) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        result: list[dict] = []
        while time.monotonic() < deadline:
            result = self.query(expr)
            if predicate(result):
                return result
            time.sleep(0.5)
        raise AssertionError(f"{expr}: last result {result}")


def make_traffic(worker, producer) -> None:
    """A call with a hold long enough for an alert, a completed hold, and a dead letter: labelled series appear."""
    events = worker.topic("events")
    send(producer, events, "p-1", event("p-1", "call_started", agent_id="agent-1", queue="billing"))
    send(producer, events, "p-1", event("p-1", "hold_started"))
    now = time.time()
    send(producer, events, "p-2", event("p-2", "call_started", ts=now - 2, agent_id="agent-2", queue="vip"))
    send(producer, events, "p-2", event("p-2", "hold_started", ts=now - 1))
    send(producer, events, "p-2", event("p-2", "hold_ended", ts=now))
    send(producer, events, "p-3", b"{not json")


def scrape(worker) -> str:
    status, body = http_get(worker.base_url + "/metrics")
    assert status == 200
    return body.decode()


# --------------------------------------------------------------------------- promtool on the shipped files


def test_promtool_accepts_the_shipped_config():
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert b"SUCCESS" in result.stdout


def test_promtool_accepts_the_alert_rules():
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_alert_rules_fire_as_their_unit_tests_say():
    result = promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


# --------------------------------------------------------------------------- a live worker


@pytest.mark.broker
def test_live_scrape_passes_promtool_metrics_lint(worker_factory, producer, reader):
    worker = worker_factory()
    alerts = reader(worker.topic("alerts"))
    make_traffic(worker, producer)
    alerts.wait_for(lambda v: len(v) >= 1, timeout_s=10)
    text = scrape(worker)
    # Faust's sensor metrics are in the scrape, under conforming names (streamproc.exposition).
    assert "# TYPE streamproc_faust_messages_received_total counter" in text
    assert "# TYPE streamproc_faust_event_runtime_seconds histogram" in text
    assert "streamproc_faust_events_runtime_ms" not in text and "_latency_bucket" not in text
    assert 'streamproc_alerts_total{kind="hold_breach",severity="warning"} 1.0' in text
    result = promtool("check", "metrics", stdin=text.encode())
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert result.stdout.strip() == b"" and result.stderr.strip() == b"", "no lint findings at all"


@pytest.mark.broker
def test_faust_millisecond_histograms_are_served_in_seconds(worker_factory, producer, reader):
    worker = worker_factory()
    alerts = reader(worker.topic("alerts"))
    make_traffic(worker, producer)
    alerts.wait_for(lambda v: len(v) >= 1, timeout_s=10)
    text = scrape(worker)
    samples = {}
    for line in text.splitlines():
        if line.startswith("streamproc_faust_event_runtime_seconds"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    count = samples["streamproc_faust_event_runtime_seconds_count"]
    assert count >= 4, "one observation per processed event"
    # Bounds are Faust's 5 ms … 10 s buckets, now written in seconds.
    assert 'streamproc_faust_event_runtime_seconds_bucket{le="0.005"}' in samples
    assert 'streamproc_faust_event_runtime_seconds_bucket{le="10.0"}' in samples
    # The sum must be in the buckets' unit (seconds). "mean < 1" would also pass on a sub-millisecond
    # sum left in milliseconds; the buckets pin it instead: every observation lies in its bucket
    # (lower bound, le], so  sum(count_i * lower_i) <= sum <= sum(count_i * le_i).
    total = samples["streamproc_faust_event_runtime_seconds_sum"]
    buckets = sorted(
        (float(name.split('le="')[1].rstrip('"}')), value)
        for name, value in samples.items() if "_bucket{" in name and 'le="+Inf"' not in name
    )
    assert samples['streamproc_faust_event_runtime_seconds_bucket{le="+Inf"}'] == count
    assert buckets[-1][1] == count, "every event ran in under 10 s"
    lowest = highest = 0.0
    previous_le, previous_cumulative = 0.0, 0.0
    for le, cumulative in buckets:
        in_bucket = cumulative - previous_cumulative
        lowest += in_bucket * previous_le
        highest += in_bucket * le
        previous_le, previous_cumulative = le, cumulative
    assert 0 < total and lowest <= total <= highest, (
        f"sum {total} is not in the unit of the buckets: observations imply {lowest:.4f}..{highest:.4f} s")


@pytest.mark.broker
@pytest.mark.slow
def test_prometheus_server_scrapes_a_worker_and_evaluates_the_rules(worker_factory, producer, tmp_path):
    worker = worker_factory()
    target = f"127.0.0.1:{worker.settings.web_port}"
    with PrometheusServer(tmp_path, [target]) as prometheus:
        up = prometheus.wait_for('up{job="streamproc"}', lambda r: r and r[0]["value"][1] == "1")
        assert up[0]["metric"]["instance"] == target
        make_traffic(worker, producer)
        # The gauge the worker sets from its hold timer, read back through Prometheus' HTTP API.
        result = prometheus.wait_for("streamproc_active_calls", lambda r: r and float(r[0]["value"][1]) == 2)
        assert result[0]["metric"] == {"__name__": "streamproc_active_calls", "instance": target, "job": "streamproc"}
        prometheus.wait_for("streamproc_calls_on_hold", lambda r: r and float(r[0]["value"][1]) == 1)
        alerts = prometheus.wait_for('streamproc_alerts_total{kind="hold_breach"}', lambda r: len(r) >= 1)
        assert {r["metric"]["severity"] for r in alerts} <= {"warning", "critical"}
        prometheus.wait_for('streamproc_dead_letters_total{reason="malformed_json"}', lambda r: r and r[0]["value"][1] == "1")
        letters = [(r["metric"]["reason"], r["value"][1]) for r in prometheus.query("streamproc_dead_letters_total")]
        assert letters == [("malformed_json", "1")], "the held call's events were all accepted"
        holds = prometheus.wait_for("streamproc_hold_duration_seconds_count", lambda r: len(r) >= 1)
        assert [(h["metric"]["queue"], h["value"][1]) for h in holds] == [("other", "1")], "queues not in the rules are 'other'"
        # The shipped rules load and evaluate against real series without errors.
        prometheus.wait_for("topic:streamproc_consumer_lag:sum", lambda r: len(r) >= 1)
        deadline = time.monotonic() + 10
        while True:
            groups = prometheus.api("rules")["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            if all(rule.get("lastEvaluation", "").startswith("20") and rule["health"] != "unknown" for rule in rules) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert {group["name"] for group in groups} >= {"streamproc-recording", "streamproc-workers", "streamproc-input"}
        assert [(r["name"], r["health"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []
        assert not any(r["name"] == "StreamprocWorkerDown" and r["alerts"] for r in rules if r["type"] == "alerting")
