"""The shared record path: key check, dead letters for rejections and for bugs."""

from __future__ import annotations

import asyncio

import pytest

from streamproc.errors import InputRejected, RejectReason
from streamproc.record import RecordRef, RecordResult, check_key, guarded, guarded_async, parse_audio_frame

REF = RecordRef("calls.x", b"c1", b"payload", partition=2, offset=7)


def test_check_key():
    assert check_key(b"c1", "c1") == "c1"
    assert check_key(b"c1", None) == "c1"
    for key, call_id in ((b"c2", "c1"), (None, "c1"), (None, None), (b"", None)):
        with pytest.raises(InputRejected) as info:
            check_key(key, call_id)
        assert info.value.reason is RejectReason.key_mismatch


def test_a_rejection_and_a_bug_both_become_dead_letters():
    def reject() -> RecordResult:
        raise InputRejected(RejectReason.invalid_field, "bad")

    def bug() -> RecordResult:
        raise ZeroDivisionError("oops")

    for decide, reason in ((reject, RejectReason.invalid_field), (bug, RejectReason.internal_error)):
        result = guarded(REF, decide)
        (letter,) = result.dead_letters
        assert result.rejection is reason and result.stage == "rejected" and result.call_id == "c1"
        assert (letter.source_topic, letter.partition, letter.offset, letter.key) == ("calls.x", 2, 7, "c1")
    assert "ZeroDivisionError: oops" in guarded(REF, bug).dead_letters[0].detail
    assert guarded(REF, lambda: RecordResult("c1")).dead_letters == []


def test_guarded_async():
    async def bug() -> RecordResult:
        raise RuntimeError("x")

    assert asyncio.run(guarded_async(REF, bug)).rejection is RejectReason.internal_error


def test_parse_audio_frame_needs_the_key_and_valid_headers():
    with pytest.raises(InputRejected) as info:
        parse_audio_frame(None, [])
    assert info.value.reason is RejectReason.key_mismatch
    with pytest.raises(InputRejected):
        parse_audio_frame(b"c1", [])  # no audio headers
