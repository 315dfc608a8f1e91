"""Maintenance loop: expired sessions, enrollment tokens and throttle rows, driven by a MockClock."""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
from functools import partial

import trio

from runsvc import maintenance
from runsvc.maintenance import maintenance_pass, run_maintenance
from runsvc.server import serve
from runsvc.store import open_store
from runsvc.store.maintenance import ExpiryCounts
from runsvc.timeutil import format_ts, utcnow
from tests.conftest import make_settings
from tests.maintenance_rows import (  # noqa: F401 (_clock is the `clock` fixture)
    EPOCH,
    _clock,
    add_enrollment_token,
    add_run,
    add_session,
    add_throttle,
    add_user,
    ids,
    next_interval,
    ts,
    wall_clock,
)

HOUR = 3600.0


def read_all(conn: sqlite3.Connection) -> dict[str, list]:
    return {
        "sessions": ids(conn, "sessions"),
        "enrollment_tokens": ids(conn, "enrollment_tokens"),
        "login_throttle": ids(conn, "login_throttle", "username"),
    }


async def test_maintenance_loop_removes_expired_rows_and_keeps_live_ones(store, tmp_path, clock):
    """Each pass removes what has expired by then; live sessions, tokens and lockouts stay."""
    settings = make_settings(tmp_path)

    def populate(conn):
        user = add_user(conn)
        add_session(conn, user, ts(-1))  # 1: expired
        add_session(conn, user, ts(days=1))  # 2: live
        add_session(conn, user, ts(100))  # 3: expires before the second pass
        add_enrollment_token(conn, ts(-1))  # 1: expired
        add_enrollment_token(conn, ts(days=1))  # 2: live
        add_enrollment_token(conn, ts(100))  # 3: expires before the second pass
        add_throttle(conn, "old", ts(-25 * HOUR))
        add_throttle(conn, "old-lock-over", ts(-25 * HOUR), locked_until=ts(-24 * HOUR))
        add_throttle(conn, "old-but-locked", ts(-25 * HOUR), locked_until=ts(HOUR))
        add_throttle(conn, "recent", ts(-HOUR))
        add_throttle(conn, "stale-at-second-pass", ts(-24 * HOUR + 100))

    await store.write(populate)
    send, receive = trio.open_memory_channel[ExpiryCounts](10)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(run_maintenance, store, settings, now=wall_clock(), on_pass=send.send_nowait)
        )
        with trio.fail_after(10):
            first = await receive.receive()
        assert first == ExpiryCounts(sessions=1, enrollment_tokens=1, login_throttle=2)
        assert await store.read(read_all) == {
            "sessions": [2, 3],
            "enrollment_tokens": [2, 3],
            "login_throttle": ["old-but-locked", "recent", "stale-at-second-pass"],
        }

        await next_interval(clock, settings.maintenance_interval_s)
        with trio.fail_after(10):
            second = await receive.receive()
        assert second == ExpiryCounts(sessions=1, enrollment_tokens=1, login_throttle=1)
        assert await store.read(read_all) == {
            "sessions": [2],
            "enrollment_tokens": [2],
            "login_throttle": ["old-but-locked", "recent"],
        }

        # Once its lockout is over, the old row goes at the next pass.
        await next_interval(clock, settings.maintenance_interval_s)
        with trio.fail_after(10):
            third = await receive.receive()
        assert third == ExpiryCounts(sessions=0, enrollment_tokens=0, login_throttle=0)
        await next_interval(clock, HOUR)
        with trio.fail_after(10):
            fourth = await receive.receive()
        assert fourth == ExpiryCounts(sessions=0, enrollment_tokens=0, login_throttle=1)
        assert (await store.read(read_all))["login_throttle"] == ["recent"]
        nursery.cancel_scope.cancel()


async def test_maintenance_pass_deletes_in_bounded_batches(store, tmp_path, monkeypatch):
    """A backlog larger than one batch is removed completely, over several transactions."""
    monkeypatch.setattr(maintenance, "EXPIRY_BATCH_ROWS", 2)
    settings = make_settings(tmp_path)

    def populate(conn):
        user = add_user(conn)
        for _ in range(5):
            add_session(conn, user, ts(-10))
        add_session(conn, user, ts(10))

    with trio.fail_after(10):
        await store.write(populate)
        before = store.statistics().transactions
        counts = await maintenance_pass(store, settings, now=lambda: EPOCH)
        assert counts == ExpiryCounts(sessions=5)
        assert store.statistics().transactions - before == 3
        assert await store.read(ids, "sessions") == [6]


