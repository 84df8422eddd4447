"""Health endpoints on the worker's web server (the same server that serves /metrics).

``/healthz``: the process is up. ``/ready``: partitions are assigned, the state table is
recovered and, when audio is enabled, the speech model is loaded and has decoded a warm-up
chunk, so input is being processed (tests, the demo and orchestrators wait on it; /metrics
answers earlier, before the consumer group has formed).
"""

from __future__ import annotations

from faust import web

from .app import app, settings


def readiness() -> dict:
    from .audio import state as audio_state

    recovery = app.tables.recovery
    assigned = sorted(f"{tp.topic}[{tp.partition}]" for tp in app.assignor.assigned_actives())
    return {
        "recovered": recovery.completed.is_set(),
        "rebalancing": bool(app.rebalancing),
        "assigned_partitions": len(assigned),
        "speech_ready": (not settings.audio_enabled) or (audio_state.ready is not None and audio_state.ready.is_set()),
    }


@app.page("/healthz")
async def healthz(self: web.View, request: web.Request) -> web.Response:
    return self.json({"status": "ok"})


@app.page("/ready")
async def ready(self: web.View, request: web.Request) -> web.Response:
    state = readiness()
    is_ready = state["recovered"] and not state["rebalancing"] and state["assigned_partitions"] > 0 and state["speech_ready"]
    return self.json(state | {"ready": is_ready}, status=200 if is_ready else 503)
