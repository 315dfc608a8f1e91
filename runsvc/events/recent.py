"""A run's latest delivered batches, kept for its subscribers that lag (events/bus.py).

A subscriber whose channel overflowed resyncs from here instead of each one reading the same pages from
SQLite (events/stream.py). The batches are contiguous in seq and bounded in events: a batch that does not
follow on from the last one (nobody watched meanwhile) starts the cache afresh, so it never hides a gap.
"""

from __future__ import annotations

import collections

from ..model import EventBatch


class RecentBatches:
    def __init__(self, max_events: int):
        self._max_events = max_events
        self._batches: collections.deque[EventBatch] = collections.deque()
        self._events = 0

    def add(self, batch: EventBatch) -> None:
        batches = self._batches
        if batches and batches[-1].last_seq + 1 != batch.first_seq:
            self.clear()  # not contiguous: start afresh
        batches.append(batch)
        self._events += len(batch)
        while self._events - len(batches[0]) >= self._max_events:
            self._events -= len(batches.popleft())

    def clear(self) -> None:
        self._batches.clear()
        self._events = 0

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
