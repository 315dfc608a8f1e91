"""Retention pruner: expired finished runs deleted in bounded batches, space reclaimed, hook called."""

from __future__ import annotations

from functools import partial

import pytest
import trio
import trio.lowlevel

from runsvc import maintenance
from runsvc.maintenance import prune_expired, prune_pass, run_pruner
from runsvc.model import TERMINAL_STATUSES, RunGone
from runsvc.store import open_store
from runsvc.store.connections import connect
from runsvc.store.maintenance import freelist_count, incremental_vacuum, prune_batch
from runsvc.store.migrations import schema_sql
from tests.conftest import make_settings
from tests.helpers import running_server
from tests.maintenance_rows import (  # noqa: F401 (_clock is the `clock` fixture)
    EPOCH,
    _clock,
    add_run,
    event_counts,
    ids,
    next_interval,
    ts,
    wall_clock,
)


async def test_pruner_deletes_expired_finished_runs_and_keeps_the_rest(store, tmp_path, clock):
    """Finished runs past the window go with their events, reported after the commit; recent ones,
    unfinished ones (however old) and their events stay; the window moves with the clock."""
    settings = make_settings(tmp_path, retention_days=30)

    def populate(conn):
        expired = [
            add_run(conn, status, created_at=ts(days=-40), ended_at=ts(days=-31), events=4)
            for status in TERMINAL_STATUSES
        ]
        kept = {
            "recent": add_run(conn, "succeeded", created_at=ts(days=-29), ended_at=ts(days=-29)),
            "queued": add_run(conn, "queued", created_at=ts(days=-100)),
            "running": add_run(conn, "running", created_at=ts(days=-100)),
            "running-old-ended": add_run(conn, "running", created_at=ts(days=-100), ended_at=ts(days=-99)),
        }
        boundary = add_run(conn, "failed", created_at=ts(days=-31), ended_at=ts(100, days=-30))
        return expired, kept, boundary

    expired, kept, boundary = await store.write(populate)
    reported: list[list[int]] = []
    gone_at_report: list[bool] = []

    def on_runs_deleted(run_ids):
        reported.append(list(run_ids))
        fresh = store.connect()  # committed already: a new connection no longer sees them
        marks = ",".join("?" * len(run_ids))
        left = fresh.execute(f"SELECT count(*) FROM run_events WHERE run_id IN ({marks})", run_ids).fetchone()[0]
        left += fresh.execute(f"SELECT count(*) FROM runs WHERE id IN ({marks})", run_ids).fetchone()[0]
        fresh.close()
        gone_at_report.append(left == 0)

    send, receive = trio.open_memory_channel[maintenance.PruneResult](10)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(
                run_pruner, store, settings, now=wall_clock(), on_runs_deleted=on_runs_deleted,
                on_pass=send.send_nowait,
            )
        )
        with trio.fail_after(10):
            first = await receive.receive()
        assert (first.runs, first.events) == (len(expired), 4 * len(expired))
        assert sorted(sum(reported, [])) == sorted(expired)
        assert all(gone_at_report)
        remaining = await store.read(ids, "runs")
        assert remaining == sorted([*kept.values(), boundary])
        assert await store.read(event_counts) == {run_id: 3 for run_id in remaining}

        await next_interval(clock, settings.prune_interval_s)
        with trio.fail_after(10):
            second = await receive.receive()
        assert (second.runs, second.events) == (1, 3)
        assert reported[-1] == [boundary]
        assert await store.read(ids, "runs") == sorted(kept.values())

        await next_interval(clock, settings.prune_interval_s)
        with trio.fail_after(10):
            third = await receive.receive()
        assert (third.runs, third.events, third.batches) == (0, 0, 0)
        nursery.cancel_scope.cancel()


