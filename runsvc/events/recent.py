"""A run's latest delivered batches, kept for its subscribers that lag (events/bus.py).

A subscriber whose channel overflowed resyncs from here instead of each one reading the same pages from
SQLite (events/stream.py). The batches are contiguous in seq and bounded in events and in characters of
JSON (a run's output is hostile input: issue 20): a batch that does not
follow on from the last one (nobody watched meanwhile) starts the cache afresh, so it never hides a gap.
"""

from __future__ import annotations

import collections

from ..model import EventBatch


def json_chars(batch: EventBatch) -> int:
    """The characters of the batch's event JSON (what its frames or a page carry), counted once per batch."""
    return batch.derived("json_chars", _count_chars)


def _count_chars(batch: EventBatch) -> int:
    return sum(len(fragment) for fragment in batch.fragments)


class RecentBatches:
    def __init__(self, max_events: int, max_chars: int):
        self._max_events = max_events
        self._max_chars = max_chars
        self._batches: collections.deque[EventBatch] = collections.deque()
        self._events = 0
        self._chars = 0

    def add(self, batch: EventBatch) -> None:
        batches = self._batches
        if batches and batches[-1].last_seq + 1 != batch.first_seq:
            self.clear()  # not contiguous: start afresh
        batches.append(batch)
        self._events += len(batch)
        self._chars += json_chars(batch)
        # The newest batch always stays, even alone beyond the bounds (a lagged subscriber needs it).
        while len(batches) > 1 and (
            self._events - len(batches[0]) >= self._max_events or self._chars > self._max_chars
        ):
            oldest = batches.popleft()
            self._events -= len(oldest)
            self._chars -= json_chars(oldest)

    def clear(self) -> None:
        self._batches.clear()
        self._events = self._chars = 0

    def after(self, seq: int) -> list[EventBatch] | None:
        """The events after `seq`, as batches, if all of them are held (an empty list when there are none
        yet); None when some are only in SQLite."""
        batches = self._batches
        if not batches or batches[0].first_seq > seq + 1:
            return None
        newer = [batch for batch in batches if batch.last_seq > seq]
        if newer:
            newer[0] = newer[0].after(seq) or newer[0]  # the first may overlap what the caller has
        return newer
