"""Periodic cleanup and retention pruning: two long-lived tasks of the root nursery.

`run_maintenance` deletes expired sessions, enrollment and API tokens and stale login-throttle rows every
`maintenance_interval_s`. `run_pruner` deletes finished runs older than `retention_days` with their
events every `prune_interval_s`, in bounded write transactions so that live event appends interleave
with it, then gives the freed pages back to the file system. Both run a pass as soon as they start,
then sleep with `trio.sleep` (tests drive them with a MockClock). Wall-clock time comes from `now`.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TypeVar

import attrs
import trio

from .config import Settings
from .log import get_logger
from .store import Store, StoreUnavailable
from .store.dialect import SQLITE, database_errors
from .store.maintenance import (
    ExpiryCounts,
    PruneBatch,
    checkpoint_truncate,
    delete_expired,
    expired_run_ids,
    freelist_count,
    incremental_vacuum,
    prune_batch_alone,
)
from .timeutil import format_ts, utcnow

log = get_logger(__name__)
T = TypeVar("T")

Clock = Callable[[], dt.datetime]
RunsDeleted = Callable[[Sequence[int]], None]
RunsFenced = Callable[[Sequence[int]], None]

EXPIRY_BATCH_ROWS = 10_000  # rows of each kind deleted per maintenance transaction
VACUUM_STEP_PAGES = 2048  # free pages given back per transaction (8 MiB at the default 4 KiB page)
DELIVERY_RETENTION_S = 7 * 86400  # webhook deliveries are kept 7 days from their creation (SPEC §17)
CHECKPOINT_BUSY_TIMEOUT_MS = 200  # longest the checkpoint waits for readers (it holds up writers)


# ---- expired sessions, enrollment tokens, throttle rows ----------------------------------------------


async def maintenance_pass(store: Store, settings: Settings, *, now: Clock = utcnow) -> ExpiryCounts:
    """Delete everything expired at `now()`, `EXPIRY_BATCH_ROWS` rows of each kind per transaction."""
    moment = now()
    now_ts = format_ts(moment)
    throttle_cutoff = format_ts(moment - dt.timedelta(seconds=settings.throttle_retention_s))
    fires_cutoff = retention_cutoff(settings, moment)  # a job's fires are kept as long as runs are
    deliveries_cutoff = format_ts(moment - dt.timedelta(seconds=DELIVERY_RETENTION_S))
    total = ExpiryCounts()
    while True:
        counts = await store.write(
            delete_expired, now_ts, throttle_cutoff, EXPIRY_BATCH_ROWS, fires_cutoff, deliveries_cutoff
        )
        total += counts
        if counts.most < EXPIRY_BATCH_ROWS:
            return total


async def run_maintenance(
    store: Store,
    settings: Settings,
    *,
    now: Clock = utcnow,
    on_pass: Callable[[ExpiryCounts], None] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run `maintenance_pass` now and then every `maintenance_interval_s`, until cancelled.
    `on_pass` gets each pass's counts."""
    task_status.started()
    await _every(
        settings.maintenance_interval_s, "maintenance pass",
        partial(maintenance_pass, store, settings, now=now), attrs.asdict, on_pass,
    )


async def _every(
    interval_s: float,
    what: str,
    one_pass: Callable[[], Awaitable[T]],
    fields: Callable[[T], dict[str, object]],
    on_pass: Callable[[T], None] | None,
) -> None:
    """Run `one_pass` now and every `interval_s`; log what each pass did. A pass that fails on a
    database error (say, the file is locked by another process for longer than the busy timeout) is
    logged and retried at the next interval."""
    while True:
        started = time.perf_counter()
        try:
            result = await one_pass()
        except (*database_errors(), StoreUnavailable) as exc:  # type: ignore[misc]
            log.warning(f"{what} failed; retrying at the next interval", error=str(exc))
        else:
            log.info(what, **fields(result), seconds=f"{time.perf_counter() - started:.3f}")
            if on_pass is not None:
                on_pass(result)
        await trio.sleep(interval_s)


# ---- retention -------------------------------------------------------------------------------------


@attrs.frozen
class PruneResult:
    """What one retention pass did."""

    runs: int = 0  # runs deleted
    events: int = 0  # events deleted
    batches: int = 0  # write transactions that deleted rows
    longest_batch_s: float = 0.0  # longest batch transaction, BEGIN to COMMIT
    longest_batch_wait_s: float = 0.0  # longest store.write() of a batch: queueing + SQL + commit
    pages_freed: int = 0  # pages given back to the file system by incremental vacuum
    checkpointed: bool = False  # the WAL was checkpointed and truncated afterwards


def retention_cutoff(settings: Settings, moment: dt.datetime) -> str | None:
    """Runs that ended before this timestamp are expired; None when retention is off (0 days)."""
    if settings.retention_days == 0:
        return None
    return format_ts(moment - dt.timedelta(days=settings.retention_days))


