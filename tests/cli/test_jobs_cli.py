"""`runsvc jobs list|show|run` (SPEC §15) as a subprocess against an in-process server: jobs found by
name, parameters passed as the run's environment, --follow's exit status, and one clear line with a
non-zero exit for an unknown job or a bad parameter."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import trio

from tests.conftest import make_settings
from tests.helpers import PASSWORD, add_user, child_env, login, running_server, wait_status

PY = sys.executable

BACKUP = {
    "name": "Nightly-Backup",
    "description": "Copies the database\nto the backup host.",
    "command": ["sh", "-c", 'echo "target=$PARAM_TARGET level=${PARAM_LEVEL-unset}"; [ "$PARAM_TARGET" != fail ]'],
    "params": [
        {"name": "target", "required": True, "default": "db", "choices": ["db", "files", "fail"]},
        {"name": "level"},
    ],
    "schedule": {"cron": "30 2 * * *", "timezone": "Europe/Paris"},
}


async def cli(server, *args: str, role_user: str = "olga") -> subprocess.CompletedProcess:
    env = child_env(RUNSVC_SERVER=server.url, RUNSVC_USERNAME=role_user, RUNSVC_PASSWORD=PASSWORD)
    return await trio.run_process([PY, "-m", "runsvc", *args], capture_stdout=True, capture_stderr=True,
                                  env=env, check=False, stdin=b"")


async def _with_jobs(server) -> tuple[httpx.AsyncClient, dict[str, str], dict]:
    """olga (operator) logged in through httpx, after creating the backup job and two unscheduled ones
    (one with a required parameter)."""
    await add_user(server, "olga", "operator")
    client = httpx.AsyncClient(base_url=server.url, timeout=30)
    csrf = {"X-CSRF-Token": await login(client, "olga")}
    created = await client.post("/api/v1/jobs", json=BACKUP, headers=csrf)
    assert created.status_code == 201, created.text
    other = await client.post("/api/v1/jobs", json={"name": "adhoc", "command": ["true"]}, headers=csrf)
    assert other.status_code == 201, other.text
    ticket = {"name": "hotfix", "command": ["true"], "params": [{"name": "ticket", "required": True}]}
    other = await client.post("/api/v1/jobs", json=ticket, headers=csrf)
    assert other.status_code == 201, other.text
    return client, csrf, created.json()["job"]


async def test_jobs_list_and_show_find_jobs_by_name(tmp_path):
    """`jobs list` prints one row per job by name with its cron, next fire and last run; `jobs show`
    finds a job by its name in any case and prints it as JSON."""
    with trio.fail_after(60):
        async with running_server(make_settings(tmp_path)) as server:
            client, _, job = await _with_jobs(server)
            listed = await cli(server, "jobs", "list")
            shown = await cli(server, "jobs", "show", "nightly-backup")
            await client.aclose()
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.decode().splitlines()
    assert lines[0].split() == ["NAME", "SCHEDULE", "NEXT", "FIRE", "LAST", "RUN", "DESCRIPTION"]
    assert [line.split()[0] for line in lines[1:]] == ["adhoc", "hotfix", "Nightly-Backup"]  # ignoring case
    backup = lines[3]
    assert "30 2 * * * (Europe/Paris)" in backup and job["next_fires"][0] in backup
    assert "Copies the database to the backup host." in backup  # one line whatever the text holds
    assert lines[1].split()[1:] == ["-", "-", "-"]  # no schedule, never run, no description
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == job | {"last_run": None}


async def test_jobs_run_passes_params_and_follows_to_the_exit_status(tmp_path):
    """`jobs run NAME --param k=v` starts a run of the job with the parameter in its environment and
    prints its id; with --follow it prints the output and exits with the run's status."""
    with trio.fail_after(90):
        async with running_server(make_settings(tmp_path)) as server:
            client, _, job = await _with_jobs(server)
            started = await cli(server, "jobs", "run", "Nightly-Backup")
            followed = await cli(server, "jobs", "run", "nightly-backup", "--param", "target=fail",
                                 "--param", "level=3", "--follow")
            run_id = int(started.stdout.decode())
            run = await wait_status(client, run_id)
            await client.aclose()
    assert started.returncode == 0, started.stderr
    assert (run["job_id"], run["trigger"], run["params"]) == (job["id"], "job", {"target": "db"})  # the default
    assert followed.stdout.decode() == "target=fail level=3\n"
    assert followed.returncode == 1, followed.stderr  # the run failed with exit code 1
    assert b"of job Nightly-Backup started" in followed.stderr


async def test_jobs_run_passes_not_before(tmp_path):
    """`--not-before` reaches the run; a time without a UTC offset is refused with the server's reason."""
    with trio.fail_after(60):
        async with running_server(make_settings(tmp_path)) as server:
            client, _, _ = await _with_jobs(server)
            later = await cli(server, "jobs", "run", "adhoc", "--not-before", "2999-01-01T00:00:00Z")
            naive = await cli(server, "jobs", "run", "adhoc", "--not-before", "2999-01-01T00:00:00")
            run = (await client.get(f"/api/v1/runs/{int(later.stdout)}")).json()["run"]
            await client.aclose()
    assert later.returncode == 0, later.stderr
    assert run["not_before"] == "2999-01-01T00:00:00.000000Z"
    assert naive.returncode == 1 and b"not_before" in naive.stderr and b"Traceback" not in naive.stderr


async def test_jobs_errors_are_one_line_and_a_non_zero_exit(tmp_path):
    """An unknown job, a parameter outside its choices, an unknown parameter, a missing required one
    and a malformed --param each give one line naming the problem and a non-zero exit, and start
    nothing."""
    with trio.fail_after(60):
        async with running_server(make_settings(tmp_path)) as server:
            client, _, _ = await _with_jobs(server)
            unknown_job = await cli(server, "jobs", "run", "no-such-job")
            unknown_show = await cli(server, "jobs", "show", "no-such-job")
            bad_choice = await cli(server, "jobs", "run", "Nightly-Backup", "--param", "target=everything")
            unknown_param = await cli(server, "jobs", "run", "Nightly-Backup", "--param", "target=db",
                                      "--param", "colour=red")
            missing = await cli(server, "jobs", "run", "hotfix")
            malformed = await cli(server, "jobs", "run", "Nightly-Backup", "--param", "target")
            runs = (await client.get("/api/v1/runs")).json()["runs"]
            await client.aclose()
    for result in (unknown_job, unknown_show):
        assert result.returncode == 1
        assert result.stderr.decode() == "runsvc: error: no job named 'no-such-job' (`runsvc jobs list` lists them)\n"
    for result, named in ((bad_choice, b"target"), (unknown_param, b"colour"), (missing, b"ticket")):
        assert result.returncode == 1, result.stderr
        lines = result.stderr.decode().splitlines()
        assert len(lines) == 1 and b" 400 " in result.stderr and named in result.stderr, result.stderr
    assert malformed.returncode == 2 and b"--param takes NAME=VALUE, got 'target'" in malformed.stderr
    assert runs == []
