"""Re-runs and a job's runs over real HTTP (SPEC §15): POST /runs/{id}/rerun, GET /runs?job_id=, and
`runsvc rerun` from a terminal."""

from __future__ import annotations

import sys

import pytest
import trio

from runsvc.store import runs as run_sql
from runsvc.timeutil import now_ts
from tests.helpers import PASSWORD, add_user, assert_error, child_env, login, wait_status

RUNS = "/api/v1/runs"
PY = sys.executable
SLEEP = [PY, "-c", "import time; time.sleep(60)"]


@pytest.fixture(name="operator")
async def _operator(server, client):
    """`client` logged in as an operator; yields its CSRF token."""
    await add_user(server, "olga", "operator")
    return await login(client, "olga")


async def post(client, csrf, path, body=None):
    return await client.post(path, json=body, headers={"X-CSRF-Token": csrf})


def job_run(server, job_name: str, **fields):
    """Insert a job named `job_name` and a queued run of it (as the jobs service would); the run."""

    def write(conn):
        job_id = conn.execute(
            "INSERT INTO jobs (name, command, env, timeout_s, created_at, updated_at) "
            "VALUES (?, '[\"true\"]', '{}', 60, ?, ?) RETURNING id", (job_name, now_ts(), now_ts()),
        ).fetchone()[0]
        run, _ = run_sql.create_run(
            conn, command=["true"], env={"PARAM_X": "1"}, timeout_s=60, name=job_name, created_by="olga",
            ts=now_ts(), labels=["nowhere"], job_id=job_id, job_name=job_name, trigger="job",
            params={"x": "1"}, **fields,
        )
        return run

    return server.services.store.write(write)


async def test_rerun_copies_the_spec_as_a_first_try(server, client, operator):
    """A re-run has the run's command, env, timeout, name, labels, job, params, retries and
    concurrency; trigger rerun, try 1, retry_of null, created by who asked; the original is untouched."""
    with trio.fail_after(20):
        original = await job_run(server, "nightly", retries={"max": 1, "delay_s": 5, "backoff": "fixed",
                                                             "on": ["failed"]},
                                 concurrency={"key": "nightly", "limit": 1}, retry_of=None, try_number=2)
        await add_user(server, "otto", "operator")
        csrf = await login(client, "otto")
        response = await post(client, csrf, f"{RUNS}/{original.id}/rerun")
        assert response.status_code == 201, response.text
        again = response.json()["run"]
        read = (await client.get(f"{RUNS}/{original.id}")).json()["run"]
    same = ("command", "env", "timeout_s", "name", "labels", "job_id", "job_name", "params", "retries",
            "concurrency")
    assert {key: again[key] for key in same} == {key: read[key] for key in same}
    assert again["env"] == {"PARAM_X": "1"} and again["job_name"] == "nightly"
    assert (again["trigger"], again["try"], again["retry_of"], again["created_by"]) == ("rerun", 1, None, "otto")
    assert (again["status"], again["id"]) == ("queued", original.id + 1)
    assert (read["trigger"], read["try"], read["status"]) == ("job", 2, "queued")


async def test_rerun_of_a_running_and_of_a_finished_run(client, operator):
    """Any run can be re-run: one still running (both then run) and one that failed."""
    with trio.fail_after(30):
        failed = (await post(client, operator, RUNS, {"command": [PY, "-c", "raise SystemExit(2)"]})).json()["run"]
        await wait_status(client, failed["id"])
        again_failed = await post(client, operator, f"{RUNS}/{failed['id']}/rerun")
        assert again_failed.status_code == 201, again_failed.text
        redone = await wait_status(client, again_failed.json()["run"]["id"])
        running = (await post(client, operator, RUNS, {"command": SLEEP})).json()["run"]
        await wait_status(client, running["id"], {"running"})
        again_running = await post(client, operator, f"{RUNS}/{running['id']}/rerun")
        assert again_running.status_code == 201, again_running.text
        second = await wait_status(client, again_running.json()["run"]["id"], {"running"})
        for run_id in (running["id"], second["id"]):
            await post(client, operator, f"{RUNS}/{run_id}/cancel")
    assert (redone["status"], redone["exit_code"], redone["trigger"]) == ("failed", 2, "rerun")


async def test_rerun_refusals(server, client, operator):
    """Re-running an unknown run is 404; a viewer gets 403."""
    with trio.fail_after(20):
        run = (await post(client, operator, RUNS, {"command": ["true"]})).json()["run"]
        unknown = await post(client, operator, f"{RUNS}/424242/rerun")
        await add_user(server, "vera", "viewer")
        csrf = await login(client, "vera")
        forbidden = await post(client, csrf, f"{RUNS}/{run['id']}/rerun")
    assert_error(unknown, 404, "not_found")
    assert_error(forbidden, 403, "forbidden")


async def test_list_filters_by_job(server, client, operator):
    """GET /runs?job_id=N lists that job's runs only (with their §15 fields, without env)."""
    with trio.fail_after(20):
        mine = await job_run(server, "mine")
        other = await job_run(server, "other")
        plain = (await post(client, operator, RUNS, {"command": ["true"]})).json()["run"]
        listed = (await client.get(RUNS, params={"job_id": mine.job_id})).json()["runs"]
        none = (await client.get(RUNS, params={"job_id": 999})).json()["runs"]
        everything = (await client.get(RUNS)).json()["runs"]
    assert [run["id"] for run in listed] == [mine.id]
    assert listed[0]["job_name"] == "mine" and listed[0]["params"] == {"x": "1"} and "env" not in listed[0]
    assert none == []
    assert {plain["id"], mine.id, other.id} <= {run["id"] for run in everything}


@pytest.mark.parametrize("value", ["x", "1.5", "0", "-3"])
async def test_list_job_id_must_be_a_positive_integer(client, operator, value):
    """A job_id that is not a positive integer is a 400 naming it."""
    with trio.fail_after(10):
        response = await client.get(RUNS, params={"job_id": value})
    assert_error(response, 400, "invalid_request")
    assert "job_id" in response.json()["error"]["message"]


async def rerun_cli(server, *args: str):
    return await trio.run_process(
        [PY, "-m", "runsvc", "rerun", "--server", server.url, "--username", "olga", "--password-stdin", *args],
        stdin=f"{PASSWORD}\n".encode(), capture_stdout=True, capture_stderr=True, check=False, env=child_env(),
    )


async def test_rerun_command(server, client, operator):
    """`runsvc rerun RUN_ID --follow` prints the new run's output and exits with its status; without
    --follow it prints the new id; an unknown run is one line and exit 1."""
    script = "import sys; print('again'); sys.exit(3)"
    with trio.fail_after(60):
        run = (await post(client, operator, RUNS, {"command": [PY, "-c", script]})).json()["run"]
        await wait_status(client, run["id"])
        followed = await rerun_cli(server, "--follow", str(run["id"]))
        printed = await rerun_cli(server, str(run["id"]))
        new_id = int(printed.stdout.decode().strip())
        new_run = await wait_status(client, new_id)
        unknown = await rerun_cli(server, "424242")
    assert followed.stdout.decode().splitlines() == ["again"], followed.stderr
    assert followed.returncode == 3
    assert (printed.returncode, new_run["trigger"], new_run["command"]) == (0, "rerun", [PY, "-c", script])
    assert unknown.returncode == 1
    assert unknown.stderr.decode().strip() == "runsvc: error: POST /api/v1/runs/424242/rerun: 404 no run 424242"
