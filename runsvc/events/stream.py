"""Reading a run's events from `after_seq` on: durable catch-up, then live, exactly once, in order.

Async generators all the way down, on purpose: a watcher costs no task and no channel hop per batch.
Every consumer closes them with `contextlib.aclosing` (the flake8-async ASYNC119 noqas below rest on
that), so the subscription's `with` block always exits when the consumer stops.

The one implementation of the seed's algorithm, used by every reader (WebSocket, CLI, tests):

1. subscribe to the bus first, so nothing published from now on can be missed;
2. read the stored events with seq > after_seq from SQLite, page by page;
3. forward live batches, dropping seq <= last delivered (they were in the pages already);
4. on lag (the subscriber's channel overflowed) or a gap, read from SQLite after the last delivered seq,
   then go on live.

It ends after yielding the run's terminal `state` event (or at once if `after_seq` is already at or past
the end of a finished run), and raises RunNotFound / RunGone if the run does not exist / is deleted.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing

from ..model import TERMINAL_STATUSES, EventBatch
from ..store import Store
from ..store import events as sql
from .bus import RunEventBus, Subscription
from .recent import json_chars

PAGE_SIZE = 2000  # events per SQLite read while catching up (and at most sql.PAGE_MAX_CHARS of JSON)
COALESCE_EVENTS = 2_000  # a consumer that fell behind takes up to this many buffered events at once,
COALESCE_CHARS = sql.PAGE_MAX_CHARS  # and at most this many characters of their JSON (issue 20)

# Test hook: awaited with "subscribed" (before the catch-up query) and "caught_up" (before going live),
# so tests can append events exactly in the gaps the algorithm must cover.
Checkpoint = Callable[[str], Awaitable[None]]


async def stream_run_events(
    store: Store,
    bus: RunEventBus,
    run_id: int,
    after_seq: int = 0,
    *,
    page_size: int = PAGE_SIZE,
    checkpoint: Checkpoint | None = None,
    subscription: Subscription | None = None,
) -> AsyncGenerator[EventBatch, None]:
    """Yield batches of the run's events with seq > after_seq, strictly increasing, no gap.

    `subscription`: the run's bus subscription, taken by the caller (step 1) when another task than the
    one reading this generator must be able to end it (it is closed here too, when this ends)."""
    if subscription is None:
        subscription = bus.subscribe(run_id)
    with subscription:
        if checkpoint is not None:
            await checkpoint("subscribed")
        status, stored_last = await store.read(sql.run_progress, run_id)
        if status in TERMINAL_STATUSES and after_seq >= stored_last:
            return
        last = after_seq
        async with aclosing(_catch_up(store, run_id, last, page_size, stored_last)) as pages:
            async for batch in pages:
                yield batch  # noqa: ASYNC119
                last = batch.last_seq
                if batch.is_terminal:
                    return
        if checkpoint is not None:
            await checkpoint("caught_up")
        async with aclosing(_live(store, bus, subscription, run_id, last, page_size)) as batches:
            async for batch in batches:
                yield batch  # noqa: ASYNC119
                if batch.is_terminal:
                    return


async def _catch_up(
    store: Store, run_id: int, after_seq: int, page_size: int, stored_last: int | None = None
) -> AsyncGenerator[EventBatch, None]:
    """Stored pages after `after_seq` until none is left, or, given `stored_last` (what was stored when the
    live subscription began), until one reaches it: what comes after arrives live. A page may hold fewer
    than `page_size` events (it is bounded in characters too), so a short page is not the end."""
    while stored_last is None or after_seq < stored_last:
        batch = await store.read(sql.read_page, run_id, after_seq, page_size)
        if batch is None:
            return
        yield batch
        after_seq = batch.last_seq


async def _live(
    store: Store, bus: RunEventBus, subscription: Subscription, run_id: int, last: int, page_size: int
) -> AsyncGenerator[EventBatch, None]:
    while True:
        batch: EventBatch | None = None
        if not subscription.lagged:
            batch = await subscription.receive(last)
            last = max(last, subscription.direct_last)  # what the direct sink took meanwhile
            # A consumer that fell behind sends what piled up as one batch (fewer, larger frames),
            # reusing each batch's JSON.
            ready = subscription.receive_ready(COALESCE_EVENTS - len(batch), COALESCE_CHARS - json_chars(batch))
            if ready:
                batch = EventBatch.concat([batch, *ready])
        if batch is None or batch.first_seq > last + 1:
            # Lagged: the channel overflowed and batches were dropped. (A gap cannot happen otherwise,
            # but costs nothing to cover.) The run's recent batches in memory usually still hold what
            # was missed; if not, SQLite has it all, since everything published is committed.
            subscription.clear_lag()
            recent = bus.recent_after(run_id, last)
            if recent is not None:
                for group in _groups(recent, COALESCE_EVENTS, COALESCE_CHARS):
                    fresh = EventBatch.concat(group)
                    yield fresh
                    last = fresh.last_seq
                continue
            async with aclosing(_catch_up(store, run_id, last, page_size)) as pages:
                async for page in pages:
                    yield page  # noqa: ASYNC119
                    last = page.last_seq
            continue
        unseen = batch.after(last)
        if unseen is not None:
            yield unseen
            last = unseen.last_seq


def _groups(batches: list[EventBatch], max_events: int, max_chars: int) -> list[list[EventBatch]]:
    """Consecutive batches in groups of about `max_events` events and at most `max_chars` characters of
    JSON unless one batch alone is larger (a batch is never split)."""
    groups: list[list[EventBatch]] = []
    count = chars = 0
    for batch in batches:
        size = json_chars(batch)
        if not groups or count >= max_events or chars + size > max_chars:
            groups.append([])
            count = chars = 0
        groups[-1].append(batch)
        count += len(batch)
        chars += size
    return groups
