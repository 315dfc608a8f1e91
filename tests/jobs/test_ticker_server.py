"""The ticker inside a real server (mock clock): a `* * * * *` job fires at its minute, the scheduler runs
the child to success, the run and /metrics say so."""

from __future__ import annotations

from functools import partial

import httpx
import pytest
import trio
import trio.testing

from runsvc.jobs.ticker import WallClock
from runsvc.server import serve
from tests.conftest import make_settings
from tests.helpers import FAST_HASHER, add_user, login, wait_status
from tests.http.test_metrics import scrape, value
from tests.jobs.ticker_helpers import EPOCH, at, deadline, insert_job, ts


@pytest.fixture(name="clock")
def _clock():
    """Virtual time at real speed that the test jumps (see ticker_helpers)."""
    return trio.testing.MockClock(rate=1)


async def test_a_server_fires_a_schedule_and_runs_it(tmp_path, clock):
    """In a running server, a job on `* * * * *` fires at the next minute: its run (trigger schedule,
    scheduled_for the minute) is claimed and succeeds, and runsvc_schedule_fires_total counts it."""
    settings = make_settings(tmp_path)
    wall_clock = WallClock.following_trio(EPOCH.timestamp() - trio.current_time())
    with deadline(EPOCH, at("2026-01-05 12:00")):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial(serve, settings, password_hasher=FAST_HASHER, clock=wall_clock))
            services = server.services
            echo = partial(insert_job, command=("sh", "-c", "echo fired"))
            job = await services.store.write(echo, "e2e", "* * * * *")
            services.ticker.wake()
            await trio.testing.wait_all_tasks_blocked()
            await services.ticker.wait_asleep()
            assert services.ticker.statistics().next_fire == at("2026-01-05 12:00")
            clock.jump((at("2026-01-05 12:00") - wall_clock.datetime()).total_seconds() + 0.001)
            await add_user(server, "viewer", "viewer")
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
                await login(client, "viewer")
                listed = []
                while not listed:
                    listed = (await client.get("/api/v1/runs")).json()["runs"]
                    await trio.sleep(0.05)
                run = await wait_status(client, listed[0]["id"])
                assert run["status"] == "succeeded"
                assert (run["job_id"], run["trigger"]) == (job, "schedule")
                assert run["scheduled_for"] == ts("2026-01-05 12:00")
                log = (await client.get(f"/api/v1/runs/{run['id']}/log")).text
                assert log == "fired\n"
                families = await scrape(client)
            assert families["runsvc_schedule_fires"]["type"] == "counter"
            assert value(families, "runsvc_schedule_fires", outcome="started") == 1
            assert value(families, "runsvc_schedule_fires", outcome="skipped_overlap") == 0
            server.request_shutdown()
