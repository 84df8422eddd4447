"""The Grafana dashboard and the alert rules use metrics the worker really exports, in queries
Prometheus really runs."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.conftest import ROOT, http_get
from tests.integration.test_prometheus import PROMETHEUS_DIR, PrometheusServer, make_traffic

GRAFANA_DIR = ROOT / "docker" / "grafana"
METRICS_DOC = (ROOT / "docs" / "metrics.md").read_text()
DASHBOARD = json.loads((GRAFANA_DIR / "dashboards" / "streamproc.json").read_text())
DATASOURCES = yaml.safe_load((GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yaml").read_text())
RULES = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())

#: Series Prometheus makes itself for every target.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset", "inf", "nan"}
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (strings, matchers, ranges and grouping labels removed first)."""
    expr = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        name = match.group(0)
        if expr[match.end():].lstrip().startswith("("):
            continue  # a function or an aggregation
        if name.lower() not in PROMQL_WORDS:
            names.add(name)
    return names


def dashboard_panels() -> list[dict]:
    panels = []
    for panel in DASHBOARD["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def dashboard_exprs() -> list[str]:
    exprs = [target["expr"] for panel in dashboard_panels() for target in panel.get("targets", [])]
    for variable in DASHBOARD["templating"]["list"]:
        if variable["type"] == "query":
            exprs.append(as_query(variable["definition"]))  # label_values(metric, label): the metric
    return exprs


def rule_exprs() -> list[str]:
    return [rule["expr"] for group in RULES["groups"] for rule in group["rules"]]


def recorded_names() -> set[str]:
    return {rule["record"] for group in RULES["groups"] for rule in group["rules"] if "record" in rule}


def families(scrape: str) -> dict[str, str]:
    """Metric family -> type, from the # TYPE lines (present even before a labelled metric is first used)."""
    found = {}
    for line in scrape.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            found[name] = kind
    return found


def is_exported(name: str, exported: dict[str, str]) -> bool:
    if name in exported:
        return True
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and exported.get(name[: -len(suffix)]) in ("histogram", "summary"):
            return True
    return False


def as_query(expr: str) -> str:
    """A Grafana expression as Prometheus runs it: the template variables filled in."""
    expr = expr.replace("$__rate_interval", "1m").replace("$__interval", "1m").replace("$queue", ".*")
    if expr.startswith("label_values("):
        metric = expr[len("label_values("):].split(",")[0].strip()
        return metric
    return expr


# --------------------------------------------------------------------------- static checks


def test_metric_name_extraction():
    expr = 'histogram_quantile(0.9, sum by (le, queue) (rate(streamproc_hold_duration_seconds_bucket{queue=~"$queue", le!="x"}[$__rate_interval]))) > on (queue) group_left up'
    assert metric_names(expr) == {"streamproc_hold_duration_seconds_bucket", "up"}
    assert metric_names("sum(a_total) / ignoring (x) b:rec:rate5m and c") == {"a_total", "b:rec:rate5m", "c"}


def test_dashboard_is_well_formed_and_uses_the_provisioned_datasource():
    [datasource] = DATASOURCES["datasources"]
    variable = next(v for v in DASHBOARD["templating"]["list"] if v["type"] == "datasource")
    assert variable["query"] == datasource["type"] == "prometheus"
    assert variable["current"]["value"] == datasource["uid"]
    panels = dashboard_panels()
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] in ("${datasource}", datasource["uid"]), panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"] == panel["datasource"], panel["title"]
    titles = " | ".join(panel["title"].lower() for panel in panels)
    for topic in (
        "active calls", "on hold", "hold time percentiles", "alerts by kind and severity", "dead letters", "consumer lag",
        "transcription real-time factor", "transcription lag",
    ):
        assert topic in titles


def test_no_panel_overlaps_another():
    cells = {}
    for panel in dashboard_panels():
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


# --------------------------------------------------------------------------- against a live worker


def test_every_metric_defined_in_code_is_documented():
    from prometheus_client.metrics import MetricWrapperBase

    from streamproc import metrics

    defined = {m._name + ("_total" if m._type == "counter" else "") for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)}
    assert len(defined) >= 20
    undocumented = sorted(name for name in defined if f"`{name}`" not in METRICS_DOC)
    assert undocumented == [], f"add these to docs/metrics.md: {undocumented}"


