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


def _every_phrase_at_every_token(phrases, tokens, fuzzy):
    """find_matches before the first-word index: every phrase tried at every token (the reference)."""
    from streamproc.detect.phrases import Match, _match_at

    found, i = [], 0
    while i < len(tokens):
        best = None
        for phrase in phrases:
            last = _match_at(phrase, tokens, i, fuzzy)
            if last is not None and last >= i and (best is None or last > best.last):
                best = Match(phrase.source, i, last)
        if best is None:
            i += 1
        else:
            found.append(best)
            i = best.last + 1
    return found


def _packaged_phrases():
    from streamproc.detect.phrases import PhraseList
    from streamproc.rules import load_rules

    detection = load_rules(None).detection
    lists = [PhraseList(compile_phrase(p) for p in rule.phrases) for rule in detection.phrases if rule.phrases]
    for window in detection.windows:
        for cue in (window.cue, window.trigger):
            if cue is not None and cue.phrases:
                lists.append(PhraseList(compile_phrase(p) for p in cue.phrases))
    return lists


_PACKAGED = _packaged_phrases()
_WORDS = sorted({alt for phrases in _PACKAGED for p in phrases for t in p.tokens for alt in t.alternatives})
# the lexicon's words, inflected and misspelt as a recogniser would (a letter dropped), fillers and negators
_VOCABULARY = sorted({*_WORDS, *(w + "s" for w in _WORDS), *(w + "ing" for w in _WORDS), *(w[:2] + w[3:] for w in _WORDS if len(w) >= 5),
                      "um", "so", "really", "not", "dont", "the", "my"})


@settings(max_examples=300, deadline=None)
@given(rule=st.integers(0, len(_PACKAGED) - 1), words=st.lists(st.sampled_from(_VOCABULARY), min_size=1, max_size=14),
       fuzzy=st.booleans())
def test_first_word_index_finds_what_trying_every_phrase_finds(rule, words, fuzzy):
    """The index only skips phrases that cannot begin at a token: the packaged rules' phrases, over
    texts of their own words (inflected and misspelt ones too), match exactly as with every phrase tried."""
    phrases = _PACKAGED[rule]
    tokens = tokenize(" ".join(words))
    assert find_matches(phrases, tokens, fuzzy=fuzzy) == _every_phrase_at_every_token(phrases, tokens, fuzzy)
    assert find_matches(tuple(phrases), tokens, fuzzy=fuzzy) == _every_phrase_at_every_token(phrases, tokens, fuzzy)


@settings(max_examples=200, deadline=None)
@given(words=st.lists(st.sampled_from(["my", "your", "manager", "managers", "speak", "to", "the", "supervisor", "dang",
                                       "it", "cancel", "cancelled", "um", "not"]), min_size=1, max_size=10))
def test_first_word_index_with_optional_leading_words(words):
    """None of the packaged phrases begins with an optional word; the index must still let the word after it begin."""
    from streamproc.detect.phrases import PhraseList

    phrases = PhraseList(compile_phrase(p) for p in ("my|your? manager", "speak? to * supervisor", "=dang? it", "cancel"))
    tokens = tokenize(" ".join(words))
    assert find_matches(phrases, tokens) == _every_phrase_at_every_token(phrases, tokens, True)
