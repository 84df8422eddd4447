"""The rules file: schema, loading, validation errors with file/path/line.

One YAML file holds every rule (hold thresholds now; phrase and escalation
detectors extend :class:`RulesFile`). Unknown keys are errors, so a typo such as
``after_sec`` is reported instead of silently ignored. docs/rules.md documents it;
the default set ships as ``streamproc/data/default_rules.yaml``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from .detect.rules_ext import ExampleText, PhraseText, RiskRule, RuleId, SemanticOptions, WindowRule  # semantic options, said/not-said windows, risk
from .schemas import Severity
from .yamlfile import RuleProblem, Strict, YamlFileError, compose_yaml, line_of

log = logging.getLogger(__name__)

DEFAULT_RULES_RESOURCE = "default_rules.yaml"
DEMO_RULES_RESOURCE = "demo_rules.yaml"


class HoldThreshold(Strict):
    """Alert while a single hold is still going on, once it has lasted ``after_s``."""

    id: str = Field(min_length=1, max_length=100)
    after_s: float = Field(gt=0, description="Seconds on hold (this hold) before the alert fires.")
    severity: Severity


class CumulativeHoldThreshold(Strict):
    """Alert when all holds of one call add up to ``after_s`` (fires during the hold that crosses it)."""

    id: str = Field(min_length=1, max_length=100)
    after_s: float = Field(gt=0)
    severity: Severity


class RepeatedHoldRule(Strict):
    """Alert when a call is put on hold for the ``count``-th time."""

    id: str = Field(min_length=1, max_length=100)
    count: int = Field(ge=2)
    severity: Severity


class HoldPolicy(Strict):
    thresholds: tuple[HoldThreshold, ...] = ()
    cumulative: tuple[CumulativeHoldThreshold, ...] = ()
    repeated: tuple[RepeatedHoldRule, ...] = ()

    @field_validator("thresholds", "cumulative")
    @classmethod
    def _sorted(cls, value: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(sorted(value, key=lambda rule: rule.after_s))


class HoldPolicyOverride(Strict):
    """Per-queue override: each list given replaces the default list of the same name."""

    thresholds: tuple[HoldThreshold, ...] | None = None
    cumulative: tuple[CumulativeHoldThreshold, ...] | None = None
    repeated: tuple[RepeatedHoldRule, ...] | None = None


class HoldRules(Strict):
    defaults: HoldPolicy = HoldPolicy()
    queues: dict[str, HoldPolicyOverride] = Field(default_factory=dict)

    def for_queue(self, queue: str | None) -> HoldPolicy:
        override = self.queues.get(queue or "")
        if override is None:
            return self.defaults
        return HoldPolicy(
            thresholds=override.thresholds if override.thresholds is not None else self.defaults.thresholds,
            cumulative=override.cumulative if override.cumulative is not None else self.defaults.cumulative,
            repeated=override.repeated if override.repeated is not None else self.defaults.repeated,
        )

    @model_validator(mode="after")
    def _unique_ids_per_policy(self) -> "HoldRules":
        policies = {"defaults": self.defaults} | {f"queues.{q}": self.for_queue(q) for q in self.queues}
        for where, policy in policies.items():
            seen: set[str] = set()
            for rule in (*policy.thresholds, *policy.cumulative, *policy.repeated):
                if rule.id in seen:
                    raise ValueError(f"{where}: rule id {rule.id!r} is used twice")
                seen.add(rule.id)
        return self


# --------------------------------------------------------------------------- detection rules (docs/rules.md)


class SpeakerTarget(StrEnum):
    agent = "agent"
    customer = "customer"
    either = "either"

    def allows(self, speaker: str) -> bool:
        return self is SpeakerTarget.either or self.value == str(speaker)




class _DetectionRule(Strict):
    id: RuleId
    severity: Severity
    queues: tuple[str, ...] = Field((), description="Only calls in these queues; empty means every queue.")
    cooldown_s: float = Field(30.0, ge=0, description="Audio seconds after an alert of this rule in which it stays quiet.")
    enabled: bool = True

    def applies_to_queue(self, queue: str | None) -> bool:
        return not self.queues or (queue is not None and queue in self.queues)


class PhraseRule(_DetectionRule):
    """A lexicon: fires when a phrase is said by the targeted speaker (streamproc/detect/phrases.py syntax)."""

    kind: Literal["rude_phrase", "customer_abuse", "escalation"]
    category: str | None = Field(None, max_length=60, description="Free label, e.g. manager_request (shown in alerts).")
    title: str | None = Field(None, max_length=200, description="Dashboard line; defaults from kind/category.")
    speaker: SpeakerTarget = SpeakerTarget.either
    phrases: tuple[PhraseText, ...] = ()
    fuzzy: bool = Field(True, description="Tolerate ASR misspellings of longer words.")
    joined_pieces: int = Field(
        1, ge=1, le=4, description="A one-word phrase also matches up to this many adjacent words written together, "
        "exactly ('bull sh it' is 'bullshit'): recognisers split long words. 1: off."
    )
    negation: bool = Field(False, description="Ignore matches preceded by a negation ('not going to cancel').")
    fire_on: Literal["partial", "final"] = Field("partial", description="partial: fire on the first partial that matches.")
    # semantic intent (streamproc/detect/semantic.py): examples train a small head on sentence embeddings
    like: tuple[ExampleText, ...] = Field((), description="Example utterances of the intent (semantic detection).")
    not_like: tuple[ExampleText, ...] = Field((), description="Counter-examples: near misses that must not fire.")
    threshold: float | None = Field(None, gt=0, lt=1, description="Semantic probability at or above which the rule fires.")
    head_veto: bool = Field(
        True, description="With examples and detection.semantic.lexicon_veto, the rule's head may veto its phrase matches "
        "(look-alikes such as 'my sister works for ofcom'). false: every phrase match alerts and the head only adds recall "
        "(a word list that is precise by construction, such as profanity's)."
    )

    @model_validator(mode="after")
    def _phrases_or_examples(self) -> "PhraseRule":
        if not self.phrases and not self.like:
            raise ValueError("a phrase rule needs phrases (lexicon), like examples (semantic) or both")
        if self.not_like and not self.like:
            raise ValueError("not_like needs like examples")
        if self.like and len(self.like) < 3:
            raise ValueError("a semantic intent needs at least 3 like examples")
        return self

    @property
    def semantic(self) -> bool:
        return bool(self.like)


class SentimentRule(_DetectionRule):
    """Persistent negative sentiment: VADER compound scores over a rolling window of final utterances."""

    speaker: SpeakerTarget = SpeakerTarget.customer
    window: int = Field(4, ge=2, le=50, description="Utterances in the rolling window.")
    min_utterances: int = Field(3, ge=1, description="Window fill needed before judging.")
    threshold: float = Field(-0.3, ge=-1, le=1, description="Fire when the window's mean compound score is at or below.")
    min_negative: int = Field(3, ge=1, description="...and at least this many utterances in it are negative.")
    negative_below: float = Field(-0.05, ge=-1, le=1, description="A compound score at or below this is negative.")
    max_trend: float | None = Field(
        0.1, description="...and the least-squares slope of the scores (per utterance) is at most this (not recovering)."
    )
    min_words: int = Field(3, ge=1, description="Shorter utterances ('no', 'ok') are not scored.")
    cooldown_s: float = 120.0

    @model_validator(mode="after")
    def _fits(self) -> "SentimentRule":
        if self.min_utterances > self.window or self.min_negative > self.window:
            raise ValueError("min_utterances and min_negative must not exceed window")
        return self


class RaisedVoiceRule(_DetectionRule):
    """Speech energy well above that speaker's own running baseline, sustained."""

    speaker: SpeakerTarget = SpeakerTarget.either
    above_baseline_db: float = Field(10.0, gt=0, le=60)
    min_duration_s: float = Field(1.0, gt=0, le=30, description="Raised speech must last this long.")
    baseline_min_speech_s: float = Field(5.0, ge=0, description="Speech needed before the baseline is trusted.")
    baseline_window_s: float = Field(60.0, gt=0, description="Most recent normal speech that forms the baseline.")
    cooldown_s: float = 60.0