async def test_maintenance_loop_survives_a_database_error(store, tmp_path, monkeypatch, clock):
    """A pass failing with a sqlite3 error is logged; the next interval's pass runs normally."""
    settings = make_settings(tmp_path)
    calls = []
    real_pass = maintenance.maintenance_pass

    async def flaky_pass(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise sqlite3.OperationalError("database is locked")
        return await real_pass(*args, **kwargs)

    monkeypatch.setattr(maintenance, "maintenance_pass", flaky_pass)
    send, receive = trio.open_memory_channel[ExpiryCounts](10)
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(run_maintenance, store, settings, now=wall_clock(), on_pass=send.send_nowait))
        await next_interval(clock, settings.maintenance_interval_s)
        with trio.fail_after(10):
            assert await receive.receive() == ExpiryCounts()
        assert len(calls) == 2
        nursery.cancel_scope.cancel()


async def test_server_starts_both_loops(tmp_path, caplog):
    """`serve` runs a maintenance pass and a retention pass as soon as it starts."""
    settings = make_settings(tmp_path)
    long_ago = format_ts(utcnow() - dt.timedelta(days=90))

    def populate(conn):
        add_session(conn, add_user(conn), long_ago)
        add_run(conn, "succeeded", created_at=long_ago, ended_at=long_ago)

    passes = {"maintenance pass": trio.Event(), "retention pass": trio.Event()}

    class PassHandler(logging.Handler):
        def emit(self, record):
            if record.getMessage() in passes:
                passes[record.getMessage()].set()  # the loops log from the Trio thread

    caplog.set_level(logging.INFO, logger="runsvc.maintenance")
    handler = PassHandler()
    logging.getLogger("runsvc.maintenance").addHandler(handler)
    try:
        with trio.fail_after(20):
            async with open_store(settings.database_path) as store:
                await store.write(populate)
            async with trio.open_nursery() as nursery:
                server = await nursery.start(serve, settings)
                for event in passes.values():
                    await event.wait()
                server.request_shutdown()
            async with open_store(settings.database_path) as store:
                assert await store.read(ids, "sessions") == []
                assert await store.read(ids, "runs") == []
    finally:
        logging.getLogger("runsvc.maintenance").removeHandler(handler)


async def test_job_fires_older_than_retention_go_but_each_jobs_newest_stays(store, tmp_path, monkeypatch):
    """Fires recorded before the retention cutoff are deleted in batches, except each job's newest, from
    which the schedule ticker counts that job's next fire times; with retention off all stay."""
    from tests.jobs.ticker_helpers import insert_job

    now = utcnow()
    old = [format_ts(now - dt.timedelta(days=40, minutes=m)) for m in range(5)]
    recent = format_ts(now - dt.timedelta(days=1))

    def populate(conn):
        busy, quiet = insert_job(conn, "busy", "* * * * *"), insert_job(conn, "quiet", "@yearly")
        rows = [(busy, at) for at in (*old, recent)] + [(quiet, at) for at in old[2:]]
        conn.executemany(
            "INSERT INTO job_fires (job_id, scheduled_for, outcome, run_id, recorded_at) "
            "VALUES (?, ?, 'skipped_overlap', NULL, ?)", [(job, at, at) for job, at in rows],
        )
        return busy, quiet

    def fires(conn):
        return sorted(tuple(row) for row in conn.execute("SELECT job_id, scheduled_for FROM job_fires"))

    busy, quiet = await store.write(populate)
    kept_forever = make_settings(tmp_path, retention_days=0)
    assert (await maintenance_pass(store, kept_forever, now=lambda: now)).job_fires == 0
    monkeypatch.setattr(maintenance, "EXPIRY_BATCH_ROWS", 2)  # several batches
    counts = await maintenance_pass(store, make_settings(tmp_path, retention_days=30), now=lambda: now)
    assert counts.job_fires == 5 + 2
    assert await store.read(fires) == [(busy, recent), (quiet, old[2])]  # old[2] is quiet's newest
