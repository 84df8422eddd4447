"""Prometheus alerts, delivered: the shipped Alertmanager config (docker/alertmanager/alertmanager.yml)
checked by amtool, and the real Debian Prometheus + Alertmanager, scraping a real worker, delivering the
shipped rules' alerts to webhooks routed by severity. docs/metrics.md has a runbook entry per alert."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from streamproc.broker import free_port
from tests.conftest import ROOT, send
from tests.daemons import Daemon
from tests.integration.test_prometheus import PROMETHEUS_DIR, PrometheusServer

ALERTMANAGER_CONFIG = ROOT / "docker" / "alertmanager" / "alertmanager.yml"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
AMTOOL = "/usr/bin/amtool"
METRICS_DOC = ROOT / "docs" / "metrics.md"


def amtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([AMTOOL, *args], capture_output=True, text=True, timeout=60)


def alerting_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


# --------------------------------------------------------------------------- static checks


def test_amtool_accepts_the_shipped_config():
    result = amtool("check-config", str(ALERTMANAGER_CONFIG))
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize("labels, receiver", [
    (["alertname=StreamprocWorkerDown", "severity=critical"], "ops-critical"),
    (["alertname=StreamprocDeadLettersHigh", "severity=warning", "reason=malformed_json"], "ops-warning"),
    (["alertname=SomethingElse"], "ops-default"),
])
def test_routes_by_severity(labels, receiver):
    result = amtool("config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}", *labels)
    assert result.returncode == 0 and result.stdout.strip() == receiver, result.stdout + result.stderr


def test_every_rule_has_a_routed_severity_and_a_runbook_entry():
    doc = METRICS_DOC.read_text()
    section = doc[doc.index("\n## Alerts"):]
    documented = set(re.findall(r"^\| `(Streamproc\w+)` \| (critical|warning) \|", section, re.M))
    rules = {(rule["alert"], rule["labels"]["severity"]) for rule in alerting_rules()}
    assert rules <= documented, f"alerts without a runbook line in docs/metrics.md#alerts: {rules - documented}"
    assert {name for name, _ in documented} <= {name for name, _ in rules}, "docs list an alert the rules do not have"


def test_compose_runs_alertmanager_with_this_config_and_prometheus_sends_to_it():
    services = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())["services"]
    alertmanager = services["alertmanager"]
    assert "./alertmanager:/etc/alertmanager:ro" in alertmanager["volumes"]
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in alertmanager["command"]
    assert all(port.startswith("127.0.0.1:") for port in alertmanager["ports"])
    prometheus = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    [manager] = prometheus["alerting"]["alertmanagers"]
    assert manager["static_configs"] == [{"targets": ["alertmanager:9093"]}]
    assert "alertmanager" in services["prometheus"]["depends_on"]
    # The example receivers' host is the example webhook service.
    hosts = {re.match(r"https?://([^:/]+)", hook["url"]).group(1)  # type: ignore[union-attr]
             for receiver in yaml.safe_load(ALERTMANAGER_CONFIG.read_text())["receivers"]
             for hook in receiver["webhook_configs"]}
    assert hosts == {"alert-webhook"} and "alert-webhook" in services


# --------------------------------------------------------------------------- the real thing


class WebhookSink:
    """What a receiver gets: (path, JSON body) of every POST, on 127.0.0.1."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict]] = []
        self.changed = threading.Condition()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with sink.changed:
                    sink.posts.append((self.path, body))
                    sink.changed.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "WebhookSink":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def alerts(self) -> list[tuple[str, str, dict]]:
        """(path, receiver, alert) of every alert received."""
        with self.changed:
            return [(path, body["receiver"], alert) for path, body in self.posts for alert in body["alerts"]]

    def wait_for(self, predicate: Callable[[tuple[str, str, dict]], bool], timeout_s: float) -> tuple[str, str, dict]:
        deadline = time.monotonic() + timeout_s
        with self.changed:
            while True:
                for item in self.alerts():
                    if predicate(item):
                        return item
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"not received; got {[(p, a['labels']) for p, _, a in self.alerts()]}"
                self.changed.wait(remaining)