class DeadAirRule(_DetectionRule):
    """Nobody speaks for ``after_s`` while the call is not on hold."""

    after_s: float = Field(gt=0)
    cooldown_s: float = 0.0


class CrosstalkRule(_DetectionRule):
    """Both speakers talk at once ``count`` times (each at least ``min_overlap_s``) within ``window_s``."""

    count: int = Field(3, ge=1)
    min_overlap_s: float = Field(0.5, gt=0)
    window_s: float = Field(60.0, gt=0)
    cooldown_s: float = 120.0


class DetectionOptions(Strict):
    redact_profanity: bool = Field(True, description="Mask profanity in alert evidence text (f******).")
    extra_profanity: tuple[str, ...] = Field((), description="More words to mask, e.g. in other languages.")


class DetectionRules(Strict):
    options: DetectionOptions = DetectionOptions()
    phrases: tuple[PhraseRule, ...] = ()
    sentiment: tuple[SentimentRule, ...] = ()
    raised_voice: tuple[RaisedVoiceRule, ...] = ()
    dead_air: tuple[DeadAirRule, ...] = ()
    crosstalk: tuple[CrosstalkRule, ...] = ()
    semantic: SemanticOptions = SemanticOptions()
    windows: tuple[WindowRule, ...] = ()
    risk: tuple[RiskRule, ...] = ()

    def all_rules(self) -> list[_DetectionRule]:
        return [*self.phrases, *self.sentiment, *self.raised_voice, *self.dead_air, *self.crosstalk, *self.windows, *self.risk]

    @model_validator(mode="after")
    def _unique_ids(self) -> "DetectionRules":
        seen: set[str] = set()
        for rule in self.all_rules():
            if rule.id in seen:
                raise ValueError(f"rule id {rule.id!r} is used twice (alert ids derive from it)")
            seen.add(rule.id)
        return self

    @model_validator(mode="after")
    def _tuned_thresholds_name_semantic_rules(self) -> "DetectionRules":
        unknown = sorted(set(self.semantic.tuned_thresholds) - {r.id for r in self.phrases if r.like})
        if unknown:
            raise ValueError(f"semantic.tuned_thresholds names {unknown}, which are not phrase rules with like examples")
        return self


