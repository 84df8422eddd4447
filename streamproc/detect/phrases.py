"""Phrase lexicons matched against (possibly misrecognised) transcript text.

A phrase is a sequence of *pattern tokens*, written in the rules file as plain words:

* ``word``        the word, its inflections ("cancel" → cancels/cancelled/cancelling) and,
                  for words of 5+ letters, ASR-style misspellings (Levenshtein distance 1,
                  2 from 8 letters: "supervisor" ↔ "supervicer", "manager" ↔ "manger");
* ``a|b|c``       any of the alternatives;
* ``word?``       optional (``a|b?`` makes the whole alternation optional);
* ``=word``       exactly this word: no inflection, no fuzziness (short or ambiguous words);
* ``*``           up to :data:`WILDCARD_SPAN` arbitrary words ("speak to * manager").

Matching is token based, so word boundaries are implicit ("class" never matches "ass").
Between two pattern tokens any number (up to :data:`MAX_FILLERS`) of filler words may
occur ("speak to, um, your manager"). Tokens are NFKC-normalised, lower-cased and stripped
of apostrophes ("That's" → "thats"), identically for text and lexicon.

Hangul words match when the transcript word starts with the lexicon word, because Korean
particles attach to the noun ("매니저" matches "매니저를", "매니저랑").

Negation (per rule): a match is dropped when a negator ("not", "don't", "never", "no" …)
occurs within :data:`NEGATION_WINDOW` tokens before it, in the same clause (a clause ends
at . ! ? ; , or "but"/"however"). "I'm not going to cancel" is not churn intent.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Sequence

from rapidfuzz.distance import Levenshtein

WILDCARD_SPAN = 3
MAX_FILLERS = 3
NEGATION_WINDOW = 4

FILLERS = frozenset(
    """um umm uh uhh uhm er erm ah ahh eh hmm mm like just really so well actually literally basically
    please kindly now honestly seriously right okay ok""".split()
)
# Fillers that are also meaningful words are only skipped *between* pattern tokens, never
# counted as matches themselves, so "like" stays usable inside a phrase.

NEGATORS = frozenset(
    """not no never dont doesnt didnt wont wouldnt cant cannot couldnt isnt arent wasnt werent
    shouldnt havent hasnt hadnt aint neither nor without nobody nothing hardly""".split()
)
CLAUSE_BREAK_WORDS = frozenset({"but", "however", "although", "though", "except"})

#: Built-in profanity list for evidence redaction (inflections included by matching).
PROFANITY = frozenset(
    """fuck fucking fucker motherfucker shit shitty bullshit bitch bastard asshole dick dickhead
    cunt piss pissed crap damn goddamn wanker prick twat bollocks arsehole douche douchebag ass dumbass jackass""".split()
)

_WORD = re.compile(r"[\w']+|[.!?;,]", re.UNICODE)
_HANGUL = re.compile(r"[\uac00-\ud7a3]")
_SUFFIXES = ("s", "es", "ed", "d", "ing", "er", "ers", "ly", "y", "in")


def normalize_text(text: str) -> str:
    """The text that :func:`tokenize` offsets refer to."""
    return unicodedata.normalize("NFKC", text).replace("’", "'")


def normalize_word(word: str) -> str:
    return unicodedata.normalize("NFKC", word).lower().replace("'", "").replace("’", "")


@dataclass(frozen=True)
class Token:
    """One word of a transcript: normalised form, where it is in the text, its clause."""

    norm: str
    start: int  # character offsets into the original text
    end: int
    clause: int
    index: int  # position in the token list


def tokenize(text: str) -> list[Token]:
    """Words of ``text`` with character spans; punctuation and contrast words only split clauses."""
    text = unicodedata.normalize("NFKC", text).replace("’", "'")
    tokens: list[Token] = []
    clause = 0
    for found in _WORD.finditer(text):
        raw = found.group()
        if raw in ".!?;,":
            clause += 1
            continue
        norm = normalize_word(raw)
        if not norm:
            continue
        if norm in CLAUSE_BREAK_WORDS:
            clause += 1
        tokens.append(Token(norm, found.start(), found.end(), clause, len(tokens)))
    return tokens


# --------------------------------------------------------------------------- patterns


@dataclass(frozen=True)
class PatternToken:
    alternatives: tuple[str, ...] = ()
    optional: bool = False
    exact: bool = False
    wildcard: bool = False


@dataclass(frozen=True)
class Phrase:
    source: str
    tokens: tuple[PatternToken, ...]


class PhraseSyntaxError(ValueError):
    pass


def compile_phrase(source: str) -> Phrase:
    """Parse the phrase mini-syntax (module docstring). Raises PhraseSyntaxError."""
    parts = unicodedata.normalize("NFKC", source).replace("’", "'").split()
    if not parts:
        raise PhraseSyntaxError("empty phrase")
    tokens: list[PatternToken] = []
    for part in parts:
        if part == "*":
            tokens.append(PatternToken(wildcard=True))
            continue
        optional = part.endswith("?")
        part = part.rstrip("?")
        exact = part.startswith("=")
        part = part.lstrip("=")
        alternatives = tuple(normalize_word(alt) for alt in part.split("|"))
        if not part or any(not alt or not re.fullmatch(r"\w+", alt) for alt in alternatives):
            raise PhraseSyntaxError(f"bad token {part!r} in phrase {source!r} (words, a|b, word?, =word, *)")
        tokens.append(PatternToken(alternatives, optional, exact))
    if all(t.wildcard or t.optional for t in tokens):
        raise PhraseSyntaxError(f"phrase {source!r} needs at least one required word")
    if tokens[0].wildcard or tokens[-1].wildcard:
        raise PhraseSyntaxError(f"phrase {source!r} cannot start or end with *")
    return Phrase(source, tuple(tokens))


def _inflection_of(word: str, base: str) -> bool:
    if not word.startswith(base[: max(1, len(base) - 1)]):
        return False
    if word.startswith(base) and word[len(base):] in _SUFFIXES:
        return True
    rest = word[len(base):]
    # doubled final consonant: stop → stopped, stopping
    if word.startswith(base) and rest[:1] == base[-1:] and rest[1:] in ("ed", "ing", "er", "y"):
        return True
    # silent e: hate → hating/hated; y → ied/ies: reply → replied
    if base.endswith("e") and word[len(base) - 1:] in ("ing", "ed", "er", "ers"):
        return True
    if base.endswith("y") and word[len(base) - 1:] in ("ied", "ies"):
        return True
    return False


@lru_cache(maxsize=65536)
def word_matches(word: str, alternative: str, exact: bool = False, fuzzy: bool = True) -> bool:
    """Does transcript word ``word`` count as lexicon word ``alternative``?"""
    if word == alternative:
        return True
    if exact:
        return False
    if _HANGUL.search(alternative):
        # Particles and endings attach to the stem: 취소 → 취소할게요, 매니저 → 매니저를.
        return word.startswith(alternative) and len(word) - len(alternative) <= 4
    if len(alternative) >= 3 and _inflection_of(word, alternative):
        return True
    if fuzzy and len(alternative) >= 5 and len(word) >= 4:
        allowed = 1 if len(alternative) < 8 else 2
        return Levenshtein.distance(word, alternative, score_cutoff=allowed) <= allowed
    return False


@dataclass(frozen=True)
class Match:
    phrase: str
    first: int  # token indices, inclusive
    last: int

    def text(self, source_text: str, tokens: Sequence[Token]) -> str:
        return source_text_span(source_text, tokens, self.first, self.last)


def source_text_span(text: str, tokens: Sequence[Token], first: int, last: int) -> str:
    normalized = unicodedata.normalize("NFKC", text).replace("’", "'")
    return normalized[tokens[first].start : tokens[last].end]


def _match_at(phrase: Phrase, tokens: Sequence[Token], start: int, fuzzy: bool) -> int | None:
    """Index of the last token of a match of ``phrase`` beginning exactly at ``start``, else None."""

    def step(p: int, i: int, first: bool) -> int | None:
        # p: pattern position, i: next transcript position; returns last matched index
        if p == len(phrase.tokens):
            return i - 1
        pattern = phrase.tokens[p]
        if pattern.wildcard:
            for skip in range(0, WILDCARD_SPAN + 1):
                if i + skip > len(tokens):
                    break
                found = step(p + 1, i + skip, False)
                if found is not None:
                    return found
            return None
        # fillers between pattern tokens (not before the first one)
        limit = 0 if first else MAX_FILLERS
        j = i
        for _ in range(limit + 1):
            if j < len(tokens) and any(
                word_matches(tokens[j].norm, alt, pattern.exact, fuzzy) for alt in pattern.alternatives
            ):
                found = step(p + 1, j + 1, False)
                if found is not None:
                    return found
            if j < len(tokens) and tokens[j].norm in FILLERS:
                j += 1
                continue
            break
        if pattern.optional and not first:
            return step(p + 1, i, False)
        if pattern.optional and first:
            return step(p + 1, i, True)
        return None

    return step(0, start, True)


def is_negated(tokens: Sequence[Token], first: int, window: int = NEGATION_WINDOW) -> bool:
    clause = tokens[first].clause
    for k in range(first - 1, max(-1, first - 1 - window), -1):
        if tokens[k].clause != clause:
            break
        if tokens[k].norm in NEGATORS:
            return True
    return False


class PhraseList(tuple):
    """A rule's compiled phrases, with an index from a transcript word to the phrases that can begin at it.

    A match beginning at token i needs token i to match one of the phrase's leading words (its first
    required token, or an optional one before that): without the index every phrase was tried at every
    token (a Python recursion per pair), most of the lexicon's cost per segment and ~3 ms of the semantic
    layer's p99 on a long final (docs/performance.md#semantic-intents-cost-per-transcript-segment). The
    index is filled lazily per distinct word, so a rules reload (a new list) starts empty."""

    _CACHE_MAX = 20_000

    def starting_at(self, word: str, fuzzy: bool) -> tuple[Phrase, ...]:
        """The phrases that may match beginning at a token whose normalised form is ``word``, in list order."""
        cache = self.__dict__.setdefault("_starts", {})
        key = (word, fuzzy)
        found = cache.get(key)
        if found is None:
            if len(cache) >= self._CACHE_MAX:
                cache.clear()
            found = cache[key] = tuple(p for p in self if _may_begin(p, word, fuzzy))
        return found


def _may_begin(phrase: Phrase, word: str, fuzzy: bool) -> bool:
    for pattern in phrase.tokens:
        if any(word_matches(word, alt, pattern.exact, fuzzy) for alt in pattern.alternatives):
            return True
        if not pattern.optional:
            return False
    return False


def find_matches(
    phrases: Iterable[Phrase], tokens: Sequence[Token], *, fuzzy: bool = True, negation: bool = False,
    joined_pieces: int = 1,
) -> list[Match]:
    """Non-overlapping matches of any of ``phrases`` in ``tokens``, left to right (longest at a start; the
    earlier phrase on a tie). Pass a :class:`PhraseList` built once per rule to keep its first-word index.
    ``joined_pieces`` > 1: a one-word phrase also matches up to that many adjacent words of one clause written
    together, exactly ("bull sh it" is "bullshit", "ass hole" is "asshole"): the recogniser splits long words."""
    if not isinstance(phrases, PhraseList):
        phrases = PhraseList(phrases)
    single = [p for p in phrases if len(p.tokens) == 1 and not (p.tokens[0].optional or p.tokens[0].wildcard)] if joined_pieces > 1 else []
    matches: list[Match] = []
    i = 0
    while i < len(tokens):
        best: Match | None = None
        for phrase in phrases.starting_at(tokens[i].norm, fuzzy):
            last = _match_at(phrase, tokens, i, fuzzy)
            if last is not None and last >= i and (best is None or last > best.last):
                best = Match(phrase.source, i, last)
        for pieces in range(2, joined_pieces + 1):
            run = tokens[i:i + pieces]
            if len(run) < pieces or run[-1].clause != run[0].clause:
                break
            joined = "".join(t.norm for t in run)
            for phrase in single:
                if joined in phrase.tokens[0].alternatives and (best is None or i + pieces - 1 > best.last):
                    best = Match(phrase.source, i, i + pieces - 1)
        if best is not None:
            if not (negation and is_negated(tokens, best.first)):
                matches.append(best)
            i = best.last + 1
        else:
            i += 1
    return matches


def redact_profanity(text: str, extra: Iterable[str] = ()) -> str:
    """Replace profane words with their first letter and asterisks: "f******", keeping everything else."""
    words = PROFANITY | {normalize_word(w) for w in extra}
    normalized = unicodedata.normalize("NFKC", text).replace("’", "'")
    out, cursor = [], 0
    for token in tokenize(normalized):
        if any(word_matches(token.norm, word, False, False) or (len(word) >= 4 and token.norm.endswith(word) and token.norm not in _SAFE_ENDINGS) for word in words):
            out.append(normalized[cursor : token.start])
            raw = normalized[token.start : token.end]
            out.append(raw[0] + "*" * (len(raw) - 1))
            cursor = token.end
    out.append(normalized[cursor:])
    return "".join(out)


# Ordinary words that end like a profanity (compounds such as "dumbass" are redacted).
_SAFE_ENDINGS = frozenset({"scrap", "scrapped", "dickens", "cockpit"})
