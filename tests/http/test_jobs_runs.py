"""Runs of jobs over real HTTP (SPEC §15): starting one with parameters that reach the child as PARAM_
variables, `last_run`, deleting a job with queued and running runs, the fires page, the cron preview."""

from __future__ import annotations

import json
import sys

import pytest
import trio

from tests.conftest import make_settings
from tests.helpers import add_user, assert_error, login, open_websocket, wait_status

JOBS = "/api/v1/jobs"
PY = sys.executable
PRINT_PARAMS = [PY, "-c",
                "import os\nfor k in sorted(os.environ):\n  k.startswith('PARAM_') and print(k, os.environ[k])"]
SLEEPER = [PY, "-c", "import time; print('up', flush=True); time.sleep(60)"]


@pytest.fixture(name="settings")
def _settings(tmp_path):
    """One run at a time, so a second run of a job stays queued while the first runs."""
    return make_settings(tmp_path, max_concurrent_runs=1)


@pytest.fixture(name="operator")
async def _operator(server, client):
    """`client` logged in as an operator, with its CSRF header set; yields the header."""
    await add_user(server, "olga", "operator")
    csrf = {"X-CSRF-Token": await login(client, "olga")}
    client.headers.update(csrf)
    return csrf


async def create(client, body):
    response = await client.post(JOBS, json=body)
    assert response.status_code == 201, response.text
    return response.json()["job"]


async def start(client, job_id, body, status=201):
    response = await client.post(f"{JOBS}/{job_id}/runs", json=body)
    assert response.status_code == status, response.text
    return response.json()["run"] if status == 201 else response


async def stdout_of(client, run_id):
    events = (await client.get(f"/api/v1/runs/{run_id}/events")).json()["events"]
    return [event["data"] for event in events if event["kind"] == "stdout"]


PARAMS = [
    {"name": "target", "choices": ["prod", "staging"], "default": "staging"},
    {"name": "ref", "required": True},
    {"name": "note"},  # optional, no default: absent from the environment unless given
    {"name": "quote", "default": "$(touch /tmp/x); `id` 'a\"b"},
]


async def test_a_started_job_runs_with_its_parameters_in_the_environment(client, operator):
    """POST /jobs/{id}/runs queues a run named after the job with trigger "job"; each parameter value
    reaches the child as PARAM_<NAME>, defaults filled in, shell text passed through untouched."""
    with trio.fail_after(20):
        job = await create(client, {"name": "deploy", "command": PRINT_PARAMS, "env": {"PARAM_REF": "job's own"},
                                    "params": PARAMS, "concurrency": {"limit": 2}, "retries": {"max": 1}})
        run = await start(client, job["id"], {"params": {"ref": "v1.2"}})
        finished = await wait_status(client, run["id"])
        output = await stdout_of(client, run["id"])
        job_after = (await client.get(f"{JOBS}/{job['id']}")).json()["job"]
    assert run["trigger"] == "job" and run["job_id"] == job["id"] and run["job_name"] == "deploy"
    assert run["name"] == "deploy" and run["created_by"] == "olga" and run["try"] == 1
    assert run["params"] == {"target": "staging", "ref": "v1.2", "quote": PARAMS[3]["default"]}
    assert run["concurrency"] == {"key": "deploy", "limit": 2}
    assert run["retries"] == {"max": 1, "delay_s": 10, "backoff": "exponential", "on": ["failed", "timed_out"]}
    assert finished["status"] == "succeeded"
    assert output == [f"PARAM_QUOTE {PARAMS[3]['default']}", "PARAM_REF v1.2", "PARAM_TARGET staging"]
    assert job_after["last_run"]["id"] == run["id"] and job_after["last_run"]["status"] == "succeeded"
    assert "env" not in job_after["last_run"]  # a summary, as GET /runs lists it


@pytest.mark.parametrize(("params", "message"), [
    ({"ref": "x", "colour": "red"}, "unknown parameter 'colour'"),
    ({}, "parameter 'ref' is required"),
    ({"ref": "x", "target": "dev"}, "parameter 'target' must be one of prod, staging"),
    ({"ref": "x\u0000"}, "params.ref must not contain a NUL character"),
    ({"ref": 1}, "params.ref must be a string"),
])
async def test_bad_parameter_values_are_400_naming_the_parameter(client, operator, params, message):
    """An unknown parameter, a missing required one, a value outside its choices or not a clean string is a
    400 naming it, and no run is created."""
    with trio.fail_after(10):
        job = await create(client, {"name": "deploy", "command": ["true"], "params": PARAMS})
        response = await start(client, job["id"], {"params": params}, status=400)
        runs = (await client.get("/api/v1/runs")).json()["runs"]
    assert_error(response, 400, "invalid_request", message)
    assert runs == []


async def test_not_before_is_normalised_and_checked(client, operator):
    """not_before on starting a job is stored as fixed-width UTC; one without a UTC offset is a 400."""
    with trio.fail_after(10):
        job = await create(client, {"name": "later", "command": ["true"]})
        run = await start(client, job["id"], {"not_before": "2099-01-02T03:04:05+02:00"})
        bad = await start(client, job["id"], {"not_before": "2099-01-02T03:04:05"}, status=400)
        unknown = await start(client, job["id"], {"when": "now"}, status=400)
        missing = await start(client, 999, {}, status=404)
    assert run["not_before"] == "2099-01-02T01:04:05.000000Z"
    assert_error(bad, 400, "invalid_request")
    assert "not_before" in bad.json()["error"]["message"]
    assert_error(unknown, 400, "invalid_request", "unknown field: when")
    assert_error(missing, 404, "not_found", "no job 999")
    await client.post(f"/api/v1/runs/{run['id']}/cancel")