async def prune_expired(
    store: Store,
    cutoff: str,
    *,
    batch_events: int,
    on_runs_deleted: RunsDeleted | None = None,
    on_fence: RunsFenced | None = None,
) -> PruneResult:
    """Delete terminal runs that ended before `cutoff` with their events, `batch_events` rows per write.

    Each batch is its own `store.write` and its own transaction, so writes queued by others commit
    between batches, without waiting for the next batch. After each batch that deleted runs,
    `on_runs_deleted(run_ids)` is called on the Trio thread right after the commit (even if this task
    is being cancelled): watchers of those runs can be told they are gone. Before each batch,
    `on_fence(run_ids)` gets every run the batch may touch, so their watchers are closed and their
    logs refused before the first of their events is deleted (no reader ever sees a gap). Does not
    reclaim space; `prune_pass` does.
    """

    def after_commit(batch: PruneBatch) -> None:
        if batch.run_ids and on_runs_deleted is not None:
            on_runs_deleted(batch.run_ids)

    runs = events = batches = 0
    longest = longest_wait = 0.0
    while True:
        only: frozenset[int] | None = None
        if on_fence is not None:
            only = frozenset(await store.read(expired_run_ids, cutoff, batch_events + 1))
            on_fence(sorted(only))
        started = time.perf_counter()
        batch = await store.write(
            prune_batch_alone, cutoff, batch_events, only, on_commit=after_commit, transaction=False
        )
        waited = time.perf_counter() - started
        if batch.run_ids or batch.events:
            batches += 1
            runs += len(batch.run_ids)
            events += batch.events
            longest = max(longest, batch.elapsed_s)
            longest_wait = max(longest_wait, waited)
        if batch.exhausted:
            return PruneResult(runs, events, batches, longest, longest_wait)


@attrs.frozen
class ReclaimResult:
    """What giving the freed space back did."""

    pages_freed: int  # pages given back to the file system
    checkpointed: bool  # the WAL was checkpointed and truncated to zero bytes
    longest_step_s: float  # longest store.write() of one vacuum step or of the checkpoint


async def reclaim_space(store: Store) -> ReclaimResult:
    """Give free pages back (`VACUUM_STEP_PAGES` per write, each alone in its own short transaction), then
    checkpoint and truncate the WAL so the files shrink."""
    longest = 0.0

    async def timed_write(fn, *args, transaction=True):
        nonlocal longest
        started = time.perf_counter()
        try:
            return await store.write(fn, *args, transaction=transaction)
        finally:
            longest = max(longest, time.perf_counter() - started)

    before = left = await store.write(freelist_count, transaction=False)
    while left:
        remaining = await timed_write(incremental_vacuum, VACUUM_STEP_PAGES, transaction=False)
        if remaining >= left:  # nothing more can move; never loop forever
            break
        left = remaining
    checkpointed = await timed_write(checkpoint_truncate, CHECKPOINT_BUSY_TIMEOUT_MS, transaction=False)
    return ReclaimResult(before - left, checkpointed, longest)


async def prune_pass(
    store: Store,
    settings: Settings,
    *,
    now: Clock = utcnow,
    on_runs_deleted: RunsDeleted | None = None,
    on_fence: RunsFenced | None = None,
) -> PruneResult:
    """One retention pass at `now()`: prune, and reclaim space if anything was deleted."""
    cutoff = retention_cutoff(settings, now())
    if cutoff is None:
        return PruneResult()
    result = await prune_expired(
        store, cutoff, batch_events=settings.prune_batch_events, on_runs_deleted=on_runs_deleted,
        on_fence=on_fence,
    )
    # SQLite gives the freed pages back here; on PostgreSQL that is autovacuum's job (README).
    if result.batches and store.dialect == SQLITE:
        reclaimed = await reclaim_space(store)
        result = attrs.evolve(result, pages_freed=reclaimed.pages_freed, checkpointed=reclaimed.checkpointed)
    return result


async def run_pruner(
    store: Store,
    settings: Settings,
    *,
    now: Clock = utcnow,
    on_runs_deleted: RunsDeleted | None = None,
    on_fence: RunsFenced | None = None,
    on_pass: Callable[[PruneResult], None] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run `prune_pass` now and then every `prune_interval_s`, until cancelled.

    With `retention_days = 0` runs are kept forever: the task logs that and returns at once.
    """
    task_status.started()
    if settings.retention_days == 0:
        log.info("retention is off (retention_days = 0): finished runs are kept forever")
        return
    def fields(result: PruneResult) -> dict[str, object]:
        return {"runs": result.runs, "events": result.events, "batches": result.batches,
                "pages_freed": result.pages_freed}

    await _every(
        settings.prune_interval_s, "retention pass",
        partial(prune_pass, store, settings, now=now, on_runs_deleted=on_runs_deleted, on_fence=on_fence),
        fields, on_pass,
    )
