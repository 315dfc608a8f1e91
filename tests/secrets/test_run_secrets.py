"""Runs and jobs that use secrets (SPEC §17), on the local executor: the refusals, the child's
environment, masking, and a secret deleted before its run starts."""

from __future__ import annotations

import datetime as dt
import sys

import pytest
import trio

from runsvc.http.run_json import run_from_json
from runsvc.retries import next_try_fields
from tests.e2e.agent_helpers import all_events
from tests.helpers import add_user, assert_error, login, wait_status
from tests.secrets import leaky

RUNS = "/api/v1/runs"


@pytest.fixture(name="admin")
async def _admin(server, client):
    """`client` logged in as an admin (CSRF header set on it) with the secrets `db` and `tls`."""
    await add_user(server, "ada", "admin")
    client.headers["X-CSRF-Token"] = await login(client, "ada")
    for name, value in (("db", leaky.VALUE), ("tls", leaky.MULTI)):
        assert (await client.post("/api/v1/secrets", json={"name": name, "value": value})).status_code == 201


async def test_run_refusals(client, admin):
    """`secrets` keys follow the env rules, a key may not be in env too, and an unknown secret is 400
    naming it; nothing is queued."""
    with trio.fail_after(10):
        for body, message in [
            ({"secrets": {"RUNSVC_RUN_ID": "db"}}, "secrets cannot set RUNSVC_RUN_ID"),
            ({"secrets": {"A=B": "db"}}, "secrets key 'A=B' must be non-empty without '=' or NUL"),
            ({"secrets": {"X": "no-such"}}, "secrets.X must be a secret name: a letter or _ then up to 63 of "
                                            "A-Z a-z 0-9 _"),
            ({"secrets": {"X": 1}}, "secrets.X must be a string"),
            ({"secrets": {"X": "db"}, "env": {"X": "1"}}, "secrets.X: X is set in env too; a variable comes "
                                                          "from one of them"),
            ({"secrets": {"X": "db", "Y": "nope"}}, "secrets: no secret named 'nope'"),
        ]:
            answer = await client.post(RUNS, json={"command": ["true"], **body})
            assert_error(answer, 400, "invalid_request", message)
        assert (await client.get(RUNS)).json()["runs"] == []


async def test_local_run_gets_the_values_and_its_output_is_masked(client, admin):
    """The child has the values in its environment; every way it prints them shows `***` (events, log,
    the run object holds only the mapping)."""
    with trio.fail_after(20):
        answer = await client.post(RUNS, json={"command": leaky.COMMAND, "secrets": leaky.SECRETS})
        assert answer.status_code == 201, answer.text
        run = answer.json()["run"]
        assert run["secrets"] == leaky.SECRETS and run["env"] == {}
        done = await wait_status(client, run["id"])
        assert done["status"] == "succeeded", done
        events = await all_events(client, run["id"])
        assert leaky.output_by_stream(events) == leaky.expected_by_stream()
        log = (await client.get(f"{RUNS}/{run['id']}/log")).text
        listed = (await client.get(RUNS)).text
    for text in (str(events), log, listed, str(done)):
        assert leaky.VALUE not in text and "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC" not in text


async def test_a_secret_deleted_before_the_start_fails_the_run_naming_it(client, admin):
    """The value is read when the run starts: gone by then, the run fails with a `system` event that
    names the secret, and the command never runs."""
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)).isoformat()
    with trio.fail_after(20):
        answer = await client.post(RUNS, json={"command": [sys.executable, "-c", "print('ran')"],
                                               "secrets": {"DB": "db"}, "not_before": later})
        run = answer.json()["run"]
        assert (await client.delete("/api/v1/secrets/db")).status_code == 204
        done = await wait_status(client, run["id"])
        events = await all_events(client, run["id"])
    assert done["status"] == "failed" and done["exit_code"] is None
    message = "secret 'db' (for DB) does not exist any more"
    assert [e["data"] for e in events if e["kind"] == "system"] == [message]
    assert events[-1]["data"]["reason"] == message
    assert not [e for e in events if e["kind"] == "stdout"]


async def test_jobs_take_secrets_and_their_runs_carry_them(client, admin):
    """A job's `secrets` are checked like a run's and stored; its runs, re-runs and retries carry the
    mapping, and the child gets the value."""
    with trio.fail_after(20):
        bad = await client.post("/api/v1/jobs", json={"name": "j", "command": ["true"], "secrets": {"A": "nope"}})
        assert_error(bad, 400, "invalid_request", "secrets: no secret named 'nope'")
        job = (await client.post("/api/v1/jobs", json={
            "name": "deploy", "command": leaky.COMMAND, "secrets": leaky.SECRETS,
        })).json()["job"]
        assert job["secrets"] == leaky.SECRETS
        clash = await client.patch(f"/api/v1/jobs/{job['id']}", json={"env": {"TLS_KEY": "x"}})
        assert_error(clash, 400, "invalid_request", "secrets.TLS_KEY: TLS_KEY is set in env too; a variable comes "
                                                    "from one of them")
        unknown = await client.patch(f"/api/v1/jobs/{job['id']}", json={"secrets": {"A": "gone"}})
        assert_error(unknown, 400, "invalid_request", "secrets: no secret named 'gone'")
        run = (await client.post(f"/api/v1/jobs/{job['id']}/runs", json={})).json()["run"]
        assert run["secrets"] == leaky.SECRETS
        done = await wait_status(client, run["id"])
        assert done["status"] == "succeeded"
        assert leaky.output_by_stream(await all_events(client, run["id"])) == leaky.expected_by_stream()
        rerun = (await client.post(f"{RUNS}/{run['id']}/rerun")).json()["run"]
        assert rerun["secrets"] == leaky.SECRETS
        await wait_status(client, rerun["id"])
        full = (await client.get(f"{RUNS}/{run['id']}")).json()["run"]
    # A retry is made from the run as its end is recorded: the same mapping.
    assert next_try_fields(run_from_json(full), not_before=full["created_at"])["secrets"] == leaky.SECRETS
