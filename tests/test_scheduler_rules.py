"""The scheduler with not_before and concurrency groups (SPEC §15), for real: a delayed run starts
within 1 s after its time and not before, without polling; a group's runs queue behind its limit and
start when a run of the group ends; `waiting_for` says why, in the pinned order."""

from __future__ import annotations

import sys

import pytest
import trio

from runsvc.timeutil import parse_ts, ts_after
from tests.conftest import make_settings
from tests.helpers import running_server
from tests.test_scheduler import events_of, peak_running, submit

PY = sys.executable
SLEEP_FOREVER = [PY, "-c", "import time; time.sleep(60)"]


@pytest.fixture(name="services")
async def _services(tmp_path):
    # The safety net is far away: a delayed run that starts on time was woken by its own not_before.
    settings = make_settings(tmp_path, kill_grace_s=0.5, max_concurrent_runs=4, scheduler_safety_net_s=600)
    async with running_server(settings) as server:
        yield server.services


async def wait_running(services, run_id):
    watcher = services.feed.watch()
    try:
        while (await services.runs.get(run_id)).status == "queued":
            await watcher.receive()
    finally:
        watcher.close()


async def test_delayed_run_starts_within_a_second_after_its_time(services):
    """A run with not_before 1.5 s ahead waits (saying so), then starts at most 1 s after that time."""
    with trio.fail_after(20):
        not_before = ts_after(1.5)
        run = await submit(services, [PY, "-c", "pass"], not_before=not_before)
        assert run.waiting_for == f"not before {not_before}"
        assert (await services.runs.get(run.id)).waiting_for == f"not before {not_before}"
        await events_of(services, run.id)
        done = await services.runs.get(run.id)
    assert done.status == "succeeded"
    late_s = (parse_ts(done.started_at) - parse_ts(not_before)).total_seconds()
    assert 0 <= late_s < 1.0, late_s


async def test_not_before_in_the_past_starts_at_once(services):
    """A not_before an hour ago does not delay the run."""
    with trio.fail_after(20):
        run = await submit(services, [PY, "-c", "pass"], not_before=ts_after(-3600))
        assert run.waiting_for is None
        await events_of(services, run.id)
        assert (await services.runs.get(run.id)).status == "succeeded"


async def test_group_holds_runs_until_one_ends_and_says_so(services):
    """With limit 1, the group's second run waits (waiting_for names the group and its count) while a
    run outside the group starts; when the first ends, the second starts."""
    group = {"key": "db", "limit": 1}
    with trio.fail_after(30):
        first = await submit(services, SLEEP_FOREVER, concurrency=group)
        await wait_running(services, first.id)
        second = await submit(services, [PY, "-c", "pass"], concurrency=group)
        free = await submit(services, [PY, "-c", "pass"])
        await events_of(services, free.id)
        waiting = await services.runs.get(second.id)
        assert (waiting.status, waiting.waiting_for) == ("queued", "concurrency group db (1 of 1 running)")
        await services.runs.cancel(first.id, by="tester")
        await events_of(services, second.id)
        assert (await services.runs.get(second.id)).status == "succeeded"


async def test_waiting_for_order_not_before_then_group_then_executor(services):
    """The first reason that applies: not_before, then the group, then an executor, even when the later
    ones also apply."""
    group = {"key": "db", "limit": 1}
    with trio.fail_after(30):
        holder = await submit(services, SLEEP_FOREVER, concurrency=group)
        await wait_running(services, holder.id)
        later = ts_after(3600)
        all_three = await submit(services, ["true"], concurrency=group, labels=["gpu"], not_before=later)
        two = await submit(services, ["true"], concurrency=group, labels=["gpu"])
        one = await submit(services, ["true"], labels=["gpu"])
        reasons = [(await services.runs.get(run.id)).waiting_for for run in (all_three, two, one)]
        await services.runs.cancel(holder.id, by="tester")
    assert reasons == [f"not before {later}", "concurrency group db (1 of 1 running)", "an agent with labels gpu"]


async def test_group_limit_two_never_exceeded(services):
    """Five runs of a group with limit 2 (and slots for 4): at most 2 run at once, all succeed."""
    group = {"key": "g", "limit": 2}
    with trio.fail_after(30):
        watcher = services.feed.watch()
        runs = [await submit(services, [PY, "-c", "import time; time.sleep(0.2)"], concurrency=group)
                for _ in range(5)]
        peak = await peak_running(watcher, len(runs))
        statuses = [(await services.runs.get(run.id)).status for run in runs]
    assert peak == 2 and statuses == ["succeeded"] * 5
