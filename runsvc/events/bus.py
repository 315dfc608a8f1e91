"""The in-process run-event bus: per run, a set of subscribers, each with a bounded memory channel.

Publishing happens right after the commit that made a batch durable. It is synchronous and never blocks:
a subscriber whose channel is full (`capacity` batches, or `max_events` events, whichever comes first)
misses the batch and is marked *lagged*; its consumer then reads what it missed from SQLite (see
events/stream.py). Nothing here touches SQLite. A run's entry with no
subscribers is forgotten after an idle TTL.

Publish ticks (`tick_s` > 0): a run's batches are delivered at most once per tick. A batch published
within `tick_s` of the run's previous delivery is held, and everything held goes out together at the end
of the tick as one batch. Each delivered batch costs every watcher a frame (a task hop, a WebSocket frame,
a send syscall) however many events it holds, so a child printing 1,000 lines/s in 100 commits/s costs
100 frames/s per watcher without ticks and at most 1 / tick_s with them; and the watchers of a run all get
the same batch, so its JSON and frame text are built once. The first batch after a quiet spell goes out
at once. Held batches are committed already, so a watcher that subscribes meanwhile finds them in SQLite.

The tick adapts to the run's watchers (`tick_max_s`, `frames_per_s`): a run's tick is long enough that
its watchers together get at most `frames_per_s` frames per second, from `tick_s` up to `tick_max_s`,
where a watcher without a direct sink (below) counts SENDER_FRAME_WEIGHT times: each of its frames costs
a task hop and the whole framing path (and a browser's, compression), several times a direct write. A
run watched by a few keeps the short tick (its lines wait at most `tick_s`); a run watched by a hundred
sends them fewer, larger frames, each of which costs the same to send, and its lines wait up to
`tick_max_s`. The tick is decided each time one starts, from the watchers the run has then.

Direct delivery: a subscriber may give a *direct sink*, a function that writes a batch to its consumer's
peer at once (a WebSocket: the frame's bytes, built once per batch, into the socket). While its consumer
waits in `receive(delivered)` with nothing buffered, a batch that follows on from `delivered` goes to the
sink, synchronously, instead of the channel: no task wakes and nothing is queued, so a run's hundred
watchers cost a hundred writes per tick, not a hundred task hops and framing paths. The sink may refuse
(returns False: the peer is busy or slow, or the socket cannot be written directly); the batch then takes
the channel as usual. `direct_last` tells the consumer how far the sink has delivered. The terminal batch
always takes the channel, so the consumer sees the run end.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable

import attrs
import trio

from ..model import EventBatch, RunGone

# How many direct writes one frame through a socket's sender task costs, for the adaptive tick: measured
# ~80 µs against ~8-14 µs (BENCHMARKS.md, issue 13 round 3); 4 keeps the tick a run watched only through
# senders had when every frame went that way (2,500 frames/s then, 10,000 now).
SENDER_FRAME_WEIGHT = 4

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
    max_batches: int
    max_events: int
    direct_last: int  # delivered through this seq, by its consumer or its direct sink (0: not armed yet)


class Subscription:
    """One subscriber's view of one run. Use as `with bus.subscribe(run_id) as sub:`."""

    def __init__(self, bus: RunEventBus, run_id: int, capacity: int, max_events: int, direct: DirectSink | None = None):
        self.run_id = run_id
        self._bus = bus
        self._send, self._receive = trio.open_memory_channel[EventBatch](capacity)
        self._capacity = capacity
        self._max_events = max_events
        self._buffered_events = 0  # bounds memory too: batches can be large (a whole 64 KiB read)
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
            return True  # already resyncing from SQLite; what it misses now it will read there too
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
        size = len(batch)
        if self._buffered_events and self._buffered_events + size > self._max_events:
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
        return True

    async def receive(self, delivered: int | None = None) -> EventBatch:
        """The next live batch. Raises RunGone once the run has been deleted.

        `delivered`: the seq through which the consumer has delivered everything it received. While it
        waits here, batches that follow on go to the direct sink if the subscription has one; on return,
        `direct_last` says how far they went."""
        if delivered is not None and self._direct is not None:
            self.direct_last = max(self.direct_last, delivered)
            self._waiting = True
        try:
            batch = await self._receive.receive()
        except trio.EndOfChannel:
            raise RunGone(f"run {self.run_id} was deleted") from None
        finally:
            self._waiting = False
        self._buffered_events -= len(batch)
        return batch

    def receive_ready(self, max_events: int) -> list[EventBatch]:
        """Batches already buffered, without waiting, up to about `max_events` events."""
        ready: list[EventBatch] = []
        count = 0
        while count < max_events:
            try:
                batch = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            self._buffered_events -= len(batch)
            count += len(batch)
            ready.append(batch)
        return ready

    def clear_lag(self) -> None:
        """Drop what is buffered (the consumer is about to read it from SQLite) and resume delivery."""
        while True:
            try:
                self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        self._buffered_events = 0
        self.lagged = False

    def statistics(self) -> SubscriptionStatistics:
        return SubscriptionStatistics(
            run_id=self.run_id,
            lagged=self.lagged,
            buffered_batches=self._receive.statistics().current_buffer_used,
            buffered_events=self._buffered_events,
            max_batches=self._capacity,
            max_events=self._max_events,
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
    subscribers: set[Subscription] = attrs.Factory(set)
    idle_since: float = math.inf  # trio time the last subscriber left; inf while subscribed
    # The run's latest batches, shared by all its subscribers: one that lagged resyncs from here
    # instead of each reading the same pages from SQLite. Contiguous in seq; bounded in events.
    recent: collections.deque[EventBatch] = attrs.Factory(collections.deque)
    recent_events: int = 0
    held: list[EventBatch] = attrs.Factory(list)  # published within the current tick, not delivered yet
    next_delivery_at: float = -math.inf  # trio time the current tick ends


class RunEventBus:
    def __init__(
        self,
        *,
        capacity: int = 1024,
        max_events: int = 10_000,
        idle_ttl_s: float = 600.0,
        tick_s: float = 0.0,
        tick_max_s: float = 0.0,
        frames_per_s: float = math.inf,
    ):
        """`tick_s` > 0 needs `run_pruner()` running: it delivers the held batches. `tick_max_s` below
        `tick_s` (the default) means a fixed tick."""
        self._capacity = capacity
        self._max_events = max_events
        self._recent_events = 5 * max_events  # per run: what a lagged subscriber can resync from
        self._idle_ttl_s = idle_ttl_s
        self._runs: dict[int, _RunEntry] = {}
        self._became_idle = trio.Event()
        self._tick_s = tick_s
        self._tick_max_s = max(tick_s, tick_max_s)
        self._frames_per_s = frames_per_s
        self._holding: dict[int, _RunEntry] = {}  # runs with held batches
        self._holding_changed = trio.Event()
        self._batches_published = 0
        self._batches_delivered = 0
        self._events_published = 0
        self._lag_events = 0
        self._direct_deliveries = 0

    def subscribe(self, run_id: int, direct: DirectSink | None = None) -> Subscription:
        """A new subscriber of the run; `direct`: its direct sink (see the module's docstring)."""
        entry = self._runs.get(run_id)
        if entry is None:
            entry = self._runs[run_id] = _RunEntry()
        subscription = Subscription(self, run_id, self._capacity, self._max_events, direct)
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
            entry.recent_events = 0
            entry.held.clear()  # nobody to deliver them to
            self._holding.pop(subscription.run_id, None)
            self._became_idle.set()

    def publish(self, batch: EventBatch) -> None:
        """Offer a committed batch to every subscriber of its run (at the end of the tick, with ticks).
        Never blocks."""
        self._batches_published += 1
        self._events_published += len(batch)
        entry = self._runs.get(batch.run_id)
        if entry is None or not entry.subscribers:
            return
        if self._tick_s > 0:
            now = trio.current_time()
            if entry.held or now < entry.next_delivery_at:
                entry.held.append(batch)
                if batch.run_id not in self._holding:
                    self._holding[batch.run_id] = entry
                    self._holding_changed.set()
                return
            entry.next_delivery_at = now + self._tick_for(entry)
        self._deliver(entry, batch)

    def _tick_for(self, entry: _RunEntry) -> float:
        """The run's next tick: `tick_s`, longer while its watchers would get more than `frames_per_s`
        frames per second together, at most `tick_max_s`."""
        weight = sum(1 if s.has_direct_sink else SENDER_FRAME_WEIGHT for s in entry.subscribers)
        return min(self._tick_max_s, max(self._tick_s, weight / self._frames_per_s))

    def _deliver(self, entry: _RunEntry, batch: EventBatch) -> None:
        self._batches_delivered += 1
        if entry.subscribers:
            if entry.recent and entry.recent[-1].last_seq + 1 != batch.first_seq:
                entry.recent.clear()  # not contiguous (nobody subscribed meanwhile): start afresh
                entry.recent_events = 0
            entry.recent.append(batch)
            entry.recent_events += len(batch)
            while entry.recent_events - len(entry.recent[0]) >= self._recent_events:
                entry.recent_events -= len(entry.recent.popleft())
        for subscription in entry.subscribers:
            if not subscription._offer(batch):
                self._lag_events += 1

    def recent_after(self, run_id: int, seq: int) -> list[EventBatch] | None:
        """The run's published events after `seq`, as batches, if memory still holds all of them
        (an empty list when there are none yet); None when some are only in SQLite."""
        entry = self._runs.get(run_id)
        if entry is None or not entry.recent or entry.recent[0].first_seq > seq + 1:
            return None
        newer = [batch for batch in entry.recent if batch.last_seq > seq]
        if newer:
            newer[0] = newer[0].after(seq) or newer[0]  # the first may overlap what the caller has
        return newer

    def _deliver_held(self) -> float:
        """Deliver the held batches whose tick has ended; return the trio time the next tick ends."""
        now = trio.current_time()
        next_due = math.inf
        for run_id, entry in list(self._holding.items()):
            if entry.next_delivery_at > now:
                next_due = min(next_due, entry.next_delivery_at)
                continue
            del self._holding[run_id]
            held, entry.held = entry.held, []
            entry.next_delivery_at = now + self._tick_for(entry)
            for group in _contiguous(held):
                self._deliver(entry, EventBatch.concat(group))
        return next_due

    async def _run_ticks(self) -> None:
        while True:
            self._holding_changed = trio.Event()
            next_due = self._deliver_held()
            with trio.move_on_at(next_due):
                await self._holding_changed.wait()

    def run_deleted(self, run_id: int) -> None:
        """Tell the run's subscribers it is gone (they raise RunGone) and forget the run."""
        self._holding.pop(run_id, None)
        entry = self._runs.pop(run_id, None)
        if entry is not None:
            for subscription in entry.subscribers:
                subscription._mark_gone()

    def subscriber_count(self, run_id: int) -> int:
        entry = self._runs.get(run_id)
        return len(entry.subscribers) if entry else 0

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

    async def run_pruner(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The bus's background work: forget idle entries after the TTL, and deliver held batches at the
        end of their tick. Sleeps until the next expiry or tick end; no periodic wakeups."""
        async with trio.open_nursery() as nursery:
            if self._tick_s > 0:
                nursery.start_soon(self._run_ticks)
            task_status.started()
            while True:
                self._became_idle = trio.Event()
                next_expiry = self.prune_idle()
                with trio.move_on_at(next_expiry):
                    await self._became_idle.wait()


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