#: Families a freshly started worker registers (# HELP/# TYPE) but has no sample of until the
#: input that feeds them flowed: the labelled ones get a series at their first label value.
APPEAR_AFTER_TRAFFIC = {
    "streamproc_hold_duration_seconds": "a hold ended",
    "streamproc_alerts_total": "an alert was sent",
    "streamproc_alert_latency_seconds": "an alert was sent",
    "streamproc_dead_letters_total": "an input was dead-lettered",
    "streamproc_call_events_total": "a call event was accepted",
    "streamproc_transcription_lag_seconds": "audio flowed and a transcript segment was sent",
    "streamproc_transcript_segments_total": "audio flowed and a transcript segment was sent",
    "streamproc_audio_seconds_total": "audio flowed",
    "streamproc_asr_decode_seconds_total": "audio was decoded",
    "streamproc_asr_gated_seconds_total": "a Vosk model decoded audio with the speech gate on",
    "streamproc_vosk_recognizers": "a Vosk model was loaded (an English worker has no recogniser pool)",
    "streamproc_detection_segments_total": "a transcript reached the detectors",
    "streamproc_faust_topic_partition_end_offset": "the agents consumed a record",
    "streamproc_faust_topic_partition_offset_commited": "the agents committed an offset",
    "streamproc_dashboard_records_total": "the dashboard reader started",
}


def family_of(name: str, exported: dict[str, str]) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and exported.get(name[: -len(suffix)]) in ("histogram", "summary"):
            return name[: -len(suffix)]
    return name


def sampled(scrape: str) -> set[str]:
    """Metric names with at least one sample line (histogram/counter suffixes stripped)."""
    names = set()
    for line in scrape.splitlines():
        if line and not line.startswith("#"):
            name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
            names.add(name)
            for suffix in HISTOGRAM_SUFFIXES:
                if name.endswith(suffix):
                    names.add(name[: -len(suffix)])
    return names


@pytest.mark.broker
def test_every_metric_in_the_dashboard_and_rules_is_exported_by_a_worker(worker_factory):
    worker = worker_factory()
    status, body = http_get(worker.base_url + "/metrics")
    assert status == 200
    scrape = body.decode()
    exported = families(scrape)
    referenced = set().union(*(metric_names(expr) for expr in dashboard_exprs() + rule_exprs()))
    assert len(referenced) >= 20, referenced
    own = referenced - SYNTHETIC - recorded_names()
    missing = sorted(name for name in own if not is_exported(name, exported))
    assert missing == [], f"the dashboard or the rules use metrics no worker exports: {missing}"
    # Series without samples yet (no traffic in this test) are only the ones that need input first.
    used = {family_of(name, exported) for name in own}
    waiting = used - sampled(scrape)
    unexpected = sorted(waiting - set(APPEAR_AFTER_TRAFFIC))
    assert unexpected == [], f"registered but without samples on an idle worker: {unexpected}"
    # Every streamproc family the worker serves is documented.
    undocumented = sorted(
        name for name in exported if name.startswith("streamproc_") and not name.endswith("_created") and f"`{name}`" not in METRICS_DOC
    )
    assert undocumented == [], f"add these to docs/metrics.md: {undocumented}"
    stale = sorted(
        name for name in set(re.findall(r"`(streamproc_\w+)`", METRICS_DOC)) if not name.endswith("_") and name not in exported
    )
    assert stale == [], f"docs/metrics.md lists metrics no worker serves: {stale}"


@pytest.mark.broker
@pytest.mark.slow
def test_every_dashboard_query_runs_on_prometheus(worker_factory, producer, reader, tmp_path):
    worker = worker_factory()
    alerts = reader(worker.topic("alerts"))
    with PrometheusServer(tmp_path, [f"127.0.0.1:{worker.settings.web_port}"]) as prometheus:
        make_traffic(worker, producer)
        alerts.wait_for(lambda v: len(v) >= 1, timeout_s=10)
        prometheus.wait_for('streamproc_alerts_total{kind="hold_breach"}', lambda r: len(r) >= 1)
        prometheus.wait_for("streamproc_hold_duration_seconds_count", lambda r: len(r) >= 1)
        empty = []
        for expr in dashboard_exprs():
            result = prometheus.query(as_query(expr))  # fails on a PromQL error
            if not result:
                empty.append(expr)
        # With one call on hold, one completed hold, an alert and a dead letter, the calls, holds and
        # alerts panels have data (rates need two scrapes: a few panels may still be empty).
        for must_have_data in ("sum(streamproc_active_calls)", "sum(streamproc_calls_on_hold)", 'sum(up{job="streamproc"})'):
            assert must_have_data not in empty
