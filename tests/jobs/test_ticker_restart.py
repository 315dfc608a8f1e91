"""The ticker across downtime and restarts: missed fires (`run_once` and `skip`), nothing missed before a
schedule's start, and a restart in the middle of a fire neither doubling nor losing it."""

from __future__ import annotations

import logging
from functools import partial

import pytest
import trio
import trio.testing

from runsvc.jobs import ticker as ticker_module
from runsvc.jobs.fire import FirePlan, fire
from runsvc.jobs.ticker import ScheduleTicker
from runsvc.store.jobs import get_job
from tests.jobs.ticker_helpers import EPOCH, at, deadline, fires_of, insert_job, runs_of, ticker_harness, ts


@pytest.fixture(name="clock")
def _clock():
    """Virtual time at real speed that the tests jump (see ticker_helpers)."""
    return trio.testing.MockClock(rate=1)


async def downtime(h, until) -> ScheduleTicker:
    """Stop the ticker (the server goes down), move the clock to `until`, start a new one (a restart)."""
    await h.settle()
    h.stop()
    h.clock.jump((until - h.now()).total_seconds())
    ticker = await h.start()
    await h.settle()
    return ticker


@pytest.mark.parametrize(("missed", "outcome"), [("run_once", "started"), ("skip", "skipped_missed")])
async def test_missed_fires_after_downtime_are_handled_once_for_the_latest(store, clock, missed, outcome):
    """After ten minutes down, only the latest missed fire time is handled: `run_once` starts one run for
    it, `skip` records it `skipped_missed`; the times before it are not recorded, the next minute fires
    as usual."""
    with deadline(EPOCH, at("2026-01-05 12:11")):
        async with ticker_harness(store, clock) as h:
            job = await h.write(insert_job, "down", "* * * * *", overlap="allow", missed=missed)
            await h.start()
            await h.advance_to(at("2026-01-05 12:00"))
            ticker = await downtime(h, at("2026-01-05 12:10:30"))
            fires = await h.read(fires_of, job)
            assert [f[:2] for f in fires] == [(ts("2026-01-05 12:00"), "started"), (ts("2026-01-05 12:10"), outcome)]
            runs = await h.read(runs_of, job)
            if missed == "run_once":
                assert [r[2] for r in runs] == [ts("2026-01-05 12:00"), ts("2026-01-05 12:10")]
                assert fires[1][2] == runs[1][0]
            else:
                assert len(runs) == 1 and fires[1][2] is None
            assert ticker.fires == {outcome: 1}
            await h.advance_to(at("2026-01-05 12:11"))
            assert (await h.read(fires_of, job))[-1][:2] == (ts("2026-01-05 12:11"), "started")


async def test_a_restart_within_five_seconds_of_a_fire_time_is_on_time(store, clock):
    """A fire time handled 4 s late (a quick restart) is not missed: it starts as usual, also with `skip`."""
    with deadline(EPOCH, at("2026-01-05 12:00:04")):
        async with ticker_harness(store, clock) as h:
            job = await h.write(insert_job, "quick", "* * * * *", missed="skip")
            await h.start()
            await downtime(h, at("2026-01-05 12:00:04"))
            assert [f[:2] for f in await h.read(fires_of, job)] == [(ts("2026-01-05 12:00"), "started")]


async def test_downtime_ending_just_after_a_fire_time_handles_the_missed_one_then_the_on_time_one(store, clock):
    """Back 2 s after a fire time: the latest missed one is handled by `missed` (run_once starts it), then
    the on-time one as usual; with overlap "skip" that one is skipped, as the catch-up run is queued."""
    with deadline(EPOCH, at("2026-01-05 12:10:02")):
        async with ticker_harness(store, clock) as h:
            job = await h.write(insert_job, "catch-up", "* * * * *", overlap="skip")
            await h.start()
            await downtime(h, at("2026-01-05 12:10:02"))
            assert [f[:2] for f in await h.read(fires_of, job)] == [
                (ts("2026-01-05 12:09"), "started"), (ts("2026-01-05 12:10"), "skipped_overlap"),
            ]


