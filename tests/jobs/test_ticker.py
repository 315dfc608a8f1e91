"""The schedule ticker on a real store with a mock clock: fires on time, no SQL between fires, the overlap
policies, and jobs edited, disabled or deleted while it sleeps."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest
import trio
import trio.testing

from runsvc.jobs import ticker as ticker_module
from runsvc.store import fires as fires_sql
from runsvc.store import runs as runs_sql
from runsvc.store.dialect import Variants
from runsvc.store.migrations import schema_sql
from runsvc.timeutil import parse_ts
from tests.jobs.ticker_helpers import (
    EPOCH,
    at,
    deadline,
    fires_of,
    insert_job,
    runs_of,
    ticker_harness,
    ts,
    update_schedule,
)


@pytest.fixture(name="clock")
def _clock():
    """Virtual time at real speed that the tests jump (see ticker_helpers)."""
    return trio.testing.MockClock(rate=1)


def set_status(conn, run_id: int, status: str) -> None:
    conn.execute("UPDATE runs SET status = ? WHERE id = ?", (status, run_id))


def manual_run(conn, job_id: int) -> int:
    """A run of the job started by hand (trigger "job"), queued."""
    run, _ = runs_sql.create_run(
        conn, command=["true"], env={}, timeout_s=60, name="manual", created_by="tester", ts=ts("2026-01-05 11:59"),
        job_id=job_id, job_name="manual", trigger="job",
    )
    return run.id


async def test_fires_on_time(store, clock):
    """A `* * * * *` job fires at each minute and not before: one fire `started` per minute with its run
    (trigger schedule, scheduled_for its minute, created at it), published on the feed, the scheduler woken."""
    with deadline(EPOCH, at("2026-01-05 12:01")):
        async with ticker_harness(store, clock) as h:
            job = await h.write(insert_job, "every-minute", "* * * * *", overlap="allow")
            ticker = await h.start()
            assert ticker.statistics().next_fire == at("2026-01-05 12:00")
            await h.advance_to(at("2026-01-05 11:59:59"))
            assert await h.read(fires_of, job) == []
            await h.advance_to(at("2026-01-05 12:00"))
            (fire,) = await h.read(fires_of, job)
            (run,) = await h.read(runs_of, job)
            assert fire == (ts("2026-01-05 12:00"), "started", run[0])
            assert run[1:] == ("queued", ts("2026-01-05 12:00"), "schedule")
            stored = await h.read(runs_sql.get_run, run[0])
            assert stored.name == "every-minute" and stored.created_by is None and stored.command == ("true",)
            lateness = (parse_ts(stored.created_at) - at("2026-01-05 12:00")).total_seconds()
            assert 0 <= lateness < 1
            assert [r.id for r in h.published] == [run[0]] and h.scheduling.wakes == 1
            await h.advance_to(at("2026-01-05 12:01"))
            assert [f[:2] for f in await h.read(fires_of, job)] == [
                (ts("2026-01-05 12:00"), "started"), (ts("2026-01-05 12:01"), "started"),
            ]
            assert ticker.fires == {"started": 2} and h.scheduling.wakes == 2
            assert ticker.statistics().next_fire == at("2026-01-05 12:02")


async def test_idle_ticker_with_a_thousand_schedules_runs_no_sql_between_fires(store, clock):
    """With 1,000 jobs on `* * * * *`, the ticker runs no SQL statement and reads no schedule between two
    fires; each minute every job fires once (the second minute skips: their runs are still queued)."""

    def thousand_jobs(conn):
        return [insert_job(conn, f"job-{i}", "* * * * *") for i in range(1000)]

    with deadline(EPOCH, at("2026-01-05 12:02")):
        async with ticker_harness(store, clock) as h:
            jobs = await h.write(thousand_jobs)
            ticker = await h.start()
            await h.advance_to(at("2026-01-05 12:00"))
            assert ticker.fires == {"started": 1000}
            before, reloads = store.statistics().statements, ticker.statistics().reloads
            await h.advance_to(at("2026-01-05 12:00:59.9"))
            assert store.statistics().statements == before
            await h.advance_to(at("2026-01-05 12:01"))
            assert store.statistics().statements > before
            assert ticker.fires == {"started": 1000, "skipped_overlap": 1000}
            assert ticker.statistics().reloads == reloads
            # One job edited: a reload decodes that one, the others keep what the ticker knows.
            await h.write(update_schedule, jobs[0], h.now(), cron="30 12 * * *")
            await h.settle()
            statistics = ticker.statistics()
            assert (statistics.reloads, statistics.jobs_read, statistics.schedules) == (reloads + 1, 1001, 1000)
            await h.advance_to(at("2026-01-05 12:02"))
            assert ticker.fires == {"started": 1000, "skipped_overlap": 1999}
            assert [f[:2] for f in await h.read(fires_of, jobs[-1])] == [
                (ts("2026-01-05 12:00"), "started"), (ts("2026-01-05 12:01"), "skipped_overlap"),
                (ts("2026-01-05 12:02"), "skipped_overlap"),
            ]


async def test_overlap_skip_skips_while_any_run_of_the_job_is_queued_or_running(store, clock):
    """overlap "skip": no new run while any run of the job is queued or running, also one started by
    hand; once they are finished the next fire starts one."""
    with deadline(EPOCH, at("2026-01-05 12:03")):
        async with ticker_harness(store, clock) as h:
            job = await h.write(insert_job, "skipper", "* * * * *", overlap="skip")
            manual = await h.write(manual_run, job)
            await h.start()
            await h.advance_to(at("2026-01-05 12:00"))  # the manual run is queued
            await h.write(set_status, manual, "running")
            await h.advance_to(at("2026-01-05 12:01"))  # now it is running
            await h.write(set_status, manual, "succeeded")
            await h.advance_to(at("2026-01-05 12:02"))  # nothing active: a run starts
            await h.advance_to(at("2026-01-05 12:03"))  # the fire's own run is queued
            fires = await h.read(fires_of, job)
            assert [f[1] for f in fires] == ["skipped_overlap", "skipped_overlap", "started", "skipped_overlap"]
            assert [f[2] for f in fires if f[1] != "started"] == [None, None, None]
            runs = await h.read(runs_of, job)
            assert [r[0] for r in runs] == [manual, fires[2][2]]


async def test_overlap_allow_always_starts(store, clock):
    """overlap "allow": every fire starts a run, whatever is queued or running."""
    with deadline(EPOCH, at("2026-01-05 12:02")):
        async with ticker_harness(store, clock) as h:
            job = await h.write(insert_job, "allower", "* * * * *", overlap="allow")
            await h.write(manual_run, job)
            await h.start()
            for minute in ("12:00", "12:01", "12:02"):
                await h.advance_to(at(f"2026-01-05 {minute}"))
            assert [f[1] for f in await h.read(fires_of, job)] == ["started"] * 3
            assert [r[1] for r in await h.read(runs_of, job)] == ["queued"] * 4


async def test_overlap_cancel_previous_cancels_queued_stops_running_then_starts(store, clock):
    """overlap "cancel_previous": the fire cancels the job's queued runs in its transaction (with their
    `state cancelled` event, published), asks the scheduler to stop the running ones, starts a new run and
    is recorded `cancelled_previous`; with nothing active it is recorded `started`."""
    with deadline(EPOCH, at("2026-01-05 12:01")):
        async with ticker_harness(store, clock) as h:
            job = await h.write(insert_job, "canceller", "* * * * *", overlap="cancel_previous")
            await h.start()
            await h.advance_to(at("2026-01-05 12:00"))
            (first,) = await h.read(runs_of, job)
            await h.write(set_status, first[0], "running")
            queued = await h.write(manual_run, job)
            await h.advance_to(at("2026-01-05 12:01"))
            fires = await h.read(fires_of, job)
            assert [f[1] for f in fires] == ["started", "cancelled_previous"]
            runs = await h.read(runs_of, job)
            assert [(r[0], r[1]) for r in runs] == [
                (first[0], "running"), (queued, "cancelled"), (fires[1][2], "queued"),
            ]
            reason = "cancelled by the schedule's fire at 2026-01-05T12:01:00.000000Z (overlap cancel_previous)"
            assert h.scheduling.stops == [(first[0], "cancelled", reason)]
            cancelled = await h.read(runs_sql.get_run, queued)
            batch = await h.read(runs_sql.events_page, queued, 0, 10)
            assert [e["data"] for e in batch[2].events][-1] == {
                "status": "cancelled", "exit_code": None, "reason": reason,
            }
            assert cancelled.ended_at is not None
            assert [(r.id, r.status) for r in h.published[-2:]] == [(queued, "cancelled"), (fires[1][2], "queued")]


async def test_job_edited_while_the_ticker_sleeps_fires_on_its_new_schedule(store, clock):
    """A schedule changed while the ticker sleeps (and the ticker woken) fires at its new time, not its old."""
    with deadline(EPOCH, at("2026-01-05 12:30")):
        async with ticker_harness(store, clock) as h:
            job = await h.write(insert_job, "edited", "0 * * * *")
            ticker = await h.start()
            await h.advance_to(at("2026-01-05 11:59:40"))
            await h.write(update_schedule, job, h.now(), cron="30 12 * * *")
            await h.advance_to(at("2026-01-05 12:00"))
            assert await h.read(fires_of, job) == []
            assert ticker.statistics().next_fire == at("2026-01-05 12:30")
            await h.advance_to(at("2026-01-05 12:30"))
            assert [f[:2] for f in await h.read(fires_of, job)] == [(ts("2026-01-05 12:30"), "started")]


@pytest.mark.parametrize("change", ["disabled", "deleted", "edited"])
async def test_a_pending_fire_of_a_job_changed_before_the_ticker_heard_does_nothing(store, clock, change):
    """A job disabled, deleted or given another schedule after the ticker computed its fire time, but
    before the ticker was woken, fires nothing at that time (the fire's transaction reads the job again);
    woken, the ticker follows the change."""

    def change_job(conn, job_id):
        if change == "disabled":
            update_schedule(conn, job_id, at("2026-01-05 11:59:50"), enabled=False)
        elif change == "deleted":
            conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        else:
            update_schedule(conn, job_id, at("2026-01-05 11:59:50"), cron="5 12 * * *")

    with deadline(EPOCH, at("2026-01-05 12:05")):
        async with ticker_harness(store, clock) as h:
            job = await h.write(insert_job, "changing", "* * * * *")
            ticker = await h.start()
            await h.advance_to(at("2026-01-05 11:59:50"))
            await store.write(change_job, job)  # not woken
            await h.advance_to(at("2026-01-05 12:00"))
            assert await h.read(fires_of, job) == []
            assert await h.read(runs_of, job) == []
            assert ticker.fires == {}
            ticker.wake()
            await h.advance_to(at("2026-01-05 12:05"))
            expected = [(ts("2026-01-05 12:05"), "started")] if change == "edited" else []
            assert [f[:2] for f in await h.read(fires_of, job)] == expected
            assert ticker.statistics().schedules == (1 if change == "edited" else 0)


async def test_a_job_with_a_parameter_it_cannot_fill_records_a_failed_run_and_keeps_firing(store, clock):
    """A fire whose run cannot start (a required parameter without default) is recorded with a run that
    ended `failed` at once and says why; the schedule goes on firing."""
    params = ({"name": "target", "description": "", "default": None, "required": True, "choices": None},)
    with deadline(EPOCH, at("2026-01-05 12:01")):
        async with ticker_harness(store, clock) as h:
            job = await h.write(insert_job, "needs-target", "* * * * *", params=params)
            await h.start()
            await h.advance_to(at("2026-01-05 12:00"))
            await h.advance_to(at("2026-01-05 12:01"))
            fires = await h.read(fires_of, job)
            assert [f[1] for f in fires] == ["started", "started"]
            run = await h.read(runs_sql.get_run, fires[0][2])
            assert run.status == "failed" and run.trigger == "schedule"
            batch = await h.read(runs_sql.events_page, run.id, 0, 10)
            assert [(e["kind"], e["data"]) for e in batch[2].events][1:] == [
                ("system", "the schedule could not start this run: parameter 'target' is required"),
                ("state", {"status": "failed", "exit_code": None, "reason": "could not start"}),
            ]
            assert h.recorder.finished["failed"] == 2


@pytest.mark.parametrize(("sql", "expected"), [
    (fires_sql.ACTIVE_RUNS, ["SEARCH runs USING INDEX runs_job_active (job_id=?)"]),
    (fires_sql.NEWEST_FIRES, [
        "SCAN j VIRTUAL TABLE INDEX 1:", "CORRELATED SCALAR SUBQUERY 1", "SEARCH f USING PRIMARY KEY (job_id=?)",
    ]),
])
def test_the_tickers_queries_do_not_grow_with_finished_runs_or_recorded_fires(sql, expected):
    """The overlap check reads only the job's active runs (partial index), a reload one fire per changed
    job."""
    sql = sql.sqlite if isinstance(sql, Variants) else sql  # these plans are SQLite's
    with closing(sqlite3.connect(":memory:")) as conn:
        conn.executescript(schema_sql())
        params = ("[1]",) if "json_each" in sql else (1,)
        assert [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)] == expected


async def test_a_wall_clock_step_during_a_long_sleep_is_noticed_within_a_minute(store, clock):
    """The wall clock stepping an hour ahead while the ticker sleeps towards a fire an hour away (trio's
    clock does not see the step) is noticed at the next minute: the fire is handled then, as missed."""
    with deadline(EPOCH, at("2026-01-05 12:02")):
        async with ticker_harness(store, clock) as h:
            job = await h.write(insert_job, "hourly", "0 * * * *")
            ticker = await h.start()
            await h.advance_to(at("2026-01-05 12:00"))
            assert ticker.statistics().next_fire == at("2026-01-05 13:00")
            await h.settle()
            h.step_wall(3600)
            clock.jump(ticker_module.MAX_SLEEP_S)
            await h.settle()
            assert [f[:2] for f in await h.read(fires_of, job)] == [
                (ts("2026-01-05 12:00"), "started"), (ts("2026-01-05 13:00"), "skipped_overlap"),
            ]
