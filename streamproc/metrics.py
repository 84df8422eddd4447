"""Every Prometheus metric streamproc exports, in one place.

They live in prometheus-client's default registry, which Faust's Prometheus sensor
serves on the worker's ``/metrics`` alongside its own consumer/producer/commit/rebalance
metrics. Labels are bounded: never a call id, agent id or free text. Queue labels are
limited to the queues named in the rules file (others are reported as ``other``).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
HOLD_BUCKETS = (5, 15, 30, 60, 90, 120, 180, 300, 600, 1200, 1800, 3600)

ACTIVE_CALLS = Gauge("streamproc_active_calls", "Calls in progress owned by this worker (including those on hold).")
CALLS_ON_HOLD = Gauge("streamproc_calls_on_hold", "Calls currently on hold owned by this worker.")
HOLD_DURATION = Histogram(
    "streamproc_hold_duration_seconds",
    "Duration of completed holds, in event time.",
    ["queue"],
    buckets=HOLD_BUCKETS,
)
EVENTS = Counter("streamproc_call_events_total", "Call events accepted, by type.", ["type"])
DUPLICATE_EVENTS = Counter("streamproc_duplicate_events_total", "Call events dropped as duplicates (same event id).")
ALERTS = Counter("streamproc_alerts_total", "Alerts emitted, by kind and severity.", ["kind", "severity"])
ALERT_LATENCY = Histogram(
    "streamproc_alert_latency_seconds",
    "Processing latency: the moment the alert condition became true (its source reached us) until the alert was sent.",
    ["kind"],
    buckets=LATENCY_BUCKETS,
)
DEAD_LETTERS = Counter("streamproc_dead_letters_total", "Inputs sent to the dead-letter topic, by reason.", ["reason"])
TICKS = Counter("streamproc_hold_timer_ticks_total", "Deadline ticks the hold timer sent to the events agent.")
TIMER_LAG = Histogram(
    "streamproc_hold_timer_lag_seconds",
    "How late the hold timer noticed a due deadline (timer scheduling delay).",
    buckets=LATENCY_BUCKETS,
)
RULES_LOADED = Gauge("streamproc_rules_loaded_timestamp_seconds", "Unix time the rules in force were loaded.")


def queue_label(queue: str | None, known_queues: frozenset[str]) -> str:
    """Bounded label value for a queue name."""
    if not queue:
        return "none"
    return queue if queue in known_queues else "other"
