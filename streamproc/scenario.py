"""Call scenarios: a call described as a YAML timeline, validated strictly.

A scenario names the participants (agent, queue, customer) and lists steps in order:
spoken lines per speaker (``say``), silences (``pause``), holds, transfers and the end.
Spoken text may be given per language (``{en: ..., ko: ...}``) so one scenario can be
rendered for whichever speech recogniser is available (docs/replay.md).

Times are resolved by :func:`resolve`, which needs the duration of each spoken line:
the synthesizer measures the real TTS audio, the no-ASR path estimates it from the text.
Unknown keys are errors with file, path and line, like the rules file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Union

from pydantic import BaseModel, Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from .schemas import Identifier
from .yamlfile import RuleProblem, Strict, YamlFileError, compose_yaml, line_of  # same errors as the rules file

SCENARIOS_PACKAGE = "streamproc.data.scenarios"
Language = Annotated[str, Field(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")]
DEFAULT_GAP_S = 0.4  # silence between consecutive steps unless a step says otherwise


#: flite's built-in voices (Debian package flite, `flite -lv`); kal is an 8 kHz diphone voice, poorer than kal16.
FLITE_VOICES = ("slt", "kal16", "awb", "rms", "kal")
TTS_ENGINES = ("flite", "espeak")


def parse_voice(voice: str) -> tuple[str, str]:
    """``flite:slt`` → ("flite", "slt"); ``espeak:ko+f2`` or a bare ``ko+f2`` → ("espeak", "ko+f2").

    Raises ValueError with what is accepted (scenario validation reports it with the line).
    """
    engine, sep, name = voice.partition(":")
    if not sep:
        engine, name = "espeak", voice
    if engine not in TTS_ENGINES:
        raise ValueError(f"unknown TTS engine {engine!r} in voice {voice!r}: use flite:NAME or espeak:NAME (or a bare espeak-ng voice)")
    if not name.strip():
        raise ValueError(f"voice {voice!r} names no voice")
    if engine == "flite" and name not in FLITE_VOICES and not name.endswith(".flitevox"):
        raise ValueError(f"unknown flite voice {name!r}: one of {', '.join(FLITE_VOICES)} or a .flitevox file")
    if engine == "espeak" and any(ch.isspace() for ch in name):
        raise ValueError(f"espeak-ng voice {name!r} contains whitespace")
    return engine, name


class Participant(Strict):
    id: Identifier
    #: Voice per language: ``flite:NAME`` (slt, kal16, awb, rms) or an espeak-ng voice (``ko+f2``,
    #: or explicitly ``espeak:ko+f2``), e.g. {en: "flite:slt"}; the synthesizer's defaults apply when absent.
    voice: dict[Language, Annotated[str, Field(min_length=1, max_length=200)]] = Field(default_factory=dict)
    #: espeak-ng pitch 0-99 per language, so the two sides sound different (flite voices ignore it).
    pitch: dict[Language, Annotated[int, Field(ge=0, le=99)]] = Field(default_factory=dict)
    #: Speed in words a minute per language (default 175); slower can help a small ASR model.
    #: espeak-ng takes it as is; flite as a duration stretch of 175/speed.
    speed: dict[Language, Annotated[int, Field(ge=80, le=450)]] = Field(default_factory=dict)

    @field_validator("voice")
    @classmethod
    def _known_voices(cls, value: dict[str, str]) -> dict[str, str]:
        for voice in value.values():
            parse_voice(voice)  # ValueError → reported with the file's line
        return value


class Participants(Strict):
    agent: Participant
    customer: Participant
    queue: Identifier
    direction: Literal["inbound", "outbound"] = "inbound"


Text = Union[str, dict[Language, Annotated[str, Field(min_length=1, max_length=2000)]]]


class Say(Strict):
    say: Literal["agent", "customer"]
    text: Text
    #: Seconds after the previous step ends; negative overlaps it (interruptions, cross-talk).
    after: float = Field(DEFAULT_GAP_S, ge=-10, le=600)
    #: Pin the line's duration (seconds) instead of measuring the TTS output.
    duration: float | None = Field(None, gt=0, le=600)
    #: Render louder (dB gain), e.g. a shouting customer.
    gain_db: float = Field(0.0, ge=-30, le=20)

    @field_validator("text")
    @classmethod
    def _not_empty(cls, value: Text) -> Text:
        if isinstance(value, str) and not value.strip():
            raise ValueError("text is empty")
        if isinstance(value, dict) and not value:
            raise ValueError("text needs at least one language")
        return value

    def languages(self) -> set[str]:
        return set(self.text) if isinstance(self.text, dict) else set()

    def text_for(self, language: str | None) -> str:
        if isinstance(self.text, str):
            return self.text
        if language is None:
            return next(iter(self.text.values()))
        if language in self.text:
            return self.text[language]
        raise KeyError(f"line has no {language!r} text (has {', '.join(self.text)})")


class Pause(Strict):
    pause: float = Field(gt=0, le=3600, description="Seconds of silence on both channels (not on hold).")


class Hold(Strict):
    hold: float = Field(gt=0, le=3600, description="Seconds on hold: hold_started, silence, hold_ended.")
    reason: str | None = Field(None, max_length=256)
    after: float = Field(DEFAULT_GAP_S, ge=0, le=600)


class Transfer(Strict):
    transfer: Literal[True] = True
    to_queue: Identifier | None = None
    to_agent: Identifier | None = None
    after: float = Field(DEFAULT_GAP_S, ge=0, le=600)

    @model_validator(mode="after")
    def _has_target(self) -> "Transfer":
        if self.to_queue is None and self.to_agent is None:
            raise ValueError("a transfer needs to_queue or to_agent")
        return self


class End(Strict):
    end: Literal[True] = True
    reason: str = Field("completed", max_length=256)
    #: A longer default gap: recognisers finalise an utterance after ~1 s of silence.
    after: float = Field(1.5, ge=0, le=600)


STEP_KEYS = ("say", "pause", "hold", "transfer", "end")


def _step_kind(value: Any) -> str | None:
    if isinstance(value, BaseModel):
        return next(key for key in STEP_KEYS if key in type(value).model_fields)
    if isinstance(value, dict):
        present = [key for key in STEP_KEYS if key in value]
        if len(present) == 1:
            return present[0]
    return None  # pydantic reports "unable to extract tag" → we explain below


Step = Annotated[
    Union[
        Annotated[Say, Tag("say")],
        Annotated[Pause, Tag("pause")],
        Annotated[Hold, Tag("hold")],
        Annotated[Transfer, Tag("transfer")],
        Annotated[End, Tag("end")],
    ],
    Discriminator(
        _step_kind,
        custom_error_type="step_kind",
        custom_error_message="each step needs exactly one of: say, pause, hold, transfer, end",
    ),
]


class Scenario(Strict):
    version: Literal[1] = 1
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(None, max_length=2000)
    participants: Participants
    timeline: list[Step] = Field(min_length=1)

    @model_validator(mode="after")
    def _well_formed(self) -> "Scenario":
        ends = [i for i, step in enumerate(self.timeline) if isinstance(step, End)]
        if ends and ends[0] != len(self.timeline) - 1:
            raise ValueError(f"'end' must be the last step (it is step {ends[0]} of {len(self.timeline)})")
        langs = [step.languages() for step in self.timeline if isinstance(step, Say) and step.languages()]
        if langs and any(lang != langs[0] for lang in langs):
            # Every line must be renderable in every language the scenario offers.
            union = set().union(*langs)
            raise ValueError(f"every line must give the same languages; found {sorted(map(sorted, langs))[0]} and {sorted(union)}")
        return self

    @property
    def languages(self) -> tuple[str, ...]:
        """Languages the lines are written in; () when all lines are plain strings (language-neutral)."""
        for step in self.timeline:
            if isinstance(step, Say) and step.languages():
                return tuple(sorted(step.languages()))
        return ()

    def pick_language(self, preferred: list[str] | tuple[str, ...]) -> str | None:
        """The first of ``preferred`` the scenario has, else its first language (None if neutral)."""
        if not self.languages:
            return preferred[0] if preferred else None
        for language in preferred:
            if language in self.languages:
                return language
        return self.languages[0]


# --------------------------------------------------------------------------- loading


class ScenarioError(YamlFileError):
    """A scenario file that cannot be used; ``problems`` has each error with path and line."""

    what = "scenario"


def _yaml_path(loc: tuple) -> tuple:
    """Drop union tags pydantic adds to error paths ("say", "str", "dict[...]"): they are not YAML keys."""
    out = []
    for position, part in enumerate(loc):
        if position == 2 and loc[0] == "timeline" and part in STEP_KEYS:
            continue
        if part == "str" or (isinstance(part, str) and part.startswith(("dict[", "function-"))):
            continue
        out.append(part)
    return tuple(out)


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    node, data = compose_yaml(text, source, ScenarioError)
    if not isinstance(data, dict):
        raise ScenarioError(source, [RuleProblem("", "a scenario is a mapping with name, participants and timeline", 1)])
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            if "str" in error["loc"] and isinstance(error.get("input"), dict):
                continue  # text given per language: the "plain string" branch of the union is noise
            loc = _yaml_path(error["loc"])
            path = ".".join(str(part) for part in loc)
            problems.append(RuleProblem(path, error["msg"], line_of(node, loc)))
        raise ScenarioError(source, problems) from None


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(str(path), [RuleProblem("", f"cannot read: {exc.strerror or exc}", None)]) from None
    return parse_scenario(text, str(path))


def packaged_scenarios() -> dict[str, Path]:
    """The demo scenarios shipped in the package, by file stem, in name order."""
    folder = resources.files(SCENARIOS_PACKAGE)
    return {Path(item.name).stem: Path(str(item)) for item in sorted(folder.iterdir(), key=lambda i: i.name) if item.name.endswith(".yaml")}


def find_scenario(name_or_path: str) -> Path:
    """A file path, or the name of a packaged scenario (``angry_customer``)."""
    path = Path(name_or_path)
    if path.exists():
        return path
    packaged = packaged_scenarios()
    if name_or_path in packaged:
        return packaged[name_or_path]
    raise ScenarioError(name_or_path, [RuleProblem("", f"no such file or packaged scenario (packaged: {', '.join(packaged)})", None)])


# --------------------------------------------------------------------------- timeline


@dataclass(frozen=True)
class TimedLine:
    speaker: str  # agent | customer
    text: str
    start_s: float
    end_s: float
    gain_db: float = 0.0
    index: int = 0  # position among the call's lines (utterance numbering per speaker is separate)


@dataclass(frozen=True)
class TimedEvent:
    offset_s: float
    type: str  # call event type (streamproc.schemas.EventType)
    fields: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Timeline:
    lines: tuple[TimedLine, ...]
    events: tuple[TimedEvent, ...]
    holds: tuple[tuple[float, float], ...]  # (start_s, end_s)
    duration_s: float
    language: str | None


def estimate_duration(text: str) -> float:
    """Rough speaking time when no TTS measures it (no-ASR demo): ~14 characters a second."""
    return max(0.6, len(text.strip()) / 14.0)


def resolve(scenario: Scenario, language: str | None, duration_of: Callable[[int, TimedLine], float] | None = None) -> Timeline:
    """Place every step on the call's clock. ``duration_of(step_index, line)`` gives a line's length.

    A pinned ``duration`` wins over the measurement. call_started is at 0; call_ended at the
    end (an explicit ``end`` step, or after the last step).
    """
    measure = duration_of or (lambda index, line: estimate_duration(line.text))
    parts = scenario.participants
    started = {"agent_id": parts.agent.id, "queue": parts.queue, "customer_id": parts.customer.id, "direction": parts.direction}
    events: list[TimedEvent] = [TimedEvent(0.0, "call_started", started)]
    lines: list[TimedLine] = []
    holds: list[tuple[float, float]] = []
    cursor = 0.0  # end of the previous step
    first = True
    ended = False
    for index, step in enumerate(scenario.timeline):
        if isinstance(step, Say):
            start = max(0.0, (0.0 if first else cursor) + step.after)
            line = TimedLine(step.say, step.text_for(language), start, start, step.gain_db, len(lines))
            length = step.duration if step.duration is not None else measure(index, line)
            line = TimedLine(step.say, line.text, round(start, 3), round(start + length, 3), step.gain_db, len(lines))
            lines.append(line)
            cursor = max(cursor, line.end_s)
        elif isinstance(step, Pause):
            cursor += step.pause
        elif isinstance(step, Hold):
            start = cursor + step.after
            fields = {"reason": step.reason} if step.reason else {}
            events.append(TimedEvent(round(start, 3), "hold_started", fields))
            events.append(TimedEvent(round(start + step.hold, 3), "hold_ended", {}))
            holds.append((round(start, 3), round(start + step.hold, 3)))
            cursor = start + step.hold
        elif isinstance(step, Transfer):
            cursor += step.after
            fields = {k: v for k, v in (("to_queue", step.to_queue), ("to_agent_id", step.to_agent)) if v}
            events.append(TimedEvent(round(cursor, 3), "transferred", fields))
        elif isinstance(step, End):
            cursor += step.after
            events.append(TimedEvent(round(cursor, 3), "call_ended", {"reason": step.reason}))
            ended = True
        first = False
    if not ended:
        cursor += End.model_fields["after"].default
        events.append(TimedEvent(round(cursor, 3), "call_ended", {"reason": "completed"}))
    duration = max([cursor] + [line.end_s for line in lines])
    return Timeline(tuple(lines), tuple(events), tuple(holds), round(duration, 3), language)
