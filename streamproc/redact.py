"""PII redaction for transcripts and alert evidence: card numbers, SSNs, phone numbers, e-mails.

Works on written forms ("4111 1111 1111 1111", "123-45-6789", "jane.doe@example.com") and on
the spoken forms a recogniser produces ("four one one one ...", "double four", "oh", Korean
sino-Korean digits "공일공 일이삼사", "jane dot doe at example dot com", "골뱅이"/"점").

How numbers are classified: digit tokens (written digits, digit words) separated only by
whitespace, ``- . , ( ) / +`` or the words "dash"/"hyphen" form one *run*. A run of

* 13–19 digits that passes the Luhn check is a card number (``[CARD]``);
* 9 digits that form a valid SSN (area not 000/666/9xx, group not 00, serial not 0000) is an SSN;
* otherwise 7–15 digits is treated as a phone number (``[PHONE]``): order numbers of that length
  are redacted too — over-redaction is the safe direction for a privacy filter;
* 16–19 digits failing Luhn are a card number too: a card the recogniser misheard (a digit lost, doubled or
  split off) fails the check but is still a card number in clear, and an order number of that length
  redacted is the safe direction;
* longer than 19 digits: card-number windows (Luhn) are cut out, the rest is classified again.

Runs shorter than 7 digits are never touched, so times, amounts and counts survive.
``redact`` is pure, linear in the text length, and idempotent.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Iterable


class PiiKind(StrEnum):
    card = "card"
    ssn = "ssn"
    phone = "phone"
    email = "email"


ALL_KINDS: frozenset[PiiKind] = frozenset(PiiKind)
TOKENS: dict[PiiKind, str] = {
    PiiKind.card: "[CARD]",
    PiiKind.ssn: "[SSN]",
    PiiKind.phone: "[PHONE]",
    PiiKind.email: "[EMAIL]",
}

# --------------------------------------------------------------------------- spoken digits

_ENGLISH_DIGITS = {
    "zero": "0", "oh": "0", "o": "0", "nought": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9",
}
# Sino-Korean digits, as used for phone and card numbers ("공일공 일이삼사 오육칠팔").
_KOREAN_DIGITS = {"공": "0", "영": "0", "일": "1", "이": "2", "삼": "3", "사": "4", "오": "5", "육": "6", "륙": "6",
                  "칠": "7", "팔": "8", "구": "9"}
_REPEAT = {"double": 2, "triple": 3}
_SEPARATOR_WORDS = {"dash", "hyphen"}
_SEPARATOR_CHARS = set("-.,()/+")

_TOKEN = re.compile(r"[0-9]+|[A-Za-z]+|[\uac00-\ud7a3]+|\S")


def _digits_of(token: str) -> str | None:
    """The digits a single token stands for, or None when it is not a number token."""
    if token.isascii() and token.isdigit():
        return token
    lower = token.lower()
    if lower in _ENGLISH_DIGITS:
        return _ENGLISH_DIGITS[lower]
    if all(ch in _KOREAN_DIGITS for ch in token):
        return "".join(_KOREAN_DIGITS[ch] for ch in token)
    return None


@dataclass
class _Run:
    """Consecutive digits with, for each digit, the character span of the token it came from."""

    digits: list[str]
    spans: list[tuple[int, int]]
    groups: list[int]  # digits per token, to recognise 3-2-4 SSN grouping


def _digit_runs(text: str) -> list[_Run]:
    runs: list[_Run] = []
    current = _Run([], [], [])

    def close() -> None:
        nonlocal current
        if current.digits:
            runs.append(current)
        current = _Run([], [], [])

    tokens = list(_TOKEN.finditer(text))
    i = 0
    while i < len(tokens):
        match = tokens[i]
        token = match.group()
        digits = _digits_of(token)
        if digits is None and token.lower() in _REPEAT and i + 1 < len(tokens):
            follower = _digits_of(tokens[i + 1].group())
            if follower is not None and len(follower) == 1:  # "double four" -> 44
                span = (match.start(), tokens[i + 1].end())
                count = _REPEAT[token.lower()]
                current.digits.extend(follower * count)
                current.spans.extend([span] * count)
                current.groups.append(count)
                i += 2
                continue
        if digits is not None:
            current.digits.extend(digits)
            current.spans.extend([match.span()] * len(digits) if not token.isdigit() else
                                 [(match.start() + k, match.start() + k + 1) for k in range(len(digits))])
            current.groups.append(len(digits))
        elif token in _SEPARATOR_CHARS or token.lower() in _SEPARATOR_WORDS:
            pass  # keeps the run going
        else:
            close()
        i += 1
    close()
    return runs


def luhn_valid(number: str) -> bool:
    """The Luhn checksum every payment card number satisfies."""
    total = 0
    for index, char in enumerate(reversed(number)):
        value = ord(char) - 48
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def ssn_valid(number: str) -> bool:
    """Structurally valid US social security number (9 digits)."""
    if len(number) != 9 or not number.isdigit():
        return False
    area, group, serial = number[:3], number[3:5], number[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _classify(digits: str, groups: list[int] | None) -> PiiKind | None:
    """Kind of a whole run; ``groups`` (digits per token) is None for a cut-out piece of a run."""
    n = len(digits)
    if 13 <= n <= 19 and luhn_valid(digits):
        return PiiKind.card
    # Written SSNs are grouped 3-2-4 or unbroken; spoken ones come digit by digit.
    ssn_shaped = groups is None or groups in ([3, 2, 4], [9]) or min(groups) == 1
    if n == 9 and ssn_shaped and ssn_valid(digits):
        return PiiKind.ssn
    if 7 <= n <= 15:
        return PiiKind.phone
    if 16 <= n <= 19:  # card length, checksum failing: most likely a card the recogniser misheard
        return PiiKind.card
    return None


def _classify_run(run: _Run, lo: int, hi: int, out: list[tuple[int, int, PiiKind]]) -> None:
    """Classify digits[lo:hi]; stretches longer than a card number are searched for card windows."""
    digits = "".join(run.digits[lo:hi])
    if hi - lo <= 19:
        kind = _classify(digits, run.groups if (lo, hi) == (0, len(run.digits)) else None)
        if kind is not None:
            out.append((run.spans[lo][0], run.spans[hi - 1][1], kind))
        return
    start = pos = lo
    while pos <= hi - 13:
        for length in range(min(19, hi - pos), 12, -1):  # leftmost, longest card number
            if luhn_valid(digits[pos - lo:pos - lo + length]):
                if 0 < pos - start <= 19:
                    _classify_run(run, start, pos, out)
                out.append((run.spans[pos][0], run.spans[pos + length - 1][1], PiiKind.card))
                pos += length
                start = pos
                break
        else:
            pos += 1
    # What is left after the last card (if short enough) is classified on its own; a longer
    # stretch without any Luhn-valid window is left alone like any other non-card number.
    if 0 < hi - start <= 19:
        _classify_run(run, start, hi, out)


# --------------------------------------------------------------------------- e-mail

_TLDS = (
    "com|net|org|edu|gov|mil|int|io|co|ai|app|dev|info|biz|me|us|uk|ca|au|de|fr|jp|kr|cn|in|nl|se|no|es|it|ch|"
    "ru|br|mx|nz|ie|be|at|dk|fi|pl|pt|sg|hk|tw|eu"
)
_DOT = r"(?:\s+(?:dot|점|닷)\s+|\s*\.\s*)"
_AT_SPOKEN = r"\s+(?:at(?:\s+(?:sign|symbol))?|골뱅이|앳)\s+"
_JOIN_LOCAL = r"(?:\s+(?:dot|underscore|dash|hyphen|점|닷)\s+|[._%+-])"
_WORD = r"[A-Za-z0-9]+"
# Bounded repetitions and a word-boundary start keep matching linear on hostile input.
_WRITTEN_EMAIL = re.compile(
    rf"\b{_WORD}(?:[._%+-]{_WORD}){{0,16}}\s*@\s*{_WORD}(?:[.-]{_WORD}){{0,8}}\.[A-Za-z]{{2,24}}\b", re.IGNORECASE
)
_SPOKEN_EMAIL = re.compile(
    rf"\b{_WORD}(?:{_JOIN_LOCAL}{_WORD}){{0,8}}(?:{_AT_SPOKEN}|\s*@\s*){_WORD}(?:{_DOT}{_WORD}){{0,6}}{_DOT}(?:{_TLDS})\b",
    re.IGNORECASE,
)


# "look at the dot com bubble", "meet me at home dot com": a spoken "X at Y dot com" whose local
# part is a pronoun or common verb, or whose domain starts with a determiner, is ordinary speech.
_NOT_LOCAL = frozenset("me you him her us them it i we they look looking looked stay staying arrive arrived "
                       "meet be am is are was were".split())
_NOT_DOMAIN = frozenset("the a an my your our their his her its this that".split())
_SPOKEN_PARTS = re.compile(rf"({_WORD})(?:{_AT_SPOKEN}|\s*@\s*)({_WORD})", re.IGNORECASE)


def _email_spans(text: str) -> list[tuple[int, int, PiiKind]]:
    spans = [(m.start(), m.end(), PiiKind.email) for m in _WRITTEN_EMAIL.finditer(text)]
    for match in _SPOKEN_EMAIL.finditer(text):
        if "@" not in match.group():
            parts = _SPOKEN_PARTS.search(match.group())
            if parts and (parts.group(1).lower() in _NOT_LOCAL and parts.start() == 0
                          or parts.group(2).lower() in _NOT_DOMAIN):
                continue
        spans.append((match.start(), match.end(), PiiKind.email))
    return spans


# --------------------------------------------------------------------------- public API


@dataclass(frozen=True)
class Finding:
    start: int
    end: int
    kind: PiiKind

    def text(self, source: str) -> str:
        return source[self.start:self.end]


def _merge(spans: list[tuple[int, int, PiiKind]]) -> list[Finding]:
    merged: list[Finding] = []
    for start, end, kind in sorted(spans):
        if merged and start < merged[-1].end:
            last = merged[-1]
            # Overlap: keep one span; e-mail wins over numbers found inside it.
            keep = last.kind if last.kind is PiiKind.email or kind is not PiiKind.email else kind
            merged[-1] = Finding(last.start, max(last.end, end), keep)
        else:
            merged.append(Finding(start, end, kind))
    return merged


def find_pii(text: str, kinds: Iterable[PiiKind | str] = ALL_KINDS) -> list[Finding]:
    """Non-overlapping PII spans in ``text``, in order."""
    wanted = {PiiKind(kind) for kind in kinds}
    spans: list[tuple[int, int, PiiKind]] = []
    digits_text = text
    if PiiKind.email in wanted:
        spans += _email_spans(text)
        # An e-mail's digits are the e-mail's: a run must not go on into one ("… 000 1 at 0 dot at"), or the
        # number before it is classified with them here and without them once the e-mail is [EMAIL] (not idempotent).
        # NUL is a token that is neither a digit nor a separator, so it ends a run; offsets stay those of ``text``.
        for start, end, _ in spans:
            digits_text = digits_text[:start] + "\0" * (end - start) + digits_text[end:]
    if wanted & {PiiKind.card, PiiKind.ssn, PiiKind.phone}:
        numbers: list[tuple[int, int, PiiKind]] = []
        for run in _digit_runs(digits_text):
            if len(run.digits) >= 7:
                _classify_run(run, 0, len(run.digits), numbers)
        for start, end, kind in numbers:
            if kind in wanted:
                # Take a "(" or "+" right before the number with it: "(555) 123 4567", "+82 10 ...".
                while start > 0 and text[start - 1] in "(+":
                    start -= 1
                spans.append((start, end, kind))
    return _merge(spans)


def redact(text: str, kinds: Iterable[PiiKind | str] = ALL_KINDS) -> str:
    """``text`` with every PII span of ``kinds`` replaced by its token ([CARD], [SSN], [PHONE], [EMAIL])."""
    if not text:
        return text
    findings = find_pii(text, kinds)
    if not findings:
        return text
    parts: list[str] = []
    cursor = 0
    for finding in findings:
        parts.append(text[cursor:finding.start])
        parts.append(TOKENS[finding.kind])
        cursor = finding.end
    parts.append(text[cursor:])
    return "".join(parts)


def redact_segment(segment, kinds: Iterable[PiiKind | str] = ALL_KINDS):
    """A :class:`~streamproc.schemas.TranscriptSegment` with its text and words redacted.

    A word that overlaps a PII span (in the words joined by spaces) becomes the span's token,
    so word timings stay aligned with the audio.
    """
    kinds = frozenset(PiiKind(kind) for kind in kinds)
    update: dict = {"text": redact(segment.text, kinds)}
    if segment.words:
        joined, starts = "", []
        for word in segment.words:
            starts.append(len(joined))
            joined += word.word + " "
        findings = find_pii(joined, kinds)
        if findings:
            words = []
            for word, start in zip(segment.words, starts):
                end = start + len(word.word)
                hit = next((f for f in findings if f.start < end and start < f.end), None)
                words.append(word.model_copy(update={"word": TOKENS[hit.kind]}) if hit else word)
            update["words"] = words
    if update["text"] == segment.text and "words" not in update:
        return segment
    return segment.model_copy(update=update)


# --------------------------------------------------------------------------- dead-letter payloads

#: Numeric fields of streamproc's own input schemas: times, counters and positions, never PII.
#: Any other number with 7+ digits is classified like text (a phone or card number sent as a JSON
#: number is still PII); without this list every epoch timestamp would read as a phone number.
_NUMERIC_FIELDS = frozenset({
    "ts", "seq", "offset_ms", "sent_at_ms", "start_s", "end_s", "utterance", "revision", "schema_version",
    "occurrence", "conf", "confidence", "rate", "channels", "value", "threshold", "similarity", "audio_start_s",
    "audio_end_s",
})


def _is_timestamp(text: str) -> bool:
    if not 10 <= len(text) <= 40 or not text[:4].isdigit():
        return False
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _redact_json(value, key: str | None = None):
    if isinstance(value, str):
        return value if _is_timestamp(value) else redact(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int) and key not in _NUMERIC_FIELDS and abs(value) >= 1_000_000:
        text = str(value)
        redacted = redact(text)
        return value if redacted == text else redacted
    if isinstance(value, list):
        return [_redact_json(item) for item in value]
    if isinstance(value, dict):
        return {name: _redact_json(item, name) for name, item in value.items()}
    return value


def redact_payload(payload: bytes) -> tuple[bytes | None, bool]:
    """A rejected record's value as a dead letter may keep it: ``(bytes to keep, changed)``.

    The policy (docs/reliability.md, "Privacy"): dead letters never carry PII in clear.

    * UTF-8 JSON: every string value is redacted (ISO timestamps are left alone), and every
      number outside streamproc's own numeric fields is classified like text; the JSON is
      re-serialised only if something was redacted, otherwise the original bytes are kept.
    * UTF-8 text that is not JSON (a truncated record): the whole text is redacted (numbers in
      it, timestamps included, may become ``[PHONE]``: over-redaction is the safe direction).
    * Anything else (audio frames, binary garbage): not kept at all (``None``); the dead letter
      keeps only its size and SHA-256, enough to find the record on its source topic.
    """
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return None, True
    try:
        parsed = json.loads(text)
        cleaned = _redact_json(parsed)
        changed = cleaned != parsed
    except (ValueError, RecursionError):  # not JSON, or nested deeper than we walk: treat it as text
        redacted = redact(text)
        return (payload, False) if redacted == text else (redacted.encode("utf-8"), True)
    if not changed:
        return payload, False
    return json.dumps(cleaned).encode("ascii"), True  # ASCII escapes: lone surrogates survive