async def test_retention_zero_keeps_everything(store, tmp_path, clock):
    """retention_days = 0: the pruner task ends at once and nothing is ever deleted."""
    settings = make_settings(tmp_path, retention_days=0)

    def populate(conn):
        return [add_run(conn, "succeeded", created_at=ts(days=-3000), ended_at=ts(days=-3000)) for _ in range(3)]

    run_ids = await store.write(populate)
    passes = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(run_pruner, store, settings, now=wall_clock(), on_pass=passes.append))
        # The nursery closed by itself: the task returned without a single pass.
    clock.jump(10 * settings.prune_interval_s)
    assert passes == []
    with trio.fail_after(10):
        assert await prune_pass(store, settings, now=wall_clock()) == maintenance.PruneResult()
        assert await store.read(ids, "runs") == run_ids
        assert await store.read(event_counts) == {run_id: 3 for run_id in run_ids}


def test_prune_batch_never_exceeds_its_budget():
    """Events and run rows together stay within the budget; a big run is emptied over several batches."""
    conn = connect(":memory:")
    conn.executescript(schema_sql())
    big = add_run(conn, "succeeded", created_at=ts(days=-50), ended_at=ts(days=-49), events=12)
    small = add_run(conn, "failed", created_at=ts(days=-50), ended_at=ts(days=-48), events=3)
    empty = add_run(conn, "cancelled", created_at=ts(days=-50), ended_at=ts(days=-47), events=0)
    cutoff = ts(days=-30)
    batches = []
    while True:
        batch = prune_batch(conn, cutoff, 5)
        batches.append((batch.run_ids, batch.events, batch.exhausted))
        assert batch.events + len(batch.run_ids) <= 5
        if batch.exhausted:
            break
    assert batches == [
        ((), 5, False),
        ((), 5, False),
        ((big,), 4, False),  # big's last 2 events and its row, then 2 of small's 3 events
        ((small, empty), 1, True),
    ]
    assert ids(conn, "runs") == [] and event_counts(conn) == {}


async def test_pruning_interleaves_with_concurrent_appends(store, tmp_path):
    """A prune of many batches lets a live writer's appends through between its batches."""
    settings = make_settings(tmp_path, retention_days=30, prune_batch_events=100)
    old_runs = 40

    def populate(conn):
        for _ in range(old_runs):
            add_run(conn, "succeeded", created_at=ts(days=-60), ended_at=ts(days=-59), events=100)
        return add_run(conn, "running", created_at=ts(), events=1)

    def append(conn, run_id):
        seq = conn.execute("UPDATE runs SET last_seq = last_seq + 1 WHERE id = ? RETURNING last_seq",
                           (run_id,)).fetchone()[0]
        conn.execute("INSERT INTO run_events (run_id, seq, ts, kind, data) VALUES (?, ?, ?, 'stdout', 'live')",
                     (run_id, seq, ts()))
        # Old runs still there when this append ran: between 0 and old_runs means mid-prune.
        return conn.execute("SELECT count(*) FROM runs WHERE status = 'succeeded'").fetchone()[0]

    live = await store.write(populate)
    seen: list[int] = []
    done = trio.Event()

    async def live_writer():
        while not done.is_set():
            seen.append(await store.write(append, live))
            await trio.lowlevel.checkpoint()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(live_writer)
            result = await prune_pass(store, settings, now=lambda: EPOCH)
            done.set()
    assert result.runs == old_runs and result.events == old_runs * 100
    assert result.batches > 1
    mid_prune = [count for count in seen if 0 < count < old_runs]
    assert len(mid_prune) > 1, seen
    # Every append landed, in order, without a gap.
    seqs = await store.read(lambda c: [r[0] for r in c.execute("SELECT seq FROM run_events WHERE run_id = ?", (live,))])
    assert seqs == list(range(1, len(seen) + 2))


