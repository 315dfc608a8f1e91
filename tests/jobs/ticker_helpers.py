"""Helpers of the schedule ticker's tests: jobs inserted as rows (as the jobs API stores them), a ticker
on a real store whose wall clock follows a MockClock, and moving that clock from one fire to the next.

The clock is `MockClock(rate=1)`: virtual time that runs at real speed and jumps on demand. An autojump
clock would jump whenever the test waits on a SQLite worker thread (a thread is not a trio task), to the
next deadline it finds, the test's own or the next fire time, which judges fires late that were not.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import trio
import trio.testing

from runsvc.events import EventLog, RunEventBus, RunFeed
from runsvc.jobs.ticker import ScheduleTicker, WallClock
from runsvc.model import Run
from runsvc.recorder import RunRecorder
from runsvc.store import Store
from runsvc.timeutil import format_ts

UTC = dt.UTC
# Wall time when the mock clock reads 0: a Monday, 11:59:30 UTC.
EPOCH = dt.datetime(2026, 1, 5, 11, 59, 30, tzinfo=UTC)


def insert_job(
    conn: sqlite3.Connection,
    name: str,
    cron: str | None,
    *,
    schedule_from: dt.datetime = EPOCH,
    timezone: str = "UTC",
    overlap: str = "skip",
    missed: str = "run_once",
    enabled: bool = True,
    command: tuple[str, ...] = ("true",),
    params: tuple[dict[str, Any], ...] = (),
) -> int:
    """A job row as the jobs API stores it (nested objects normalised, as JSON text); its id."""
    schedule = None if cron is None else {
        "cron": cron, "timezone": timezone, "overlap": overlap, "enabled": enabled, "missed": missed,
    }
    ts = format_ts(schedule_from)
    return conn.execute(
        "INSERT INTO jobs (name, description, command, env, timeout_s, labels, params, retries, concurrency, "
        "schedule, schedule_from, created_at, created_by, updated_at) "
        "VALUES (?, '', ?, '{}', 60, '[]', ?, NULL, NULL, ?, ?, ?, 'tester', ?) RETURNING id",
        (name, json.dumps(list(command)), json.dumps(list(params)),
         None if schedule is None else json.dumps(schedule), None if cron is None else ts, ts, ts),
    ).fetchone()[0]


def update_schedule(conn: sqlite3.Connection, job_id: int, schedule_from: dt.datetime, **changes: Any) -> None:
    """Change a job's schedule as the jobs API does: the new one whole, counted from `schedule_from`."""
    schedule = json.loads(conn.execute("SELECT schedule FROM jobs WHERE id = ?", (job_id,)).fetchone()[0])
    schedule.update(changes)
    conn.execute(
        "UPDATE jobs SET schedule = ?, schedule_from = ?, updated_at = ? WHERE id = ?",
        (json.dumps(schedule), format_ts(schedule_from), format_ts(schedule_from), job_id),
    )


def fires_of(conn: sqlite3.Connection, job_id: int) -> list[tuple[str, str, int | None]]:
    """(scheduled_for, outcome, run_id) of the job's recorded fires, oldest first."""
    return [tuple(row) for row in conn.execute(
        "SELECT scheduled_for, outcome, run_id FROM job_fires WHERE job_id = ? ORDER BY scheduled_for", (job_id,)
    )]


def runs_of(conn: sqlite3.Connection, job_id: int) -> list[tuple[int, str, str | None, str]]:
    """(id, status, scheduled_for, trigger) of the job's runs, oldest first."""
    return [tuple(row) for row in conn.execute(
        "SELECT id, status, scheduled_for, trigger FROM runs WHERE job_id = ? ORDER BY id", (job_id,)
    )]


def deadline(start: dt.datetime, end: dt.datetime) -> trio.CancelScope:
    """A deadline on the mock clock for a test that moves it from `start` to `end`: the jumps plus 30
    seconds of real work."""
    return trio.fail_after((end - start).total_seconds() + 30)


