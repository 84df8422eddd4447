"""streamproc.offsets: which consumer positions the broker's log no longer has."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streamproc.offsets import OffsetLoss, check_position


def test_position_past_the_log_end_is_lost_data():
    lost = check_position("t", 1, 40, 0, 12)
    assert lost is not None and lost.loss is OffsetLoss.beyond_end
    assert "offsets 12..39 it had read are gone" in lost.describe("input partition")
    assert "t[1]" in lost.describe("input partition") and "Re-reading from offset 0" in lost.describe("x")


def test_position_before_the_log_start_was_deleted_unread():
    lost = check_position("t", 0, 5, 9, 30)
    assert lost is not None and lost.loss is OffsetLoss.before_start
    assert "offsets 5..8 were deleted before it read them" in lost.describe("input partition")


def test_unknown_positions_and_log_bounds_are_not_judged():
    assert check_position("t", 0, None, 0, 10) is None
    assert check_position("t", 0, 5, None, 10) is None
    assert check_position("t", 0, 5, 0, None) is None
    assert check_position("t", 0, -1, 3, 10) is None


@given(start=st.integers(0, 10**6), length=st.integers(0, 10**6), data=st.data())
def test_every_position_inside_the_log_including_its_end_is_fine(start, length, data):
    end = start + length
    position = data.draw(st.integers(start, end))
    assert check_position("t", 0, position, start, end) is None
    assert check_position("t", 0, end + 1, start, end).loss is OffsetLoss.beyond_end
    if start > 0:
        assert check_position("t", 0, start - 1, start, end).loss is OffsetLoss.before_start
