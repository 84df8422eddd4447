"""Rules-file types of the semantic and window detectors: semantic options, said/not-said windows, the risk score.

They live here (not in streamproc/rules.py) so that the schema module only gains three
fields; :class:`streamproc.rules.DetectionRules` holds them as ``semantic``, ``windows`` and
``risk``. Validation errors carry the file's line numbers like every other rule
(streamproc.rules.parse_rules). docs/rules.md documents the fields.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from ..schemas import Severity
from ..yamlfile import Strict as _Strict  # the one strict base of every rules-file type


def _check_phrase(text: str) -> str:
    from .phrases import PhraseSyntaxError, compile_phrase

    try:
        compile_phrase(text)
    except PhraseSyntaxError as exc:
        raise ValueError(str(exc)) from None
    return text


#: Field types shared with streamproc/rules.py (defined here: rules.py imports this module).
PhraseText = Annotated[str, Field(min_length=1, max_length=300), AfterValidator(_check_phrase)]
ExampleText = Annotated[str, Field(min_length=1, max_length=300)]
RuleId = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")]
_Phrase, _Example, _RuleId = PhraseText, ExampleText, RuleId
_Speaker = Literal["agent", "customer", "either"]


def speaker_allows(target: str, speaker: str) -> bool:
    return target == "either" or target == str(speaker)


class SemanticOptions(_Strict):
    """Shared settings of the semantic intents (streamproc/detect/semantic.py)."""

    threshold: float = Field(0.5, gt=0, lt=1, description="Default probability at or above which an intent fires.")
    min_words: int = Field(3, ge=1, description="Shorter partials are not scored (too little meaning yet).")
    min_words_final: int = Field(2, ge=1, description="Shorter finals are not scored ('cancel everything' is 2 words).")
    window_words: int = Field(
        0, ge=0, description="0: a segment is judged whole. N > 0: a final longer than N words is also judged in windows "
        "of N words (half overlapping), and each intent takes its most probable window: a line that says two things "
        "('i want the manager about closing my account') is not judged only by the one that dominates it. "
        "docs/detection.md#thirteenth-tuning-windows.",
    )
    window_margin: float = Field(
        0.0, ge=0, lt=1, description="A window (window_words) counts for an intent only if it fires with this much "
        "more probability than the intent's threshold: a fragment has less context than the whole line.",
    )
    window_encoding: Literal["pooled", "separate"] = Field(
        "pooled", description="pooled: the windows' vectors come from the one pass over the whole final (the mean of "
        "each window's contextual token states), so windows cost no more encoding; separate: each window is encoded "
        "alone (one more pass per window, the thirteenth tuning). docs/detection.md#fourteenth-tuning-pooled-windows.",
    )
    regularization: float = Field(1.0, gt=0, description="Inverse regularisation strength C of the logistic heads.")
    neighbours: int = Field(
        3, ge=0, le=50, description="Nearest-example vote averaged with the logistic head: mean cosine of the k nearest "
        "positives minus that of the k nearest negatives (0 = the head alone)."
    )
    neighbour_scale: float = Field(30.0, gt=0, description="Slope of the logistic that turns that cosine margin into a probability.")
    sparse_weight: float = Field(
        0.5, ge=0, lt=1, description="Weight of the sparse head (logistic regression on TF-IDF word and character n-grams of "
        "the text) against the embedding score; 0 = embeddings alone (no sparse head is trained)."
    )
    sparse_regularization: float = Field(4.0, gt=0, description="Inverse regularisation strength C of the sparse heads.")
    lexicon_covers_kinds: tuple[str, ...] = Field(
        ("rude_phrase",), description="Alert kinds in which a lexicon match of one rule stands in for a semantic hit of "
        "another on the same segment (profanity covers rudeness); in other kinds both alert (a manager request that also "
        "threatens to leave is two things the supervisor needs to know)."
    )
    lexicon_veto: float = Field(
        0.0, ge=0, lt=1, description="A lexicon match of a rule with a semantic head alerts only if that head's probability "
        "for the segment is at least this (0 = every lexicon match alerts): the head has seen the look-alikes the phrase "
        "cannot tell apart ('my sister works for ofcom', 'i asked for a manager earlier but it's fine now')."
    )
    encoder: Literal["int8", "base", "tuned"] = Field(
        "int8", description="Sentence-embedding model: 'int8' (the general all-MiniLM-L6-v2 with int8 matrix products: about "
        "half base's CPU per segment; docs/detection.md#twenty-first-tuning-int8-matrix-products), 'base' (the same model "
        "as its package ships it, float32 products) or 'tuned' (all-MiniLM-L6-v2 "
        "fine-tuned on the packaged intents' examples: better on blind round 10, level on rounds 11 to 13 and 15, behind on round 14, worse "
        "through the recogniser; docs/detection.md#eleventh-tuning-the-default-encoder)."
    )
    tuned_thresholds: dict[_RuleId, Annotated[float, Field(gt=0, lt=1)]] = Field(
        default_factory=dict, description="With encoder: tuned, these phrase rules' thresholds replace their own (the "
        "fine-tuned encoder alerts more readily on some intents' look-alikes; docs/detection.md#eleventh-tuning-the-default-encoder)."
    )
    neutral: tuple[_Example, ...] = Field((), description="Everyday lines that match no intent: negatives for every head.")


class _Rule(_Strict):
    id: _RuleId
    severity: Severity
    queues: tuple[str, ...] = ()
    cooldown_s: float = Field(0.0, ge=0)
    enabled: bool = True

    def applies_to_queue(self, queue: str | None) -> bool:
        return not self.queues or (queue is not None and queue in self.queues)


class Cue(_Strict):
    """What counts as 'said': phrases (lexicon syntax), example utterances, or both, by one speaker."""

    speaker: _Speaker = "either"
    phrases: tuple[_Phrase, ...] = ()
    like: tuple[_Example, ...] = ()
    not_like: tuple[_Example, ...] = ()
    threshold: float | None = Field(None, gt=0, lt=1)
    fuzzy: bool = True
    negation: bool = False

    @model_validator(mode="after")
    def _something(self) -> "Cue":
        if not self.phrases and not self.like:
            raise ValueError("needs phrases, like examples or both")
        if self.like and len(self.like) < 3:
            raise ValueError("like needs at least 3 examples")
        return self


class WindowRule(_Rule):
    """Said / not-said within a window (one shape for both).

    The window opens at the call's start (``after: call_start``) or each time the trigger cue is
    heard (``after: trigger``), and lasts ``within_s`` audio seconds. ``expect: said``: alert
    when the window closes without the cue (a required phrase missing, e.g. the greeting, the
    recording disclosure, an apology after a complaint). ``expect: not_said``: alert as soon as
    the cue is heard inside the window (a forbidden phrase, e.g. a price quoted in the first
    minute).
    """

    expect: Literal["said", "not_said"] = "said"
    after: Literal["call_start", "trigger"] = "call_start"
    within_s: float = Field(gt=0, le=3600)
    cue: Cue
    trigger: Cue | None = None
    title: str | None = Field(None, max_length=200)
    max_windows: int = Field(20, ge=1, description="At most this many trigger windows per call.")

    @model_validator(mode="after")
    def _trigger_fits(self) -> "WindowRule":
        if (self.after == "trigger") != (self.trigger is not None):
            raise ValueError("after: trigger needs a trigger cue, and a trigger cue needs after: trigger")
        return self


class RiskWeights(_Strict):
    hold: float = Field(30.0, ge=0, description="Points at hold_full_s of hold time so far (linear, capped at 1.5x).")
    sentiment: float = Field(20.0, ge=0, description="Points at a mean customer sentiment of -1 over the last utterances.")
    escalation: float = Field(15.0, ge=0, description="Points per escalation cue (manager, churn, legal).")
    abuse: float = Field(15.0, ge=0, description="Points per abuse or agent-rudeness alert.")
    repeat_contact: float = Field(15.0, ge=0, description="Points once the customer says they called before.")
    dead_air: float = Field(10.0, ge=0, description="Points per dead-air episode.")
    missed_window: float = Field(5.0, ge=0, description="Points per not-said window alert (greeting, disclosure…).")


class RiskRule(_Rule):
    """The live call risk score (streamproc/detect/risk.py); alerts ``call_at_risk`` when it crosses ``threshold``."""

    threshold: float = Field(60.0, gt=0, le=100, description="Alert when the score reaches this (0–100).")
    weights: RiskWeights = RiskWeights()
    hold_full_s: float = Field(180.0, gt=0, description="Hold time (all holds so far) that earns the full hold weight.")
    sentiment_window: int = Field(6, ge=3, le=50, description="Customer finals whose sentiment trend (least-squares slope) counts.")
    sentiment_slope_full: float = Field(
        0.2, gt=0, le=2, description="Fall in VADER compound per customer utterance that earns the full sentiment weight."
    )
    cap_per_cue: int = Field(3, ge=1, description="Each cue counts at most this many times.")
    speaker: _Speaker = "customer"
    title: str | None = Field(None, max_length=200)
