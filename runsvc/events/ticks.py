"""Publish ticks: a run's batches are delivered at most once per tick (events/bus.py).

A batch published within the run's tick of its previous delivery is held, and everything held goes out
together at the end of the tick as one batch. Each delivered batch costs every watcher a frame (a task
hop, a WebSocket frame, a send syscall) however many events it holds, so a child printing 1,000 lines/s in
100 commits/s costs 100 frames/s per watcher without ticks and at most 1 / tick with them; and the
watchers of a run all get the same batch, so its JSON and frame text are built once. The first batch
after a quiet spell goes out at once. Held batches are committed already, so a watcher that subscribes
meanwhile finds them in SQLite.

The tick adapts to the run's watchers (`tick_max_s`, `frames_per_s`): a run's tick is long enough that
its watchers together get at most `frames_per_s` frames per second, from `tick_s` up to `tick_max_s`. A
run watched by a few keeps the short tick (its lines wait at most `tick_s`); a run watched by a hundred
sends them fewer, larger frames, each of which costs about the same to send, and its lines wait up to
`tick_max_s`. The tick is decided each time one starts, from the watchers the run has then.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import attrs
import trio

from ..model import EventBatch


@attrs.define(eq=False)
class RunTick:
    """One run's tick: what it holds and when the current tick ends."""

    held: list[EventBatch] = attrs.Factory(list)  # published within the current tick, not delivered yet
    next_delivery_at: float = -math.inf  # trio time the current tick ends


class TickPacer:
    """Decides, per published batch, whether it goes out now or at the end of its run's tick; `serve`
    delivers the held ones. `deliver(run_id, batch)` hands a batch to the run's subscribers;
    `watchers(run_id)` is what the run's watchers weigh now, in frames (events/bus.py, frame_weight)."""

    def __init__(
        self,
        tick_s: float,
        tick_max_s: float,
        frames_per_s: float,
        deliver: Callable[[int, EventBatch], None],
        watchers: Callable[[int], float],
    ):
        self._tick_s = tick_s
        self._tick_max_s = max(tick_s, tick_max_s)
        self._frames_per_s = frames_per_s
        self._deliver = deliver
        self._watchers = watchers
        self._holding: dict[int, RunTick] = {}  # runs with held batches
        self._holding_changed = trio.Event()

    @property
    def enabled(self) -> bool:
        return self._tick_s > 0

    def hold(self, run_id: int, tick: RunTick, batch: EventBatch) -> bool:
        """True when `batch` is held for the end of the run's tick; False when it goes out now (and a new
        tick starts)."""
        now = trio.current_time()
        if tick.held or now < tick.next_delivery_at:
            tick.held.append(batch)
            if run_id not in self._holding:
                self._holding[run_id] = tick
                self._holding_changed.set()
            return True
        tick.next_delivery_at = now + self.tick_for(self._watchers(run_id))
        return False

    def drop(self, run_id: int, tick: RunTick | None = None) -> None:
        """Forget what the run holds (nobody is left to deliver it to, or the run was deleted)."""
        self._holding.pop(run_id, None)
        if tick is not None:
            tick.held.clear()

    def tick_for(self, watchers: float) -> float:
        """A run's next tick: `tick_s`, longer while its watchers would get more than `frames_per_s`
        frames per second together, at most `tick_max_s`."""
        return min(self._tick_max_s, max(self._tick_s, watchers / self._frames_per_s))

    def deliver_due(self) -> float:
        """Deliver the held batches whose tick has ended; return the trio time the next tick ends."""
        now = trio.current_time()
        next_due = math.inf
        for run_id, tick in list(self._holding.items()):
            if tick.next_delivery_at > now:
                next_due = min(next_due, tick.next_delivery_at)
                continue
            del self._holding[run_id]
            held, tick.held = tick.held, []
            tick.next_delivery_at = now + self.tick_for(self._watchers(run_id))
            for group in _contiguous(held):
                self._deliver(run_id, EventBatch.concat(group))
        return next_due

    async def serve(self) -> None:
        """Deliver held batches at the end of their tick; sleeps until then, no periodic wakeups."""
        while True:
            self._holding_changed = trio.Event()
            next_due = self.deliver_due()
            with trio.move_on_at(next_due):
                await self._holding_changed.wait()


def _contiguous(batches: list[EventBatch]) -> list[list[EventBatch]]:
    """Consecutive batches grouped where their seqs follow on without a gap. Every commit is published, so
    there is normally one group; if one ever were not, the consumer must see the gap (and resync), not a
    merged batch whose seq range hides it."""
    groups = [[batches[0]]]
    for batch in batches[1:]:
        if batch.first_seq == groups[-1][-1].last_seq + 1:
            groups[-1].append(batch)
        else:
            groups.append([batch])
    return groups
