"""Escalation cues that are not a single phrase: persistent negative sentiment.

The phrase-based escalation cues (manager/supervisor request, cancel or competitor,
legal/regulator threat, repeat contact) are lexicon rules with ``kind: escalation`` in
the rules file, matched by :mod:`streamproc.detect.phrases` (negation-aware: "I'm not
going to cancel" is not churn intent). Their default lexicons are in
``streamproc/data/default_rules.yaml``.

Sentiment: one angry sentence is not an escalation; a customer who stays negative is.
Every *final* utterance of the targeted speaker (of at least ``min_words`` words) gets a
VADER compound score in [-1, 1]. A rolling window of the last ``window`` scores fires when

* at least ``min_utterances`` are in it,
* the mean is at or below ``threshold``,
* at least ``min_negative`` scores are at or below ``negative_below``, and
* the trend (least-squares slope per utterance) is at most ``max_trend`` — the customer is
  not recovering ("…but thanks, that fixed it" breaks the streak).

After firing, the window is cleared: another alert needs a fresh run of negative
utterances (and the rule's cooldown).
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache

from ..rules import SentimentRule


#: Contact-center words VADER's general lexicon lacks (valence on VADER's -4..4 scale).
DOMAIN_LEXICON = {
    "nightmare": -2.6, "scam": -2.8, "scammed": -2.8, "unacceptable": -2.4, "useless": -2.3,
    "incompetent": -2.5, "joke": -1.0, "ripoff": -2.6, "fedup": -2.2, "shambles": -2.4, "appalling": -2.8,
}
#: Idioms rewritten into one lexicon word before scoring.
_IDIOMS = (
    (re.compile(r"\bfed up\b", re.I), "fedup"),
    (re.compile(r"\bripped off\b|\brip[- ]off\b", re.I), "ripoff"),
    (re.compile(r"\bhad enough\b", re.I), "fedup"),
    (re.compile(r"\bsick (and tired )?of\b", re.I), "fedup of"),
)


@lru_cache(maxsize=1)
def _analyzer():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    analyzer.lexicon.update(DOMAIN_LEXICON)
    return analyzer


def sentiment_score(text: str) -> float:
    """VADER compound score of ``text`` in [-1, 1] (English lexicon plus :data:`DOMAIN_LEXICON`)."""
    for pattern, replacement in _IDIOMS:
        text = pattern.sub(replacement, text)
    return float(_analyzer().polarity_scores(text)["compound"])


def slope(values: list[float]) -> float:
    """Least-squares slope of ``values`` against 0..n-1 (0 for fewer than 2 values)."""
    n = len(values)
    if n < 2:
        return 0.0
    mean_x = (n - 1) / 2
    mean_y = sum(values) / n
    num = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values))
    den = sum((i - mean_x) ** 2 for i in range(n))
    return num / den


@dataclass
class ScoredUtterance:
    score: float
    text: str
    start_s: float | None
    end_s: float | None
    utterance: int


@dataclass
class SentimentVerdict:
    mean: float
    trend: float
    negatives: int
    window: list[ScoredUtterance]


@dataclass
class SentimentWindow:
    """Rolling window of scored utterances for one (call, rule)."""

    rule: SentimentRule
    items: deque = field(default_factory=deque)

    def add(self, item: ScoredUtterance) -> SentimentVerdict | None:
        """Add one scored utterance; return a verdict when the rule fires (and reset the window)."""
        self.items.append(item)
        while len(self.items) > self.rule.window:
            self.items.popleft()
        if len(self.items) < self.rule.min_utterances:
            return None
        scores = [i.score for i in self.items]
        mean = sum(scores) / len(scores)
        negatives = sum(1 for s in scores if s <= self.rule.negative_below)
        trend = slope(scores)
        if mean > self.rule.threshold or negatives < self.rule.min_negative:
            return None
        if self.rule.max_trend is not None and trend > self.rule.max_trend:
            return None
        verdict = SentimentVerdict(mean, trend, negatives, list(self.items))
        self.items.clear()
        return verdict
