"""Faust's sensor metrics, re-exposed under names that follow the Prometheus conventions.

Faust's Prometheus sensor (faust.sensors.prometheus) observes every latency histogram in
*milliseconds* and names them ``..._latency`` or ``..._runtime_ms``. ``promtool check
metrics`` rejects the abbreviated unit (``_ms``), and the others are worse: a histogram
named ``producer_send_latency`` whose values are milliseconds reads as seconds on every
Grafana panel. Instead of filtering them out, the worker keeps Faust's metrics in a
private registry and serves them through :class:`ConformingFaustMetrics`, which renames
each millisecond histogram to ``..._seconds`` and scales its bucket bounds and sum by
1/1000 (counts are unchanged), so the numbers keep their meaning. Everything else passes
through untouched. docs/metrics.md lists the resulting names.
"""

from __future__ import annotations

from typing import Iterable, Iterator

from prometheus_client.core import Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

#: Faust histogram (without the prefix) -> (new name, help). All are observed in milliseconds.
MILLISECOND_HISTOGRAMS: dict[str, tuple[str, str]] = {
    "events_runtime_ms": ("event_runtime_seconds", "Time an agent spent processing one stream event."),
    "producer_send_latency": ("producer_send_latency_seconds", "Producer send latency (buffered to acknowledged)."),
    "producer_error_send_latency": ("producer_error_send_latency_seconds", "Time until a failed producer send failed."),
    "assign_latency": ("assign_latency_seconds", "Partition assignment latency."),
    "rebalance_done_consumer_latency": (
        "rebalance_done_consumer_latency_seconds",
        "Time until the consumer replied that the rebalance is done.",
    ),
    "rebalance_done_latency": ("rebalance_done_latency_seconds", "Time until a rebalance finished."),
    "http_latency": ("http_latency_seconds", "Web server response latency."),
    "consumer_commit_latency": ("consumer_commit_latency_seconds", "Consumer offset commit latency."),
}


def _scale_le(value: str) -> str:
    return value if value == "+Inf" else floatToGoString(float(value) / 1000.0)


class ConformingFaustMetrics(Collector):
    """Collector over Faust's private registry that converts its millisecond histograms to seconds."""

    def __init__(self, source: CollectorRegistry, prefix: str):
        self.source = source
        self.prefix = prefix.rstrip("_") + "_"
        self.renames = {
            self.prefix + old: (self.prefix + new, doc) for old, (new, doc) in MILLISECOND_HISTOGRAMS.items()
        }

    def collect(self) -> Iterator[Metric]:
        for family in self.source.collect():
            yield self.convert(family)

    def describe(self) -> Iterable[Metric]:
        # Names only, so the default registry can refuse a collision with one of our own metrics.
        return list(self.collect())

    def convert(self, family: Metric) -> Metric:
        rename = self.renames.get(family.name)
        if rename is None or family.type != "histogram":
            return family
        new_name, documentation = rename
        converted = Metric(new_name, documentation, "histogram")
        for sample in family.samples:
            suffix = sample.name[len(family.name):]
            labels, value = dict(sample.labels), sample.value
            if suffix == "_bucket":
                labels["le"] = _scale_le(labels["le"])
            elif suffix == "_sum":
                value = value / 1000.0
            converted.add_sample(new_name + suffix, labels, value, sample.timestamp, sample.exemplar)
        return converted
