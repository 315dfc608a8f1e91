"""The in-process run-event bus: per run, a set of subscribers, each with a bounded memory channel.

Publishing happens right after the commit that made a batch durable. It is synchronous and never blocks:
a subscriber whose channel is full (`capacity` batches, `max_events` events or `max_chars` characters
of event JSON, whichever comes first) misses the batch and is marked *lagged*; its consumer then reads
what it missed from the run's recent batches (events/recent.py) or from SQLite (see events/stream.py).
Nothing here touches SQLite. A run's entry with no subscribers is forgotten after an idle TTL.

With publish ticks (`tick_s` > 0), a run's batches are delivered at most once per tick, merged
(events/ticks.py).

Direct delivery: a subscriber may give a *direct sink*, a function that writes a batch to its consumer's
peer at once (a run-event WebSocket on our own transport: the frame's bytes, built once per batch, into
its socket; http/transport.py). While its consumer waits in `receive(delivered)` with nothing buffered, a
batch that follows on from `delivered` goes to the sink, synchronously, instead of the channel: no task
wakes and nothing is queued, so a run's hundred watchers cost a hundred writes per tick, not a hundred task
wake-ups. The sink may refuse (False: its socket is busy, full or closing); the batch then takes the
channel as usual. `direct_last` tells the consumer how far the sink has delivered. The terminal batch
always takes the channel, so the consumer sees the run end. A watcher with a sink counts
DIRECT_FRAME_WEIGHT of a frame in the adaptive tick.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import attrs
import trio

from ..model import EventBatch, RunGone
from .recent import RecentBatches, json_chars
from .ticks import RunTick, TickPacer

# What one subscriber's channel may hold, in characters of event JSON: the batches are shared by the
# run's subscribers, but one that stops reading pins them after the others have moved on, and a run's
# output is hostile input (a line of control characters is six times its size in JSON; issue 20).
SUBSCRIBER_MAX_CHARS = 8 * 2**20  # 8 Mi characters

# What a frame written by a direct sink costs against one through a socket's sender task, for the adaptive
# tick: ~10-20 µs of one write against ~60-170 µs of a task wake-up and its write (BENCHMARKS.md, issue 19
# round 3), so a run watched through sinks keeps the short tick four times as long.
DIRECT_FRAME_WEIGHT = 0.25

DirectSink = Callable[[EventBatch], bool]
"""Delivers a batch to the subscriber's peer now, in order after everything before it (True), or cannot
(False: nothing was written). Called synchronously by the publisher; must not block."""


@attrs.frozen
class BusStatistics:
    runs_tracked: int
    subscribers: int
    batches_published: int
    batches_delivered: int  # to the subscribers; fewer than published when ticks merge batches
    events_published: int
    lag_events: int  # times a batch could not be delivered to a full subscriber
    direct_deliveries: int  # batches a subscriber's direct sink took (no channel, no task woken)


@attrs.frozen
class SubscriptionStatistics:
    run_id: int
    lagged: bool  # missed a batch; its consumer resyncs from memory or SQLite
    buffered_batches: int  # published, not yet received
    buffered_events: int
    buffered_chars: int  # characters of event JSON
    max_batches: int
    max_events: int
    max_chars: int
    direct_last: int  # delivered through this seq, by its consumer or its direct sink (0: not armed yet)


class Subscription:
    """One subscriber's view of one run. Use as `with bus.subscribe(run_id) as sub:`."""

    def __init__(
        self, bus: RunEventBus, run_id: int, capacity: int, max_events: int, max_chars: int,
        direct: DirectSink | None = None,
    ):
        self.run_id = run_id
        self._bus = bus
        self._send, self._receive = trio.open_memory_channel[EventBatch](capacity)
        self._capacity = capacity
        self._max_events = max_events
        self._max_chars = max_chars
        self._buffered_events = 0  # bounds memory too: batches can be large (a whole 64 KiB read)
        self._buffered_chars = 0
        self._next: EventBatch | None = None  # received from the channel, not yet handed out (receive_ready)
        self.lagged = False
        self._direct = direct
        self._waiting = False  # the consumer waits in receive() with everything before delivered
        self.direct_last = 0  # delivered through this seq, by the consumer (as it last said) or the sink

    @property
    def has_direct_sink(self) -> bool:
        return self._direct is not None

    def _offer(self, batch: EventBatch) -> bool:
        """Publisher side; False when the subscriber's channel is full (it is then lagged)."""
        if self.lagged:
            return True  # already resyncing; what it misses now it will read there too
        if (
            self._waiting
            and not self._buffered_events
            and batch.first_seq == self.direct_last + 1
            and not batch.is_terminal
            and self._direct is not None
            and self._direct(batch)
        ):
            self.direct_last = batch.last_seq
            self._bus._direct_deliveries += 1
            return True
        size, chars = len(batch), json_chars(batch)
        if self._buffered_events and (
            self._buffered_events + size > self._max_events or self._buffered_chars + chars > self._max_chars
        ):
            self.lagged = True
            return False
        try:
            self._send.send_nowait(batch)
        except trio.WouldBlock:
            self.lagged = True
            return False
        except trio.BrokenResourceError:
            return True
        self._buffered_events += size
        self._buffered_chars += chars
        return True

    def _took(self, batch: EventBatch) -> None:
        self._buffered_events -= len(batch)
        self._buffered_chars -= json_chars(batch)

    async def receive(self, delivered: int | None = None) -> EventBatch:
        """The next live batch. Raises RunGone once the run has been deleted.

        `delivered`: the seq through which the consumer has delivered everything it received. While it
        waits here, batches that follow on go to the direct sink if the subscription has one; on return,
        `direct_last` says how far they went."""
        if self._next is not None:
            batch, self._next = self._next, None
            self._took(batch)
            return batch
        if delivered is not None and self._direct is not None:
            self.direct_last = max(self.direct_last, delivered)
            self._waiting = True
        try:
            batch = await self._receive.receive()
        except trio.EndOfChannel:
            raise RunGone(f"run {self.run_id} was deleted") from None
        finally:
            self._waiting = False
        self._took(batch)
        return batch

    def receive_ready(self, max_events: int, max_chars: int | None = None) -> list[EventBatch]:
        """Batches already buffered, without waiting, up to about `max_events` events and at most
        `max_chars` characters of JSON (a batch that does not fit waits for the next call)."""
        ready: list[EventBatch] = []
        count = chars = 0
        while count < max_events:
            batch = self._next
            if batch is None:
                try:
                    batch = self._receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            size = json_chars(batch)
            if max_chars is not None and chars + size > max_chars:
                self._next = batch
                break
            self._next = None
            self._took(batch)
            count += len(batch)
            chars += size
            ready.append(batch)
        return ready

    def clear_lag(self) -> None:
        """Drop what is buffered (the consumer is about to read it from SQLite) and resume delivery."""
        while True:
            try:
                self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        self._next = None
        self._buffered_events = self._buffered_chars = 0
        self.lagged = False

    def statistics(self) -> SubscriptionStatistics:
        return SubscriptionStatistics(
            run_id=self.run_id,
            lagged=self.lagged,
            buffered_batches=self._receive.statistics().current_buffer_used,
            buffered_events=self._buffered_events,
            buffered_chars=self._buffered_chars,
            max_batches=self._capacity,
            max_events=self._max_events,
            max_chars=self._max_chars,
            direct_last=self.direct_last,
        )

    def _mark_gone(self) -> None:
        self._send.close()  # the consumer's receive() then raises RunGone

    def close(self) -> None:
        self._send.close()
        self._receive.close()
        self._bus._unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@attrs.define(eq=False)