async def test_file_shrinks_after_pruning(tmp_path):
    """Pruning most of a database gives the space back: the file and the WAL shrink on disk."""
    settings = make_settings(tmp_path, retention_days=30, prune_batch_events=2000)
    path = tmp_path / "big.db"
    wal = tmp_path / "big.db-wal"

    def populate(conn):
        for _ in range(100):
            add_run(conn, "succeeded", created_at=ts(days=-60), ended_at=ts(days=-59), events=200, line="x" * 300)
        add_run(conn, "succeeded", created_at=ts(), ended_at=ts(), events=10)

    def checkpoint(conn):
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    with trio.fail_after(60):
        async with open_store(path) as store:
            await store.write(populate)
            await store.write(checkpoint, transaction=False)
            size_before = path.stat().st_size
            assert size_before > 5_000_000
            result = await prune_pass(store, settings, now=lambda: EPOCH)
            assert result.runs == 100 and result.checkpointed
            assert result.pages_freed > 0
            size_after = path.stat().st_size
            assert size_after < size_before / 10, (size_before, size_after)
            assert wal.stat().st_size == 0
            assert await store.read(lambda c: c.execute("PRAGMA freelist_count").fetchone()[0]) == 0
            assert await store.read(lambda c: c.execute("PRAGMA integrity_check").fetchone()[0]) == "ok"


async def test_prune_hook_failure_does_not_stop_pruning(store, caplog):
    """A raising on_runs_deleted hook is logged by the store; the prune still completes."""

    def populate(conn):
        return [add_run(conn, "failed", created_at=ts(days=-60), ended_at=ts(days=-59)) for _ in range(3)]

    def broken_hook(run_ids):
        raise RuntimeError("hook broke")

    await store.write(populate)
    with trio.fail_after(10):
        result = await prune_expired(store, ts(days=-30), batch_events=4, on_runs_deleted=broken_hook)
    assert result.runs == 3 and result.batches == 3
    assert await store.read(ids, "runs") == []
    assert "write callback failed" in caplog.text


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # PostgreSQL's VACUUM is autovacuum's job
async def test_each_vacuum_step_frees_a_whole_step_of_pages(store, monkeypatch):
    """A vacuum step gives back `max_pages` pages in one write (not one page per call), so reclaiming
    takes a handful of writes."""
    monkeypatch.setattr(maintenance, "VACUUM_STEP_PAGES", 100)

    def fill_then_empty(conn):
        add_run(conn, "succeeded", created_at=ts(), ended_at=ts(), events=3000, line="v" * 500)
        conn.execute("DELETE FROM runs")

    with trio.fail_after(20):
        await store.write(fill_then_empty)
        free = await store.read(freelist_count)
        assert free > 300
        assert await store.write(incremental_vacuum, 100, transaction=False) == free - 100
        before = store.statistics().write_requests
        reclaimed = await maintenance.reclaim_space(store)
    assert reclaimed.pages_freed == free - 100 and reclaimed.checkpointed
    steps = -(-(free - 100) // 100)
    assert store.statistics().write_requests - before == 1 + steps + 1  # count, steps, checkpoint
    assert await store.read(freelist_count) == 0


async def test_server_tells_watchers_of_pruned_runs(tmp_path):
    """In a running server, the retention pass that deletes a run ends its bus subscribers (its
    WebSocket watchers then close with 4404)."""
    def insert_old_run(conn):
        return conn.execute(
            "INSERT INTO runs (command, env, timeout_s, status, created_at, ended_at, last_seq) "
            "VALUES ('[\"true\"]', '{}', 60, 'succeeded', '2020-01-01T00:00:00.000000Z', "
            "'2020-01-01T00:00:01.000000Z', 0) RETURNING id"
        ).fetchone()[0]

    settings = make_settings(tmp_path, prune_interval_s=0.1)
    with trio.fail_after(20):
        async with running_server(settings) as server:
            bus = server.services.bus
            subscriptions = []
            # Subscribed in on_commit, before any other task runs: the pruner cannot delete it first.
            await server.services.store.write(
                insert_old_run, on_commit=lambda rid: subscriptions.append(bus.subscribe(rid))
            )
            with subscriptions[0] as subscription:
                with pytest.raises(RunGone):
                    await subscription.receive()
