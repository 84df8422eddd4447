"""What a call's detection state must survive a worker crash with: a serialisable value object.

The detection engine (engine.py) keeps per-call bookkeeping in memory: which matches of an
utterance already alerted, which utterances are final, the last alert time per rule (cooldowns),
the sentiment windows, the said/not-said windows (windows.py) and the risk score's counts and
the levels it already alerted at (risk.py). :class:`DetectionSnapshot` is that bookkeeping as
plain data. The worker stores it in a changelog-backed table keyed by call id
(agents/detection.py, docs/state-and-restarts.md); a worker that takes the call over adopts it
before it processes the call's next input, so cooldowns, windows and risk levels carry on instead
of starting from zero.

Not kept (rebuilt from the audio that follows): the acoustic detectors' running baselines and
speech intervals (hundreds of values per minute of audio; a raised-voice baseline is re-learned
after ``baseline_min_speech_s`` of speech). Their cooldowns are kept. Derived values (the hold
seconds and score of the risk state, the windows' audio clock) are recomputed on the next input.

``revision`` counts the changes of the call's state in the engine that made them: a worker adopts
a stored snapshot only when it is newer than what it holds itself (a partition that comes back
after a rebalance must not overwrite newer state with older).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MatchCount(_Frozen):
    """Matches of a rule in one utterance of one speaker (handled, or fired on a partial)."""

    speaker: str
    utterance: int
    rule_id: str
    count: int


class UtteranceRef(_Frozen):
    speaker: str
    utterance: int


class PendingSemantic(_Frozen):
    """A semantic match seen on a partial, waiting for the next revision to agree."""

    speaker: str
    utterance: int
    rule_id: str


class ScoredLine(_Frozen):
    """One customer final in a sentiment window (streamproc.detect.escalation.ScoredUtterance)."""

    score: float
    text: str
    start_s: float | None
    end_s: float | None
    utterance: int


class WindowSnapshot(_Frozen):
    """One open said/not-said window (streamproc.detect.windows._Window)."""

    rule_id: str
    index: int
    opens_s: float
    closes_s: float
    satisfied: bool = False
    trigger_text: str | None = None


class TriggeredUtterance(_Frozen):
    rule_id: str
    speaker: str
    utterance: int


class WindowsSnapshot(_Frozen):
    windows: tuple[WindowSnapshot, ...] = ()
    started: tuple[str, ...] = ()
    triggers: dict[str, int] = Field(default_factory=dict)
    triggered_utterances: tuple[TriggeredUtterance, ...] = ()


class RiskSnapshot(_Frozen):
    sentiments: tuple[float, ...] = ()
    counts: dict[str, int] = Field(default_factory=dict)
    seen_alerts: tuple[str, ...] = ()
    levels_fired: dict[str, int] = Field(default_factory=dict)


class DetectionSnapshot(_Frozen):
    """One call's detection state, as stored in the worker's detection-state table."""

    schema_version: int = SCHEMA_VERSION
    call_id: str
    revision: int = 0
    handled: tuple[MatchCount, ...] = ()
    fired_on_partial: tuple[MatchCount, ...] = ()
    finals: tuple[UtteranceRef, ...] = ()
    last_fire: dict[str, float] = Field(default_factory=dict)  # rule id → audio time (or wall time) of its last alert
    semantic_pending: tuple[PendingSemantic, ...] = ()
    sentiment: dict[str, tuple[ScoredLine, ...]] = Field(default_factory=dict)  # sentiment rule id → window
    acoustic_last_fire: dict[str, float] = Field(default_factory=dict)
    windows: WindowsSnapshot | None = None
    risk: RiskSnapshot | None = None

    def to_json(self) -> dict:
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, data: object) -> "DetectionSnapshot | None":
        """The stored value, or None when it is missing or of another schema version (start afresh)."""
        if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
            return None
        return cls.model_validate(data)

    def content(self) -> dict:
        """Everything but the revision: what decides whether the state changed."""
        return self.model_dump(exclude={"revision"})