class _RunEntry:
    recent: RecentBatches  # shared by its subscribers: one that lagged resyncs from here
    subscribers: set[Subscription] = attrs.Factory(set)
    idle_since: float = math.inf  # trio time the last subscriber left; inf while subscribed
    tick: RunTick = attrs.Factory(RunTick)


class RunEventBus:
    def __init__(
        self,
        *,
        capacity: int = 1024,
        max_events: int = 10_000,
        max_chars: int = SUBSCRIBER_MAX_CHARS,
        idle_ttl_s: float = 600.0,
        tick_s: float = 0.0,
        tick_max_s: float = 0.0,
        frames_per_s: float = math.inf,
    ):
        """`tick_s` > 0 needs `serve()` running: it delivers the held batches. `tick_max_s` below
        `tick_s` (the default) means a fixed tick."""
        self._capacity = capacity
        self._max_events = max_events
        self._max_chars = max_chars
        self._recent_events = 5 * max_events  # per run: what a lagged subscriber can resync from
        self._recent_chars = 4 * max_chars
        self._idle_ttl_s = idle_ttl_s
        self._runs: dict[int, _RunEntry] = {}
        self._became_idle = trio.Event()
        self._ticks = TickPacer(tick_s, tick_max_s, frames_per_s, self._deliver, self.frame_weight)
        self._batches_published = 0
        self._batches_delivered = 0
        self._events_published = 0
        self._lag_events = 0
        self._direct_deliveries = 0

    def subscribe(self, run_id: int, direct: DirectSink | None = None) -> Subscription:
        """A new subscriber of the run; `direct`: its direct sink (see the module's docstring)."""
        entry = self._runs.get(run_id)
        if entry is None:
            entry = self._runs[run_id] = _RunEntry(RecentBatches(self._recent_events, self._recent_chars))
        subscription = Subscription(self, run_id, self._capacity, self._max_events, self._max_chars, direct)
        entry.subscribers.add(subscription)
        entry.idle_since = math.inf
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        entry = self._runs.get(subscription.run_id)
        if entry is None or subscription not in entry.subscribers:
            return
        entry.subscribers.discard(subscription)
        if not entry.subscribers:
            entry.idle_since = trio.current_time()
            entry.recent.clear()  # kept only for subscribers that lag; none are left
            self._ticks.drop(subscription.run_id, entry.tick)  # nobody to deliver them to
            self._became_idle.set()

    def publish(self, batch: EventBatch) -> None:
        """Offer a committed batch to every subscriber of its run (at the end of the tick, with ticks).
        Never blocks."""
        self._batches_published += 1
        self._events_published += len(batch)
        entry = self._runs.get(batch.run_id)
        if entry is None or not entry.subscribers:
            return
        if self._ticks.enabled and self._ticks.hold(batch.run_id, entry.tick, batch):
            return
        self._deliver(batch.run_id, batch)

    def _deliver(self, run_id: int, batch: EventBatch) -> None:
        self._batches_delivered += 1
        entry = self._runs.get(run_id)
        if entry is None or not entry.subscribers:
            return
        entry.recent.add(batch)
        for subscription in entry.subscribers:
            if not subscription._offer(batch):
                self._lag_events += 1

    def recent_after(self, run_id: int, seq: int) -> list[EventBatch] | None:
        """The run's published events after `seq`, as batches, if memory still holds all of them
        (an empty list when there are none yet); None when some are only in SQLite."""
        entry = self._runs.get(run_id)
        return entry.recent.after(seq) if entry is not None else None

    def run_deleted(self, run_id: int) -> None:
        """Tell the run's subscribers it is gone (they raise RunGone) and forget the run."""
        self._ticks.drop(run_id)
        entry = self._runs.pop(run_id, None)
        if entry is not None:
            for subscription in entry.subscribers:
                subscription._mark_gone()

    def subscriber_count(self, run_id: int) -> int:
        entry = self._runs.get(run_id)
        return len(entry.subscribers) if entry else 0

    def frame_weight(self, run_id: int) -> float:
        """What one frame to each of the run's subscribers costs together, in frames through a sender
        task (the adaptive tick's measure; a direct sink's frame counts DIRECT_FRAME_WEIGHT)."""
        entry = self._runs.get(run_id)
        if entry is None:
            return 0
        return sum(DIRECT_FRAME_WEIGHT if s.has_direct_sink else 1 for s in entry.subscribers)

    def subscription_statistics(self, run_id: int) -> list[SubscriptionStatistics]:
        """A snapshot of each of the run's subscribers."""
        entry = self._runs.get(run_id)
        return [subscription.statistics() for subscription in entry.subscribers] if entry else []

    def statistics(self) -> BusStatistics:
        return BusStatistics(
            runs_tracked=len(self._runs),
            subscribers=sum(len(e.subscribers) for e in self._runs.values()),
            batches_published=self._batches_published,
            batches_delivered=self._batches_delivered,
            events_published=self._events_published,
            lag_events=self._lag_events,
            direct_deliveries=self._direct_deliveries,
        )

    def prune_idle(self) -> float:
        """Forget entries idle for the TTL; return the trio time of the next expiry (inf if none)."""
        now = trio.current_time()
        next_expiry = math.inf
        for run_id, entry in list(self._runs.items()):
            expiry = entry.idle_since + self._idle_ttl_s
            if expiry <= now:
                del self._runs[run_id]
            else:
                next_expiry = min(next_expiry, expiry)
        return next_expiry

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The bus's background work: forget idle entries after the TTL, and deliver held batches at the
        end of their tick. Sleeps until the next expiry or tick end; no periodic wakeups."""
        async with trio.open_nursery() as nursery:
            if self._ticks.enabled:
                nursery.start_soon(self._ticks.serve)
            task_status.started()
            while True:
                self._became_idle = trio.Event()
                next_expiry = self.prune_idle()
                with trio.move_on_at(next_expiry):
                    await self._became_idle.wait()
