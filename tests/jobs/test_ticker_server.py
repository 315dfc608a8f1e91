"""The ticker inside a real server (mock clock): a `* * * * *` job fires at its minute, the scheduler runs
the child to success, the run and /metrics say so."""

from __future__ import annotations

import datetime as dt
import time
from functools import partial

import httpx
import pytest
import trio
import trio.testing

from runsvc.jobs.ticker import WallClock
from runsvc.server import serve
from runsvc.timeutil import format_ts, parse_ts
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


async def test_jobs_created_and_disabled_through_the_api_wake_the_ticker(tmp_path, clock):
    """A job created through POST /jobs is fired at the first of its answer's next_fires (the jobs
    service wakes the ticker); its fire is listed by GET /jobs/{id}/fires; once PATCH disables the
    schedule, the next minute fires nothing."""
    settings = make_settings(tmp_path)
    # The jobs service stamps schedule_from with the real time: the ticker's wall clock starts there.
    wall_clock = WallClock.following_trio(time.time() - trio.current_time())
    start = wall_clock.datetime()
    with deadline(start, start + dt.timedelta(minutes=3)):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial(serve, settings, password_hasher=FAST_HASHER, clock=wall_clock))
            ticker = server.services.ticker
            await add_user(server, "olga", "operator")
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
                client.headers["X-CSRF-Token"] = await login(client, "olga")
                body = {"name": "api-job", "command": ["sh", "-c", "echo api"],
                        "schedule": {"cron": "* * * * *", "overlap": "allow"}}
                response = await client.post("/api/v1/jobs", json=body)
                assert response.status_code == 201, response.text
                job = response.json()["job"]
                first = parse_ts(job["next_fires"][0])
                await trio.testing.wait_all_tasks_blocked()
                await ticker.wait_asleep()
                assert ticker.statistics().schedules == 1 and ticker.statistics().next_fire == first
                clock.jump((first - wall_clock.datetime()).total_seconds() + 0.001)
                await trio.testing.wait_all_tasks_blocked()
                await ticker.wait_asleep()
                (fire,) = (await client.get(f"/api/v1/jobs/{job['id']}/fires")).json()["fires"]
                assert (fire["scheduled_for"], fire["outcome"]) == (format_ts(first), "started")
                run = await wait_status(client, fire["run_id"])
                assert run["status"] == "succeeded" and run["job_name"] == "api-job"
                response = await client.patch(
                    f"/api/v1/jobs/{job['id']}", json={"schedule": {"cron": "* * * * *", "enabled": False}}
                )
                assert response.status_code == 200, response.text
                await trio.testing.wait_all_tasks_blocked()
                await ticker.wait_asleep()
                assert ticker.statistics().schedules == 0
                clock.jump(61)
                await trio.testing.wait_all_tasks_blocked()
                await ticker.wait_asleep()
                assert len((await client.get(f"/api/v1/jobs/{job['id']}/fires")).json()["fires"]) == 1
            server.request_shutdown()
