"""The WER helper of the English speech tests (tests/speech.py)."""

from __future__ import annotations

import builtins

import pytest

from tests.speech import ENGLISH_SENTENCES, normalize_english, wer


def test_normalisation_is_like_whispers_english_normaliser_simply():
    assert normalize_english("That's the 3rd time, I can't!") == "that is the third time i can not"
    assert normalize_english("Arrives in 5 to 7 days, OK?") == "arrives in five to seven days ok"
    assert normalize_english("twenty-one") == "twenty one" == normalize_english("21")
    assert normalize_english("I\u2019m on hold.") == "i am on hold"


def test_wer_counts_edits_per_reference_word_over_the_whole_set():
    assert wer("I want to speak to a manager.", "i want to speak to a manager") == 0
    assert wer("I want to speak to a manager", "I want to speak to my manager") == pytest.approx(1 / 7)
    assert wer(["a b c", "d e"], ["a b", "d e f"]) == pytest.approx(2 / 5)  # one deletion, one insertion
    assert wer(["a b c", "d e"], ["", "d e"]) == pytest.approx(3 / 5)  # nothing heard: all deleted


def test_the_fallback_without_jiwer_gives_the_same_numbers(monkeypatch):
    real_import = builtins.__import__

    def no_jiwer(name, *args, **kwargs):
        if name == "jiwer":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    pairs = (["a b c", "d e"], ["a x", "d e f"])
    with_jiwer = wer(*pairs)
    monkeypatch.setattr(builtins, "__import__", no_jiwer)
    assert wer(*pairs) == pytest.approx(with_jiwer) == pytest.approx(3 / 5)


def test_the_english_corpus_has_enough_varied_sentences():
    assert len(ENGLISH_SENTENCES) >= 20
    assert {voice for _, voice, _ in ENGLISH_SENTENCES} == {"slt", "kal16", "awb", "rms"}
    text = " ".join(s for _, _, s in ENGLISH_SENTENCES).lower()
    for cue in ("manager", "cancel", "lawyer", "third time", "not my problem", "supervisor", "court", "hold"):
        assert cue in text, cue


@pytest.mark.skipif(not __import__("tests.speech", fromlist=["x"]).flite_available(), reason="flite and sox are needed")
def test_the_english_corpus_is_phone_audio_8_khz_mulaw():
    from streamproc.replay import read_wav
    from tests.speech import english_corpus

    corpus = english_corpus()
    assert len(corpus.utterances) == len(ENGLISH_SENTENCES)
    for utterance in corpus.utterances[:3] + [corpus.call_wav]:
        wav = read_wav(utterance if not hasattr(utterance, "wav") else utterance.wav)
        assert (wav.encoding.value, wav.rate, wav.channels) == ("mulaw", 8000, 1)
    total = sum(read_wav(u.wav).duration_s for u in corpus.utterances)
    assert read_wav(corpus.call_wav).duration_s == pytest.approx(total, abs=0.01)