def at(text: str) -> dt.datetime:
    """An aware UTC datetime from 'YYYY-MM-DD HH:MM[:SS]'."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def ts(text: str) -> str:
    """The stored form of at(text)."""
    return format_ts(at(text))


@attrs.define
class FakeScheduling:
    """The ticker's view of the scheduler (runs.Scheduling), recording what it is asked."""

    wakes: int = 0
    stops: list[tuple[int, str, str]] = attrs.Factory(list)

    def wake(self) -> None:
        self.wakes += 1

    def request_stop(self, run_id: int, status: str, reason: str) -> bool:
        self.stops.append((run_id, status, reason))
        return True


@attrs.define
class Harness:
    store: Store
    clock: trio.testing.MockClock
    wall_clock: WallClock
    scheduling: FakeScheduling
    bus: RunEventBus
    recorder: RunRecorder
    published: list[Run]  # every run the feed published, in order
    nursery: trio.Nursery
    _wall_offset: list[float]
    ticker: ScheduleTicker | None = None
    _scope: trio.CancelScope | None = None

    async def start(self) -> ScheduleTicker:
        """A new ticker (fresh memory, as after a restart), running until `stop()`."""
        ticker = ScheduleTicker(self.store, self.recorder, self.scheduling, self.wall_clock)

        async def run(task_status: trio.TaskStatus[None]) -> None:
            with trio.CancelScope() as scope:
                self._scope = scope
                await ticker.run(task_status=task_status)

        await self.nursery.start(run)
        self.ticker = ticker
        return ticker

    def stop(self) -> None:
        """Stop the ticker (as a server that goes down)."""
        assert self._scope is not None
        self._scope.cancel()
        self._scope = None

    def step_wall(self, seconds: float) -> None:
        """The wall clock steps (NTP, a resumed VM); trio's clock does not move."""
        self._wall_offset[0] += seconds

    def now(self) -> dt.datetime:
        return self.wall_clock.datetime()

    async def settle(self) -> None:
        """Until the ticker has handled everything due and sleeps."""
        assert self.ticker is not None
        await trio.testing.wait_all_tasks_blocked()
        await self.ticker.wait_asleep()

    async def advance_to(self, moment: dt.datetime) -> None:
        """Let the ticker settle, move the wall clock to `moment` (if ahead), let it handle what is due."""
        await self.settle()
        seconds = (moment - self.now()).total_seconds()
        if seconds > 0:
            # A millisecond past it: the sleep's deadline (trio time) must lie behind, not a float's
            # rounding ahead, once wait_all_tasks_blocked returns.
            self.clock.jump(seconds + 0.001)
        await self.settle()

    async def write(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """A direct change of the database (a job edited through the API), then the ticker woken."""
        result = await self.store.write(partial(fn, **kwargs), *args)
        if self.ticker is not None:
            self.ticker.wake()
        return result

    async def read(self, fn: Any, *args: Any) -> Any:
        return await self.store.read(fn, *args)


@asynccontextmanager
async def ticker_harness(
    store: Store, clock: trio.testing.MockClock, epoch: dt.datetime = EPOCH
) -> AsyncIterator[Harness]:
    """Everything a ticker needs, on `store`, with wall time `epoch` when it starts, then moving with the
    mock clock."""
    published: list[Run] = []

    def frame(run: Run) -> str:
        published.append(run)
        return ""

    bus = RunEventBus()
    feed = RunFeed(frame)
    recorder = RunRecorder(EventLog(store, bus), bus, feed)
    # epoch + trio's clock, as WallClock.following_trio, plus the steps a test makes (step_wall).
    offset = [epoch.timestamp() - trio.current_time()]
    wall_clock = WallClock(lambda: offset[0] + trio.current_time())

    async def drain() -> None:
        """Keep a watcher on the feed (so frames are made); one dropped for lagging (a thousand fires
        at once) is replaced: those tests do not read `published`."""
        while True:
            watcher = feed.watch()
            try:
                while True:
                    await watcher.receive()
            except trio.EndOfChannel:
                pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        yield Harness(store, clock, wall_clock, FakeScheduling(), bus, recorder, published, nursery, offset)
        nursery.cancel_scope.cancel()

