"""Supervisor identities for the dashboard: a tokens file mapping token hashes to people and queues.

The file (``STREAMPROC_DASHBOARD_TOKENS_FILE``, written by ``streamproc supervisors add``)::

    version: 1
    supervisors:
      - name: Dana Park
        token_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
        queues: [billing, support]     # "*" = every queue
        team: billing-east              # optional, shown on the page

Only the SHA-256 of each token is stored: the tokens are 256-bit random strings made by the CLI,
so a plain hash is enough (nothing to brute-force) and a leaked file yields no usable token.

Whoever authenticates with a token *is* that supervisor: an acknowledgement carries their name,
the dashboard shows them only their queues. A login cookie is an HMAC of the token hash under a
server key (``STREAMPROC_DASHBOARD_SESSION_SECRET``, random per process when unset), so the cookie is
neither the token nor derivable from the file alone.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import Field, ValidationError, field_validator

from .yamlfile import RuleProblem, Strict, YamlFileError, compose_yaml, line_of

ALL_QUEUES = "*"


class SupervisorsFileError(YamlFileError):
    what = "supervisors tokens file"


class SupervisorEntry(Strict):
    name: str = Field(min_length=1, max_length=128)
    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    queues: tuple[str, ...] = Field(min_length=1, description='Queues this supervisor may see; "*" = all.')
    team: str | None = Field(None, max_length=128)

    @field_validator("name")
    @classmethod
    def _name_is_an_identifier(cls, value: str) -> str:
        if value != value.strip() or any(ch in value for ch in "\r\n\t"):
            raise ValueError("no leading/trailing spaces or control characters")
        return value


class SupervisorsFile(Strict):
    version: int = Field(1, ge=1, le=1)
    supervisors: tuple[SupervisorEntry, ...] = ()


@dataclass(frozen=True)
class Supervisor:
    """An authenticated viewer of the dashboard. ``queues`` None: every queue (shared token, open mode)."""

    name: str | None
    queues: frozenset[str] | None
    team: str | None = None

    def may_see(self, queue: str | None) -> bool:
        if self.queues is None:
            return True
        return queue is not None and queue in self.queues

    def view(self) -> dict:
        return {"name": self.name, "team": self.team, "queues": sorted(self.queues) if self.queues is not None else None}


#: The viewer when no identities are configured (open on loopback, or the shared dev page token).
ANONYMOUS = Supervisor(name=None, queues=None)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def load_supervisors(path: Path) -> SupervisorsFile:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SupervisorsFileError(source, [RuleProblem("", f"cannot read: {exc.strerror}", None)]) from None
    node, data = compose_yaml(text, source, SupervisorsFileError)
    try:
        parsed = SupervisorsFile.model_validate(data or {})
    except ValidationError as exc:
        raise SupervisorsFileError(source, [
            RuleProblem(".".join(map(str, e["loc"])), e["msg"], line_of(node, e["loc"])) for e in exc.errors(include_url=False)
        ]) from None
    names = [entry.name for entry in parsed.supervisors]
    hashes = [entry.token_sha256 for entry in parsed.supervisors]
    problems = [RuleProblem("supervisors", f"name {n!r} appears twice", None) for n in sorted({n for n in names if names.count(n) > 1})]
    if len(set(hashes)) != len(hashes):
        problems.append(RuleProblem("supervisors", "two supervisors share one token", None))
    if problems:
        raise SupervisorsFileError(source, problems)
    return parsed


def add_supervisor(path: Path, name: str, queues: list[str], team: str | None = None) -> str:
    """Add (or re-issue the token of) ``name``; write the file atomically; return the new token.

    The token is returned once and never stored: only its hash goes into the file.
    """
    current = load_supervisors(path) if path.exists() else SupervisorsFile()
    token = new_token()
    entry = SupervisorEntry(name=name, token_sha256=token_hash(token), queues=tuple(queues), team=team)
    kept = [e for e in current.supervisors if e.name != name]
    updated = SupervisorsFile(version=1, supervisors=(*kept, entry))
    text = yaml.safe_dump(updated.model_dump(mode="json", exclude_none=True), sort_keys=False, allow_unicode=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return token


class Directory:
    """Who is who, for the web server: authenticates tokens and login cookies.

    ``path`` None: no identities (everyone is :data:`ANONYMOUS`). The file is re-read when it
    changes (``streamproc supervisors add`` while the worker runs), checked at most once a second.
    """

    def __init__(self, path: Path | None, session_key: bytes):
        self.path = path
        self._session_key = session_key
        self._by_hash: dict[str, Supervisor] = {}
        self._by_session: dict[str, Supervisor] = {}
        self._stamp: tuple[int, int] | None = None
        if path is not None:
            self._load()

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def _load(self) -> None:
        assert self.path is not None
        stat = self.path.stat()
        parsed = load_supervisors(self.path)
        by_hash = {}
        for entry in parsed.supervisors:
            queues = None if ALL_QUEUES in entry.queues else frozenset(entry.queues)
            by_hash[entry.token_sha256] = Supervisor(name=entry.name, queues=queues, team=entry.team)
        self._by_hash = by_hash
        self._by_session = {self._session_for_hash(h): who for h, who in by_hash.items()}
        self._stamp = (stat.st_mtime_ns, stat.st_size)

    def refresh(self) -> None:
        """Re-read the file if it changed; a broken edit keeps the last good directory (and raises)."""
        if self.path is None:
            return
        try:
            stat = self.path.stat()
        except OSError:
            return
        if (stat.st_mtime_ns, stat.st_size) != self._stamp:
            self._load()

    def _session_for_hash(self, digest: str) -> str:
        return hmac.new(self._session_key, digest.encode("ascii"), hashlib.sha256).hexdigest()

    def by_token(self, token: str) -> Supervisor | None:
        # The lookup key is the token's hash: the comparison does not run over the secret itself.
        return self._by_hash.get(token_hash(token))

    def session_for(self, token: str) -> str:
        return self._session_for_hash(token_hash(token))

    def by_session(self, cookie: str) -> Supervisor | None:
        return self._by_session.get(cookie)
