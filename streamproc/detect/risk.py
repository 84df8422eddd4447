"""The live call risk score: one number per call, 0–100, from what the detectors saw so far.

    score = min(100, hold + sentiment + escalation + abuse + repeat_contact + dead_air + missed_window)

    hold           = w.hold × min(1.5, hold_s / hold_full_s)      hold_s: all holds of the call so far
    sentiment      = w.sentiment × min(1, max(0, −slope) / sentiment_slope_full)
                                                                  slope: least-squares slope (compound per
                                                                  utterance) of the VADER compound scores of the
                                                                  customer's last ``sentiment_window`` finals
                                                                  (≥ 3 words); 0 with fewer than 3 of them
    escalation     = w.escalation × min(cap, n)                   n: escalation alerts (manager, churn, legal)
    abuse          = w.abuse × min(cap, n)                        customer_abuse and rude_phrase alerts
    repeat_contact = w.repeat_contact × [any repeat-contact escalation alert]
    dead_air       = w.dead_air × min(cap, n)                     dead_air alerts
    missed_window  = w.missed_window × min(cap, n)                missed_phrase / window_phrase alerts

The weights are in the rules file (``detection.risk``). A ``call_at_risk`` alert goes out
when the score first reaches ``threshold``, and again at each further 20 points (occurrences
0, 1, 2 …), with every factor's points in ``evidence.factors``. No clock here: the engine
passes hold seconds and alerts in.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .rules_ext import RiskRule

STEP = 20.0  # points above the threshold at which a call_at_risk alert goes out again


@dataclass
class RiskState:
    sentiments: deque = field(default_factory=lambda: deque(maxlen=50))
    counts: dict[str, int] = field(default_factory=dict)  # factor → alerts seen
    seen_alerts: set[str] = field(default_factory=set)
    hold_s: float = 0.0
    levels_fired: dict[str, int] = field(default_factory=dict)  # rule → alerts sent (levels crossed)
    last_score: float = 0.0
    last: tuple[str, float, dict[str, float]] | None = None  # (rule id, threshold, factors) of last_score
    published: float | None = None  # the whole-point score last handed out by take_update()

    def add_sentiment(self, score: float) -> None:
        self.sentiments.append(score)

    def add_alert(self, alert, category: str | None = None) -> None:
        """Count an alert of this call (each alert id once: partial/final re-sends do not add up)."""
        if alert.alert_id in self.seen_alerts:
            return
        factor = factor_of(alert, category)
        if factor is None:
            return
        self.seen_alerts.add(alert.alert_id)
        self.counts[factor] = self.counts.get(factor, 0) + 1

    def factors(self, rule: RiskRule) -> dict[str, float]:
        w = rule.weights
        cap = rule.cap_per_cue
        slope = sentiment_slope(list(self.sentiments)[-rule.sentiment_window :])
        points = {
            "hold": w.hold * min(1.5, self.hold_s / rule.hold_full_s),
            "sentiment": w.sentiment * min(1.0, max(0.0, -slope) / rule.sentiment_slope_full),
            "escalation": w.escalation * min(cap, self.counts.get("escalation", 0)),
            "abuse": w.abuse * min(cap, self.counts.get("abuse", 0)),
            "repeat_contact": w.repeat_contact * (1 if self.counts.get("repeat_contact", 0) else 0),
            "dead_air": w.dead_air * min(cap, self.counts.get("dead_air", 0)),
            "missed_window": w.missed_window * min(cap, self.counts.get("missed_window", 0)),
        }
        return {k: round(v, 1) for k, v in points.items()}

    def score(self, rule: RiskRule) -> tuple[float, dict[str, float]]:
        factors = self.factors(rule)
        return round(min(100.0, sum(factors.values())), 1), factors

    def crossings(self, rule: RiskRule) -> tuple[float, dict[str, float], list[int]]:
        """The score now and the alert levels (occurrences) newly crossed."""
        score, factors = self.score(rule)
        self.last_score = score
        self.last = (rule.id, rule.threshold, factors)
        fired = self.levels_fired.get(rule.id, 0)
        new = []
        while score >= rule.threshold + fired * STEP and rule.threshold + fired * STEP <= 100:
            new.append(fired)
            fired += 1
        self.levels_fired[rule.id] = fired
        return score, factors, new


def take_update(state: RiskState) -> tuple[str, float, float, dict[str, float]] | None:
    """(rule id, score, threshold, factors) when the score moved by a whole point since the last one taken.

    Whole points keep the ``calls.risk`` topic quiet: the hold factor grows every second."""
    if state.last is None:
        return None
    score = round(state.last_score)
    if state.published is not None and score == state.published:
        return None
    state.published = score
    rule_id, threshold, factors = state.last
    return rule_id, state.last_score, threshold, factors


def sentiment_slope(scores: list[float]) -> float:
    """Least-squares slope of the scores against their index (change per utterance); 0 for fewer than 3.

    A trend, not a mean: a customer who is getting angrier raises the risk even before the mean is
    negative, and one who was angry and is calming down does not. Persistent negativity at a steady
    level is the ``negative_sentiment`` detector's job."""
    n = len(scores)
    if n < 3:
        return 0.0
    mean_x = (n - 1) / 2
    mean_y = sum(scores) / n
    return sum((x - mean_x) * (y - mean_y) for x, y in enumerate(scores)) / sum((x - mean_x) ** 2 for x in range(n))


def factor_of(alert, category: str | None = None) -> str | None:
    kind = str(alert.kind)
    if kind == "escalation":
        return "repeat_contact" if category == "repeat_contact" else "escalation"
    if kind in ("customer_abuse", "rude_phrase"):
        return "abuse"
    if kind == "dead_air":
        return "dead_air"
    if kind in ("missed_phrase", "window_phrase"):
        return "missed_window"
    return None
