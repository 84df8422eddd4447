"""Phrase matching: word boundaries, inflections, ASR misspellings, fillers, negation, redaction."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from streamproc.detect.phrases import (
    PhraseSyntaxError, compile_phrase, find_matches, redact_profanity, tokenize, word_matches,
)


def matches(phrase: str, text: str, **kw) -> list[str]:
    tokens = tokenize(text)
    return [" ".join(t.norm for t in tokens[m.first : m.last + 1]) for m in find_matches([compile_phrase(phrase)], tokens, **kw)]


@pytest.mark.parametrize(
    "phrase, text, found",
    [
        ("shut up", "Shut up!", ["shut up"]),
        ("shut up", "shut, um, up", ["shut um up"]),  # commas split clauses, fillers are still skipped
        ("shut up", "shut um up", ["shut um up"]),  # filler between the words
        ("cancel my account", "I'm cancelling my account", ["cancelling my account"]),  # inflection
        ("cancel my account", "cancelled my acount", ["cancelled my acount"]),  # ASR misspelling (distance 1)
        ("speak to * manager", "speak to your manger", ["speak to your manger"]),
        ("speak to * manager", "speak to the store on fifth street manager", []),  # wildcard is at most 3 words
        ("ass", "the class assessment", []),  # word boundaries
        ("=calm down", "calmed down", []),  # exact word
        ("calm down", "calmed down", ["calmed down"]),
        ("shut up", "shot up", []),  # words under 5 letters are never fuzzy
        ("thats your problem", "That's your problem.", ["thats your problem"]),  # apostrophes
        ("a|the manager", "the manager", ["the manager"]),
        ("want * manager? now", "i want it now", ["want it now"]),
        ("매니저 바꿔", "매니저를 바꿔 주세요", ["매니저를 바꿔"]),  # Korean particle attached to the noun
    ],
)
def test_matching(phrase, text, found):
    assert matches(phrase, text) == found


def test_fuzzy_can_be_switched_off_per_rule():
    assert matches("bitch", "sales pitch") == ["pitch"]  # why profanity rules set fuzzy: false
    assert matches("bitch", "sales pitch", fuzzy=False) == []


def test_negation_only_in_the_same_clause():
    assert matches("cancel * account", "I'm not going to cancel my account", negation=True) == []
    assert matches("cancel * account", "no problem, but cancel my account", negation=True) == ["cancel my account"]
    assert matches("cancel * account", "I'm not going to cancel my account", negation=False) != []


def test_non_overlapping_left_to_right():
    assert matches("shut up", "shut up shut up shut up") == ["shut up"] * 3


@pytest.mark.parametrize("bad", ["", "*", "* manager", "manager *", "a||b", "x? y?", "hello-world"])
def test_syntax_errors(bad):
    with pytest.raises(PhraseSyntaxError):
        compile_phrase(bad)


def test_redaction_masks_only_profanity():
    assert redact_profanity("What the fuck, this is bullshit, dumbass!") == "What the f***, this is b*******, d******!"
    assert redact_profanity("The class assessment in Scunthorpe") == "The class assessment in Scunthorpe"
    assert redact_profanity("씨발 뭐야", extra=["씨발"]) == "씨* 뭐야"


_CLEAN = st.sampled_from("the a my account service please thank you help today bill card phone number time class pass".split())


@settings(max_examples=200, deadline=None)
@given(st.lists(_CLEAN, max_size=20))
def test_words_outside_the_lexicon_never_match(words):
    text = " ".join(words)
    for phrase in ("shut up", "speak to * manager", "fuck|shit|ass"):
        assert matches(phrase, text) == []


@settings(max_examples=200, deadline=None)
@given(st.lists(_CLEAN, max_size=8), st.lists(_CLEAN, max_size=8), st.lists(st.sampled_from(["um", "uh", "like"]), max_size=2))
def test_phrase_is_found_anywhere_with_fillers(before, after, fillers):
    text = " ".join([*before, "speak", *fillers, "to", "your", "manager", *after])
    assert len(matches("speak to * manager", text)) == 1


@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_tokenize_and_redact_never_fail(text):
    tokens = tokenize(text)
    assert all(t.start < t.end for t in tokens)
    redacted = redact_profanity(text)
    assert len(redacted) == len(__import__("unicodedata").normalize("NFKC", text).replace("’", "'"))


def test_word_matches_is_symmetric_enough_for_typos():
    assert word_matches("supervisr", "supervisor") and word_matches("superviser", "supervisor")
    assert not word_matches("manage", "managers", fuzzy=False)


def test_joined_pieces_match_a_one_word_phrase_written_as_several_words():
    """Recognisers split long words ("bull sh it"): with ``joined_pieces`` a one-word phrase also matches
    adjacent words of one clause written together, exactly (no inflection, no fuzziness), and only up to
    that many pieces; off by default."""
    phrases = [compile_phrase("bullshit|asshole"), compile_phrase("piss off")]
    def found(text, pieces):
        return [(m.first, m.last) for m in find_matches(phrases, tokenize(text), fuzzy=False, joined_pieces=pieces)]
    assert found("total bull sh it mate", 1) == []
    assert found("total bull sh it mate", 3) == [(1, 3)]
    assert found("total bull sh it mate", 2) == []  # three pieces, two allowed
    assert found("an ass hole", 2) == [(1, 2)]
    assert found("an ass. hole", 2) == []  # not across a clause break
    assert found("an ass holes", 2) == []  # exact: the joined word takes no inflection
    assert found("piss off", 2) == [(0, 1)]  # multi-word phrases match as always