class RulesFile(Strict):
    version: int = Field(1, description="Rules file format version.")
    hold: HoldRules = HoldRules()
    detection: DetectionRules = DetectionRules()

    @model_validator(mode="after")
    def _detection_ids_differ_from_hold(self) -> "RulesFile":
        hold_ids = {r.id for p in (self.hold.defaults, *self.hold.queues.values()) for r in (*(p.thresholds or ()), *(p.cumulative or ()), *(p.repeated or ()))}
        clash = sorted(hold_ids & {r.id for r in self.detection.all_rules()})
        if clash:
            raise ValueError(f"detection rule ids {clash} are also hold rule ids")
        return self

    @field_validator("version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != 1:
            raise ValueError(f"unsupported rules version {value}; this streamproc reads version 1")
        return value


class RulesError(YamlFileError):
    what = "rules file"


def parse_rules(text: str, source: str = "<rules>") -> RulesFile:
    root, data = compose_yaml(text, source, RulesError)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RulesError(source, [RuleProblem("", "the rules file must be a mapping at the top level", 1)])
    try:
        return RulesFile.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            loc = tuple(error["loc"])
            path = ".".join(str(part) for part in loc)
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown field (check the spelling; docs/rules.md lists the fields)"
            problems.append(RuleProblem(path, message, line_of(root, loc)))
        raise RulesError(source, problems) from None


def load_rules(path: Path | str | None = None) -> RulesFile:
    """Load a rules file, or the packaged default rules when ``path`` is None."""
    if path is None:
        return parse_rules(packaged_rules_text(DEFAULT_RULES_RESOURCE), f"(packaged) {DEFAULT_RULES_RESOURCE}")
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(str(path), [RuleProblem("", f"cannot read file: {exc.strerror or exc}", None)]) from None
    return parse_rules(text, str(path))


def packaged_rules_text(name: str) -> str:
    return resources.files("streamproc.data").joinpath(name).read_text(encoding="utf-8")


def packaged_rules_path(name: str) -> Path:
    return Path(str(resources.files("streamproc.data").joinpath(name)))


class RulesWatcher:
    """The rules in force, re-read when the file changes (hot reload without a restart).

    :meth:`check` is cheap (one ``stat``) and is called periodically by the worker. A changed
    file is parsed in full; if it is invalid the error is logged with file/path/line, the
    ``streamproc_rules_reloads_total{result="rejected"}`` counter goes up and the old rules
    stay in force. The same bad content is reported once, not on every check.
    """

    def __init__(self, path: Path | str | None, rules: RulesFile | None = None, *, clock: Callable[[], float] = time.time):
        from . import metrics

        self._metrics = metrics
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._signature = self._stat()
        self._digest = self._read_digest()
        self._rules = rules if rules is not None else load_rules(self.path)
        self._rejected_digest: str | None = None
        self.loaded_at = clock()
        self._clock = clock
        self.last_error: RulesError | None = None

    def current(self) -> RulesFile:
        return self._rules

    def _stat(self):
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except OSError:
            return ("missing",)
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _read_digest(self) -> str | None:
        if self.path is None:
            return None
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            return None

    def check(self) -> bool:
        """Reload if the file changed; True when new rules are now in force."""
        if self.path is None:
            return False
        with self._lock:
            signature = self._stat()
            if signature == self._signature:
                return False
            self._signature = signature
            try:
                text = self.path.read_text(encoding="utf-8")
            except OSError as exc:
                return self._reject(RulesError(str(self.path), [RuleProblem("", f"cannot read file: {exc.strerror or exc}", None)]), None)
            digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
            if digest == self._digest:
                return False  # touched, not changed
            try:
                rules = parse_rules(text, str(self.path))
            except RulesError as exc:
                return self._reject(exc, digest)
            self._rules = rules
            self._digest = digest
            self._rejected_digest = None
            self.last_error = None
            self.loaded_at = self._clock()
            self._metrics.RULES_LOADED.set(self.loaded_at)
            self._metrics.RULES_RELOADS.labels("ok").inc()
            log.info("rules reloaded from %s", self.path)
            return True

    def _reject(self, error: RulesError, digest: str | None) -> bool:
        self.last_error = error
        if digest is not None and digest == self._rejected_digest:
            return False
        self._rejected_digest = digest
        self._metrics.RULES_RELOADS.labels("rejected").inc()
        log.error("rules file change rejected, the previous rules stay in force: %s", error)
        return False
