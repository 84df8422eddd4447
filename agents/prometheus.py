"""``/metrics`` on the worker's web server: streamproc's metrics and Faust's, lint-clean.

Replaces ``faust.sensors.prometheus.setup_prometheus_sensors``: the same Faust monitor,
but its metrics live in a private registry and are served through
:class:`streamproc.exposition.ConformingFaustMetrics` (millisecond histograms renamed to
``..._seconds`` and scaled), so ``promtool check metrics`` passes on a live scrape.
"""

from __future__ import annotations

from aiohttp import web as aioweb
from faust import web
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from streamproc.exposition import ConformingFaustMetrics

FAUST_PREFIX = "streamproc_faust"


def setup(app, pattern: str = "/metrics") -> None:
    faust_registry = CollectorRegistry(auto_describe=True)
    app.monitor = PrometheusMonitor(metrics=FaustMetrics.create(faust_registry, FAUST_PREFIX))
    REGISTRY.register(ConformingFaustMetrics(faust_registry, FAUST_PREFIX))

    @app.page(pattern)
    async def metrics(self: web.View, request: web.Request) -> web.Response:
        return aioweb.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})
