"""The CLI against a real `python -m runsvc serve`: API tokens, logging out after a password login."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import trio

from tests.helpers import ADMIN_PASSWORD, admin_login, child_env, server_db_rows, start_server

# Every test here runs on SQLite and on PostgreSQL (tests/e2e/conftest.py: server_backend).
pytestmark = pytest.mark.usefixtures("server_backend")

PY = sys.executable


async def create_token(url: str, **body) -> str:
    async with admin_login(url) as (client, csrf):
        created = await client.post("/api/v1/tokens", json={"name": "ci", **body}, headers=csrf)
        assert created.status_code == 201, created.text
        await client.post("/api/v1/auth/logout", headers=csrf)
        return created.json()["secret"]


async def cli(*args: str, env: dict[str, str], stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return await trio.run_process(
        [PY, "-m", "runsvc", *args], capture_stdout=True, capture_stderr=True, env=env, check=False,
        stdin=stdin if stdin is not None else b"",
    )


def session_count(data_dir) -> int:
    return server_db_rows(data_dir, "SELECT count(*) FROM sessions")[0][0]


async def test_cli_submits_and_follows_with_runsvc_token(tmp_path):
    """`submit --follow` with only RUNSVC_TOKEN set; `follow` with --token-stdin; a bad token is one
    line and exit 1."""
    data = tmp_path / "data"
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, data)
            secret = await create_token(server.url, role="operator")
            env = child_env(RUNSVC_TOKEN=secret, RUNSVC_SERVER=server.url)
            submitted = await cli("submit", "--follow", "--", PY, "-c", "print('hello from ci')", env=env)
            run_id = await cli("submit", "--", PY, "-c", "raise SystemExit(4)", env=env)
            followed = await cli("follow", run_id.stdout.decode().strip(), "--token-stdin",
                                 env=child_env(RUNSVC_SERVER=server.url), stdin=secret.encode() + b"\n")
            bad = await cli("submit", "--", "true", env=child_env(RUNSVC_TOKEN="rsv_bad", RUNSVC_SERVER=server.url))
            server.send_signal()
            await server.wait()
    assert submitted.returncode == 0, submitted.stderr
    assert submitted.stdout.decode() == "hello from ci\n"
    assert followed.returncode == 4, followed.stderr
    assert bad.returncode == 1 and b"401" in bad.stderr and b"Traceback" not in bad.stderr
    assert session_count(data) == 0  # no CLI call logged in with a password
    assert secret not in server.log_text() and secret.removeprefix("rsv_") not in server.log_text()


async def test_password_login_is_logged_out_afterwards(tmp_path):
    """A CLI call that logs in with a password leaves no session behind."""
    data = tmp_path / "data"
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, data)
            env = child_env(RUNSVC_USERNAME="admin", RUNSVC_PASSWORD=ADMIN_PASSWORD,
                            RUNSVC_SERVER=server.url)
            done = await cli("submit", "--follow", "--", PY, "-c", "print(1)", env=env)
            server.send_signal()
            await server.wait()
    assert done.returncode == 0, done.stderr
    assert session_count(data) == 0


async def test_runs_list_show_cancel_and_log(tmp_path):
    """`runs list`, `runs show`, `cancel` and `log` against a real server, with a token."""
    data = tmp_path / "data"
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, data)
            env = child_env(RUNSVC_TOKEN=await create_token(server.url), RUNSVC_SERVER=server.url)
            # The pauses order the lines across the two pipes: without them, which pipe the server
            # reads first (and so the seq order) depends on scheduling.
            script = ("import sys, time; print('out 1', flush=True); time.sleep(0.3); "
                      "print('err 1', file=sys.stderr, flush=True); time.sleep(0.3); print('out 2')")
            printed = await cli("submit", "--follow", "--name", "hello", "--", PY, "-c", script, env=env)
            sleeper = (await cli("submit", "--", PY, "-c", "import time; time.sleep(60)", env=env)).stdout
            sleeper_id = sleeper.decode().strip()
            listed = await cli("runs", "list", env=env)
            only_done = await cli("runs", "list", "--status", "succeeded", "--limit", "5", env=env)
            shown = await cli("runs", "show", "1", env=env)
            cancelled = await cli("cancel", sleeper_id, env=env)
            again = await cli("cancel", "1", env=env)
            log = await cli("log", "1", env=env)
            missing = await cli("log", "999", env=env)
            bad_limit = await cli("runs", "list", "--limit", "0", env=env)
            server.send_signal()
            await server.wait()
    assert printed.returncode == 0, printed.stderr
    rows = [line.split() for line in listed.stdout.decode().splitlines()]
    assert rows[0] == ["ID", "STATUS", "EXIT", "NAME", "BY", "CREATED"]
    assert [row[0] for row in rows[1:]] == [sleeper_id, "1"]
    assert rows[2][:4] == ["1", "succeeded", "0", "hello"]
    assert [line.split()[0] for line in only_done.stdout.decode().splitlines()[1:]] == ["1"]
    run = json.loads(shown.stdout)
    assert (run["id"], run["name"], run["status"]) == (1, "hello", "succeeded")
    assert cancelled.returncode == 0 and cancelled.stdout.decode().startswith(f"run {sleeper_id}: ")
    assert again.returncode == 1 and b"409" in again.stderr
    assert log.returncode == 0 and log.stdout.decode() == "out 1\nerr 1\nout 2\n"
    assert missing.returncode == 1 and b"404" in missing.stderr and b"Traceback" not in missing.stderr
    assert bad_limit.returncode == 2