async def test_deleting_a_job_cancels_its_queued_runs_and_keeps_the_rest(server, client, operator):
    """DELETE /jobs/{id}: its queued run is cancelled at once with a `state cancelled` event, published on
    the runs feed; its running run goes on; both keep job_name with job_id null."""
    with trio.fail_after(30):
        job = await create(client, {"name": "doomed", "command": SLEEPER})
        running = await start(client, job["id"], {})
        await wait_status(client, running["id"], {"running"})
        queued = await start(client, job["id"], {})  # the one slot is taken: it waits
        url = server.url.replace("http://", "ws://") + "/api/v1/runs/feed/ws"
        cookie = [(b"Cookie", f"runsvc_session={client.cookies['runsvc_session']}".encode())]
        async with open_websocket(url, extra_headers=cookie, message_queue_size=16) as feed:
            while server.services.feed.statistics().watchers == 0:
                await trio.sleep(0.01)
            deleted = await client.delete(f"{JOBS}/{job['id']}")
            while True:
                frame = json.loads(await feed.get_message())
                if frame["run"]["id"] == queued["id"]:
                    break
        counted = server.services.recorder.finished["cancelled"]  # before the running one is cancelled
        cancelled = (await client.get(f"/api/v1/runs/{queued['id']}")).json()["run"]
        events = (await client.get(f"/api/v1/runs/{queued['id']}/events")).json()
        still_running = (await client.get(f"/api/v1/runs/{running['id']}")).json()["run"]
        await client.post(f"/api/v1/runs/{running['id']}/cancel")
    assert deleted.status_code == 204
    assert frame["run"]["status"] == "cancelled" and frame["run"]["job_id"] is None
    assert cancelled["status"] == "cancelled" and cancelled["job_id"] is None and cancelled["job_name"] == "doomed"
    assert events["complete"] is True
    assert events["events"][-1]["data"] == {"status": "cancelled", "exit_code": None,
                                            "reason": "job deleted by olga"}
    assert still_running["status"] == "running"
    assert still_running["job_id"] is None and still_running["job_name"] == "doomed"
    assert counted == 1  # runsvc_runs_finished_total counts it like any cancelled run


async def _record_fires(server, job_id, fires):
    """Fires as the ticker records them, written through the store."""
    def insert(conn):
        conn.executemany(
            "INSERT INTO job_fires (job_id, scheduled_for, outcome, run_id, recorded_at) VALUES (?, ?, ?, ?, ?)",
            [(job_id, when, outcome, run_id, when) for when, outcome, run_id in fires],
        )
    await server.services.store.write(insert)


async def test_fires_are_listed_newest_first_with_a_limit(server, client, operator):
    """GET /jobs/{id}/fires lists the job's fires newest first, 50 by default, `limit` at most 500; another
    job's fires are not among them."""
    with trio.fail_after(10):
        job = await create(client, {"name": "ticking", "command": ["true"], "schedule": {"cron": "* * * * *"}})
        other = await create(client, {"name": "other", "command": ["true"]})
        times = [f"2026-12-01T10:{minute:02d}:00.000000Z" for minute in range(60)]
        await _record_fires(server, job["id"], [(when, "started", None) for when in times[:-2]])
        await _record_fires(server, job["id"], [(times[-2], "skipped_overlap", None), (times[-1], "started", 7)])
        await _record_fires(server, other["id"], [(times[0], "skipped_missed", None)])
        default = (await client.get(f"{JOBS}/{job['id']}/fires")).json()["fires"]
        two = (await client.get(f"{JOBS}/{job['id']}/fires", params={"limit": 2})).json()["fires"]
        too_many = await client.get(f"{JOBS}/{job['id']}/fires", params={"limit": 501})
        unknown = await client.get(f"{JOBS}/{job['id']}/fires", params={"before": 1})
    assert len(default) == 50 and [fire["scheduled_for"] for fire in default] == times[::-1][:50]
    assert two == [{"scheduled_for": times[-1], "outcome": "started", "run_id": 7},
                   {"scheduled_for": times[-2], "outcome": "skipped_overlap", "run_id": None}]
    assert_error(too_many, 400, "invalid_request", "limit must be <= 500")
    assert_error(unknown, 400, "invalid_request", "unknown query parameter: before")


async def test_cron_preview_explains_and_lists_the_next_three_fires(client, operator):
    """GET /schedule/preview answers the library's reading and the next 3 fire times in UTC, or a 400
    with the library's error naming the parameter."""
    with trio.fail_after(10):
        good = await client.get("/api/v1/schedule/preview", params={"cron": "30 6 * * 1-5", "timezone": "Asia/Tokyo"})
        bad_cron = await client.get("/api/v1/schedule/preview", params={"cron": "30 25 * * *"})
        bad_zone = await client.get("/api/v1/schedule/preview", params={"cron": "@daily", "timezone": "Nowhere"})
        no_cron = await client.get("/api/v1/schedule/preview")
    assert good.status_code == 200, good.text
    body = good.json()
    assert body["explanation"] == "At 06:30 on Monday through Friday"
    assert len(body["next_fires"]) == 3 and body["next_fires"] == sorted(body["next_fires"])
    assert all(fire[11:] == "21:30:00.000000Z" for fire in body["next_fires"])  # 06:30 JST is 21:30 UTC
    assert_error(bad_cron, 400, "invalid_request", "cron is not a valid cron expression: Bad hour")
    assert_error(bad_zone, 400, "invalid_request", "timezone: unknown time zone 'Nowhere'")
    assert_error(no_cron, 400, "invalid_request", "cron is required")
