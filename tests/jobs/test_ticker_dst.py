"""Daylight saving in Europe/Berlin: the ticker fires what cronsim says (a fixed time in the spring gap at
the first minute after it, in the autumn repeat once; `*/30` at every wall-clock minute that exists), and
records each fire time once."""

from __future__ import annotations

import datetime as dt

import pytest
import trio
import trio.testing

from runsvc.jobs.schedule import next_fires
from tests.jobs.ticker_helpers import at, deadline, fires_of, insert_job, ticker_harness, ts

BERLIN = "Europe/Berlin"


@pytest.fixture(name="clock")
def _clock():
    """Virtual time at real speed that the tests jump (see ticker_helpers)."""
    return trio.testing.MockClock(rate=1)


async def follow(h, until: dt.datetime) -> list[dt.datetime]:
    """Move the clock from each next fire time to the next, up to `until`; the times visited."""
    visited = []
    while (upcoming := h.ticker.statistics().next_fire) is not None and upcoming <= until:
        await h.advance_to(upcoming)
        visited.append(upcoming)
    return visited


# (start, end, expected fires of `30 2 * * *`, expected fires of `*/30 * * * *` up to `end`), UTC.
SPRING = (
    "2026-03-28 00:00", "2026-03-30 00:30",
    ["2026-03-28 01:30", "2026-03-29 01:00", "2026-03-30 00:30"],  # 02:30 CET; 03:00 CEST (gap); 02:30 CEST
    # 01:00 and 01:30 CET, then 03:00 and 03:30 CEST
    ["2026-03-29 00:00", "2026-03-29 00:30", "2026-03-29 01:00", "2026-03-29 01:30"],
)
AUTUMN = (
    "2026-10-24 23:45", "2026-10-26 01:30",
    ["2026-10-25 00:30", "2026-10-26 01:30"],  # 02:30 CEST once (not again at 02:30 CET); then 02:30 CET
    ["2026-10-25 00:00", "2026-10-25 00:30", "2026-10-25 01:00", "2026-10-25 01:30"],  # 02:00, 02:30 CEST, then CET
)


@pytest.mark.parametrize("case", [SPRING, AUTUMN], ids=["spring-gap", "autumn-repeat"])
async def test_daylight_saving_fires_follow_cronsim_and_are_recorded_once(store, clock, case):
    """Across a DST change in Berlin, a fixed-time job and a `*/30` job fire at exactly cronsim's times,
    each recorded once with its run."""
    start, end, daily_expected, half_hourly_expected = case
    half_hourly_end = half_hourly_expected[-1]
    with deadline(at(start), at(end)):
        async with ticker_harness(store, clock, epoch=at(start)) as h:

            def jobs(conn):
                return (
                    insert_job(conn, "daily", "30 2 * * *", timezone=BERLIN, overlap="allow", schedule_from=at(start)),
                    insert_job(conn, "half-hourly", "*/30 * * * *", timezone=BERLIN, overlap="allow",
                               schedule_from=at(start)),
                )

            daily, half_hourly = await h.write(jobs)
            await h.start()
            await follow(h, at(end))
            daily_fires = await h.read(fires_of, daily)
            assert [(f[0], f[1]) for f in daily_fires] == [(ts(t), "started") for t in daily_expected]
            assert all(f[2] is not None for f in daily_fires)
            half_hourly_fires = [f for f in await h.read(fires_of, half_hourly) if f[0] <= ts(half_hourly_end)]
            assert [f[0] for f in half_hourly_fires if f[0] >= ts(half_hourly_expected[0])] == [
                ts(t) for t in half_hourly_expected
            ]
            assert {f[1] for f in half_hourly_fires} == {"started"}


async def test_a_schedule_counted_from_inside_the_repeated_hour_does_not_fire_before_it(store, clock):
    """A fixed-time job whose schedule starts in the second pass of the autumn repeat (02:10 CET) does not
    fire the first 02:30 (CEST), which lay before it, as missed: its first fire is the next day's."""
    start = at("2026-10-25 01:10")  # 02:10 CET, the second 02:10 of the night
    # cronsim's own first answer from here is the first 02:30 (CEST), 40 minutes before `start`.
    assert next_fires("30 2 * * *", BERLIN, start, 1) == [at("2026-10-26 01:30")]
    with deadline(start, at("2026-10-26 01:30")):
        async with ticker_harness(store, clock, epoch=start) as h:
            job = await h.write(insert_job, "late-starter", "30 2 * * *", timezone=BERLIN, schedule_from=start)
            ticker = await h.start()
            await h.settle()
            assert ticker.statistics().next_fire == at("2026-10-26 01:30")
            await h.advance_to(at("2026-10-25 01:40"))
            assert await h.read(fires_of, job) == []
            await h.advance_to(at("2026-10-26 01:30"))
            assert [f[:2] for f in await h.read(fires_of, job)] == [(ts("2026-10-26 01:30"), "started")]
