"""Is a consumer position still in the broker's log? Pure; the Kafka driver (agents/compat.py) asks.

A broker can lose records a worker already consumed: a dev broker with memory storage restarts
empty, a topic is deleted and recreated, an unclean leader election promotes a replica that lags.
The worker then holds positions (committed offsets of its input topics, the changelog offsets
its tables were rebuilt up to) that the log no longer has. Faust does not notice: it drops every
record below the position it remembers, or refuses to recover a table (``ConsistencyError``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class OffsetLoss(str, Enum):
    beyond_end = "beyond_end"  # the log now ends before the position: records were lost or the topic recreated
    before_start = "before_start"  # the log now starts after the position: records were deleted unread


@dataclass(frozen=True)
class LostPosition:
    topic: str
    partition: int
    position: int  # the next offset the worker would have read
    log_start: int
    log_end: int  # next offset the broker will write (high watermark)
    loss: OffsetLoss

    def describe(self, what: str) -> str:
        if self.loss is OffsetLoss.beyond_end:
            gone = f"offsets {self.log_end}..{self.position - 1} it had read are gone"
        else:
            gone = f"offsets {self.position}..{self.log_start - 1} were deleted before it read them"
        return (
            f"{what} {self.topic}[{self.partition}]: the broker's log now spans {self.log_start}..{self.log_end} "
            f"but the worker was at {self.position}; {gone}. Re-reading from offset {self.log_start}."
        )


def check_position(
    topic: str, partition: int, position: int | None, log_start: int | None, log_end: int | None
) -> LostPosition | None:
    """``position`` is the next offset to read (a committed offset); None when unknown (nothing to check)."""
    if position is None or log_start is None or log_end is None or position < 0:
        return None
    if position > log_end:
        return LostPosition(topic, partition, position, log_start, log_end, OffsetLoss.beyond_end)
    if position < log_start:
        return LostPosition(topic, partition, position, log_start, log_end, OffsetLoss.before_start)
    return None
