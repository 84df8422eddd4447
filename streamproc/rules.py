"""The rules file: schema, loading, validation errors with file/path/line.

One YAML file holds every rule (hold thresholds now; phrase and escalation
detectors extend :class:`RulesFile`). Unknown keys are errors, so a typo such as
``after_sec`` is reported instead of silently ignored. docs/rules.md documents it;
the default set ships as ``streamproc/data/default_rules.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .schemas import Severity

DEFAULT_RULES_RESOURCE = "default_rules.yaml"
DEMO_RULES_RESOURCE = "demo_rules.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HoldThreshold(_Strict):
    """Alert while a single hold is still going on, once it has lasted ``after_s``."""

    id: str = Field(min_length=1, max_length=100)
    after_s: float = Field(gt=0, description="Seconds on hold (this hold) before the alert fires.")
    severity: Severity


class CumulativeHoldThreshold(_Strict):
    """Alert when all holds of one call add up to ``after_s`` (fires during the hold that crosses it)."""

    id: str = Field(min_length=1, max_length=100)
    after_s: float = Field(gt=0)
    severity: Severity


class RepeatedHoldRule(_Strict):
    """Alert when a call is put on hold for the ``count``-th time."""

    id: str = Field(min_length=1, max_length=100)
    count: int = Field(ge=2)
    severity: Severity


class HoldPolicy(_Strict):
    thresholds: tuple[HoldThreshold, ...] = ()
    cumulative: tuple[CumulativeHoldThreshold, ...] = ()
    repeated: tuple[RepeatedHoldRule, ...] = ()

    @field_validator("thresholds", "cumulative")
    @classmethod
    def _sorted(cls, value: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(sorted(value, key=lambda rule: rule.after_s))


class HoldPolicyOverride(_Strict):
    """Per-queue override: each list given replaces the default list of the same name."""

    thresholds: tuple[HoldThreshold, ...] | None = None
    cumulative: tuple[CumulativeHoldThreshold, ...] | None = None
    repeated: tuple[RepeatedHoldRule, ...] | None = None


class HoldRules(_Strict):
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


class RulesFile(_Strict):
    version: int = Field(1, description="Rules file format version.")
    hold: HoldRules = HoldRules()

    @field_validator("version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != 1:
            raise ValueError(f"unsupported rules version {value}; this streamproc reads version 1")
        return value


@dataclass(frozen=True)
class RuleProblem:
    path: str
    message: str
    line: int | None

    def __str__(self) -> str:
        where = f"line {self.line}, " if self.line else ""
        return f"{where}{self.path or '(top level)'}: {self.message}"


class RulesError(ValueError):
    """A rules file that cannot be used. ``problems`` lists every error with its path and line."""

    def __init__(self, source: str, problems: list[RuleProblem]):
        self.source = source
        self.problems = problems
        listing = "\n".join(f"  {source}: {problem}" for problem in problems)
        super().__init__(f"invalid rules file {source}:\n{listing}")


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """Follow a pydantic error location through the YAML node tree to a 1-based line number."""
    best = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if getattr(k, "value", None) == str(part)), None)
            if match is None:
                break
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        best = node.start_mark.line + 1
    return best


def parse_rules(text: str, source: str = "<rules>") -> RulesFile:
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise RulesError(source, [RuleProblem("", f"not valid YAML: {getattr(exc, 'problem', exc)}", mark.line + 1 if mark else None)]) from None
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
            problems.append(RuleProblem(path, message, _line_of(root, loc)))
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
