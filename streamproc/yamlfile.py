"""YAML files validated by pydantic models (rules, scenarios): strict models, one error type with
every problem's path and line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Base of every model read from YAML: unknown keys are errors (a typo is reported, not ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class RuleProblem:
    path: str
    message: str
    line: int | None

    def __str__(self) -> str:
        where = f"line {self.line}, " if self.line else ""
        return f"{where}{self.path or '(top level)'}: {self.message}"


class YamlFileError(ValueError):
    """A YAML file (rules, scenario) that cannot be used. ``problems`` lists every error with its path and line."""

    what = "file"

    def __init__(self, source: str, problems: list[RuleProblem]):
        self.source = source
        self.problems = problems
        listing = "\n".join(f"  {source}: {problem}" for problem in problems)
        super().__init__(f"invalid {self.what} {source}:\n{listing}")


def compose_yaml(text: str, source: str, error: type[YamlFileError]) -> tuple[yaml.Node | None, Any]:
    """The node tree (for line numbers) and the data of a YAML text; a syntax error raises ``error``."""
    try:
        return yaml.compose(text), yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = RuleProblem("", f"not valid YAML: {getattr(exc, 'problem', exc)}", mark.line + 1 if mark else None)
        raise error(source, [problem]) from None


def line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
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