class AlertmanagerServer(Daemon):
    """The real Alertmanager (Debian prometheus-alertmanager) with the shipped routes, its receivers
    pointed at ``sink`` (same paths), grouping waits cut to a second; bound to 127.0.0.1, no cluster port."""

    name = "alertmanager"

    def __init__(self, workdir: Path, sink: WebhookSink):
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.port = free_port()
        config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
        for route in [config["route"], *config["route"].get("routes", [])]:
            for setting in ("group_wait", "group_interval"):
                if setting in route or route is config["route"]:
                    route[setting] = "1s"
        for receiver in config["receivers"]:
            for hook in receiver["webhook_configs"]:
                hook["url"] = sink.url + re.sub(r"^https?://[^/]+", "", hook["url"])
        self.config_path = workdir / "alertmanager.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "alertmanager.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ready_url(self) -> str:
        return f"http://{self.address}/-/ready"

    def command(self) -> list[str]:
        return [ALERTMANAGER, f"--config.file={self.config_path}", f"--storage.path={self.workdir / 'data'}",
                f"--web.listen-address={self.address}", "--cluster.listen-address=", "--log.level=warn"]


def immediate_rules(path: Path) -> Path:
    """The shipped rules with every ``for:`` removed: an alert fires on its first true evaluation.
    Expressions, labels and annotations are the shipped ones."""
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("for", None)
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return path


@pytest.mark.broker
@pytest.mark.slow
def test_alerts_reach_the_webhook_routed_by_severity(worker_factory, producer, tmp_path):
    worker = worker_factory(audio_enabled="false")
    live = f"127.0.0.1:{worker.settings.web_port}"
    down = f"127.0.0.1:{free_port()}"  # a worker that is not running: StreamprocWorkerDown (critical)
    rules = immediate_rules(tmp_path / "alerts.yml")
    with WebhookSink() as sink, AlertmanagerServer(tmp_path / "alertmanager", sink) as alertmanager, \
            PrometheusServer(tmp_path, [live, down], rule_files=[rules], alertmanager=alertmanager.address) as prometheus:
        prometheus.wait_for(f'up{{instance="{live}"}}', lambda r: r and r[0]["value"][1] == "1")
        # Dead letters climbing: a first poison record makes the series exist, then a burst raises its
        # 5-minute rate past the rule's 0.1/s (rate() counts only increases Prometheus saw).
        events = worker.topic("events")
        send(producer, events, "poison-0", b"{not json")
        prometheus.wait_for('streamproc_dead_letters_total{reason="malformed_json"}', lambda r: r and r[0]["value"][1] == "1")
        for number in range(1, 101):
            producer.send(events, key=f"poison-{number}".encode(), value=b"{not json")
        producer.flush()

        path, receiver, alert = sink.wait_for(lambda item: item[2]["labels"]["alertname"] == "StreamprocDeadLettersHigh", 90)
        assert (path, receiver, alert["status"]) == ("/warning", "ops-warning", "firing")
        assert alert["labels"] == {"alertname": "StreamprocDeadLettersHigh", "severity": "warning", "reason": "malformed_json"}
        assert "malformed_json" in alert["annotations"]["summary"] and "calls.deadletter" in alert["annotations"]["description"]

        path, receiver, alert = sink.wait_for(lambda item: item[2]["labels"]["alertname"] == "StreamprocWorkerDown", 60)
        assert (path, receiver, alert["status"]) == ("/critical", "ops-critical", "firing")
        assert alert["labels"] == {"alertname": "StreamprocWorkerDown", "severity": "critical", "instance": down,
                                   "job": "streamproc"}
        assert alert["annotations"]["summary"] == f"streamproc worker {down} is down"
        # The live worker is not reported down, and one worker up means calls are monitored.
        received = {(a["labels"]["alertname"], a["labels"].get("instance")) for _, _, a in sink.alerts()}
        assert ("StreamprocWorkerDown", live) not in received
        assert not any(name == "StreamprocNoWorkers" for name, _ in received)