async def test_nothing_before_schedule_from_is_missed(store, clock):
    """A schedule created (schedule_from) while the server was down misses nothing from before it: the
    restart records no fire until its first time after schedule_from."""
    with deadline(EPOCH, at("2026-01-05 12:06")):
        async with ticker_harness(store, clock) as h:
            await h.start()
            await h.settle()
            h.stop()
            job = await h.write(insert_job, "new", "* * * * *", schedule_from=at("2026-01-05 12:05:20"))
            h.clock.jump((at("2026-01-05 12:05:40") - h.now()).total_seconds())
            ticker = await h.start()
            await h.settle()
            assert await h.read(fires_of, job) == []
            assert ticker.statistics().next_fire == at("2026-01-05 12:06")
            await h.advance_to(at("2026-01-05 12:06"))
            assert [f[:2] for f in await h.read(fires_of, job)] == [(ts("2026-01-05 12:06"), "started")]


async def test_a_fire_handled_again_by_a_process_that_missed_the_commit_is_not_doubled(store, clock):
    """Two tickers on one database (a restarted process that computed its fires before the old one's last
    commit) handle the same fire time: the unique key records it once, with one run."""
    with deadline(EPOCH, at("2026-01-05 12:00")):
        async with ticker_harness(store, clock) as h:
            job = await h.write(insert_job, "twice", "* * * * *", overlap="allow")
            first = await h.start()
            second = ScheduleTicker(store, h.recorder, h.scheduling, h.wall_clock)
            await h.nursery.start(second.run)
            await trio.testing.wait_all_tasks_blocked()
            await second.wait_asleep()
            await h.advance_to(at("2026-01-05 12:00"))
            await second.wait_asleep()
            assert len(await h.read(fires_of, job)) == 1
            assert len(await h.read(runs_of, job)) == 1
            assert first.fires + second.fires == {"started": 1}
            # And once more, by hand, with the plan a stale process would have.
            stored = await h.read(get_job, job)
            plan = FirePlan(job, at("2026-01-05 12:00"), stored.schedule, stored.schedule_from, missed=False)
            stale_fire = partial(fire, outbox=h.recorder.outbox)
            assert (await store.write(stale_fire, plan, ts("2026-01-05 12:00"))).outcome is None
            assert len(await h.read(runs_of, job)) == 1


async def test_a_fire_that_died_before_its_commit_is_fired_by_the_restart(store, clock, monkeypatch, caplog):
    """A fire whose transaction never committed (the process died in it: here it raises, and its
    savepoint rolls back the fire and the run) is not lost: the restarted ticker handles it, once."""
    calls = []

    def dying_fire(conn, plan, ts_, *, outbox):
        calls.append(plan.scheduled_for)
        fire(conn, plan, ts_, outbox=outbox)  # everything done…
        raise RuntimeError("killed before the commit")  # …and rolled back

    with deadline(EPOCH, at("2026-01-05 12:00:03")):
        async with ticker_harness(store, clock) as h:
            job = await h.write(insert_job, "dies", "* * * * *")
            monkeypatch.setattr(ticker_module, "fire", dying_fire)
            await h.start()
            with caplog.at_level(logging.ERROR, logger="runsvc.jobs.ticker"):
                await h.advance_to(at("2026-01-05 12:00"))
            assert calls == [at("2026-01-05 12:00")]
            assert "a schedule's fire failed" in caplog.text
            assert await h.read(fires_of, job) == [] and await h.read(runs_of, job) == []
            monkeypatch.setattr(ticker_module, "fire", fire)
            await downtime(h, at("2026-01-05 12:00:03"))
            fires = await h.read(fires_of, job)
            runs = await h.read(runs_of, job)
            assert [f[:2] for f in fires] == [(ts("2026-01-05 12:00"), "started")]
            assert [(r[0], r[2]) for r in runs] == [(fires[0][2], ts("2026-01-05 12:00"))]


@pytest.mark.parametrize(("cron", "back", "latest"), [
    ("0 3 1 * *", "2026-04-20 12:00", "2026-04-01 03:00"),  # monthly, 3½ months down
    ("*/5 * * * *", "2026-04-20 12:03", "2026-04-20 12:00"),  # every 5 minutes, 3½ months down
    ("0 0 1 1 *", "2028-02-01 00:00", "2028-01-01 00:00"),  # yearly, two years down
])
async def test_a_long_downtime_handles_only_the_latest_missed_time(store, clock, cron, back, latest):
    """Whatever the schedule and however long the server was down, only its latest missed time is handled
    (run_once: one run), found without walking the downtime fire by fire."""
    with deadline(EPOCH, at(back)):
        async with ticker_harness(store, clock) as h:
            job = await h.write(insert_job, "long-down", cron)
            await h.start()
            await downtime(h, at(back))
            assert [f[:2] for f in await h.read(fires_of, job)] == [(ts(latest), "started")]
            assert [r[2] for r in await h.read(runs_of, job)] == [ts(latest)]
