"""The runs feed: every run creation and status change, pushed to live watchers of the runs list.

Not durable: a watcher that reconnects refetches the list. A watcher too slow to keep up is dropped
(its channel closes) rather than buffered without bound.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import trio

from ..model import Run

FEED_CAPACITY = 256  # frames buffered per watcher before it is dropped


class FeedWatcher:
    def __init__(self, feed: RunFeed):
        self._feed = feed
        self._send, self._receive = trio.open_memory_channel[str](FEED_CAPACITY)

    async def receive(self) -> str:
        """The next frame (JSON text). Raises trio.EndOfChannel once dropped for being too slow."""
        return await self._receive.receive()

    def close(self) -> None:
        self._feed._watchers.discard(self)
        self._send.close()
        self._receive.close()

    def __enter__(self) -> FeedWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@attrs.frozen
class FeedStatistics:
    watchers: int
    published: int
    dropped_watchers: int


class RunFeed:
    def __init__(self, frame: Callable[[Run], str]) -> None:
        """`frame` makes a published run's frame (JSON text; the HTTP layer's), once for all watchers."""
        self._frame = frame
        self._watchers: set[FeedWatcher] = set()
        self._published = 0
        self._dropped = 0

    def watch(self) -> FeedWatcher:
        watcher = FeedWatcher(self)
        self._watchers.add(watcher)
        return watcher

    def publish(self, run: Run) -> None:
        """Offer the run's new state to every watcher. Never blocks; drops watchers that are full."""
        self._published += 1
        if not self._watchers:
            return
        frame = self._frame(run)
        for watcher in list(self._watchers):
            try:
                watcher._send.send_nowait(frame)
            except trio.WouldBlock:
                self._dropped += 1
                self._watchers.discard(watcher)
                watcher._send.close()
            except trio.BrokenResourceError:
                self._watchers.discard(watcher)

    def statistics(self) -> FeedStatistics:
        return FeedStatistics(len(self._watchers), self._published, self._dropped)
