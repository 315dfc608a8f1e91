"""Runs end to end: `python -m runsvc serve` as a subprocess, driven over HTTP and by the CLI."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
import trio

from tests.helpers import (
    ADMIN_PASSWORD,
    SERVER_DATABASE,
    admin_login,
    alive,
    child_env,
    server_db_rows,
    start_server,
    wait_status,
    wait_until,
)

# Every test here runs on SQLite and on PostgreSQL (tests/e2e/conftest.py: server_backend).
pytestmark = pytest.mark.usefixtures("server_backend")

PY = sys.executable


def db_rows(data_dir, sql):
    return server_db_rows(data_dir, sql)


async def test_crash_recovery_after_kill_9(tmp_path):
    """After kill -9, a run left running becomes interrupted with a system event, its process is
    killed, its workdir is removed, and a run that was queued runs."""
    data = tmp_path / "data"
    work = tmp_path / "work"  # the runs' directories: <work>/<server id>/<run id>
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, data, "--max-concurrent-runs", "1", "--work-dir", str(work))
            async with admin_login(server.url) as (client, csrf):
                sleeper = "import os, time; print(os.getpid(), flush=True); time.sleep(60)"
                busy = (await client.post("/api/v1/runs", json={"command": [PY, "-c", sleeper]},
                                          headers=csrf)).json()["run"]
                waiting = (await client.post("/api/v1/runs", json={"command": [PY, "-c", "print('late')"]},
                                             headers=csrf)).json()["run"]
                await wait_status(client, busy["id"], {"running"})
                while not (events := (await client.get(f"/api/v1/runs/{busy['id']}/events")).json()["events"]) \
                        or events[-1]["kind"] != "stdout":
                    await trio.sleep(0.05)
                child_pid = int(events[-1]["data"])
            [run_dir] = work.glob(f"*/{busy['id']}")
            assert run_dir.is_dir()
            server.send_signal(signal.SIGKILL)
            await server.wait()

            server = await start_server(nursery, data, "--max-concurrent-runs", "1", "--work-dir", str(work))
            async with admin_login(server.url) as (client, csrf):
                crashed = await wait_status(client, busy["id"], {"interrupted"})
                later = await wait_status(client, waiting["id"], {"succeeded", "failed"})
                events = (await client.get(f"/api/v1/runs/{busy['id']}/events")).json()
            assert not run_dir.exists()
            assert not alive(child_pid)
            server.send_signal(signal.SIGTERM)
            assert await server.wait() == 0
    assert crashed["status"] == "interrupted"
    assert any(e["kind"] == "system" and "interrupted" in e["data"] for e in events["events"])
    assert events["events"][-1]["data"]["status"] == "interrupted" and events["complete"]
    assert later["status"] == "succeeded"


async def test_graceful_shutdown_leaves_nothing_running(tmp_path):
    """SIGTERM with a run producing output: exit 0 within drain + grace + a few seconds, the run
    interrupted, nothing left running, the database intact."""
    data = tmp_path / "data"
    chatty = "import time\nwhile True:\n    print('x' * 100, flush=True)\n    time.sleep(0.001)"
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, data, "--drain-s", "1", "--kill-grace-s", "1")
            async with admin_login(server.url) as (client, csrf):
                answer = await client.post("/api/v1/runs", json={"command": [PY, "-c", chatty]}, headers=csrf)
                run = answer.json()["run"]
                while (await client.get(f"/api/v1/runs/{run['id']}")).json()["run"]["last_seq"] <= 20:
                    await trio.sleep(0.05)  # until it has printed: a run producing output is what is drained
            start = trio.current_time()
            server.send_signal(signal.SIGTERM)
            assert await server.wait() == 0, server.log_text()
            took = trio.current_time() - start
    assert took < 1 + 1 + 5
    assert db_rows(data, "SELECT status FROM runs") == [("interrupted",)]
    if not SERVER_DATABASE["url"]:  # the SQLite file the killed server wrote
        assert db_rows(data, "PRAGMA integrity_check") == [("ok",)]
    seqs = [r[0] for r in db_rows(data, f"SELECT seq FROM run_events WHERE run_id = {run['id']} ORDER BY seq")]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) > 10


async def test_second_signal_exits_at_once(tmp_path):
    """A second SIGTERM during the drain exits immediately with a non-zero status."""
    data = tmp_path / "data"
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, data, "--drain-s", "60")
            async with admin_login(server.url) as (client, csrf):
                run = (await client.post("/api/v1/runs", json={"command": [PY, "-c", "import time; time.sleep(30)"]},
                                         headers=csrf)).json()["run"]
                await wait_status(client, run["id"], {"running"})
            server.send_signal(signal.SIGTERM)
            # Trio merges a signal still pending with the next one of its kind: the second goes once the
            # first was received.
            await wait_until(lambda: "shutting down gracefully" in server.log_text())
            server.send_signal(signal.SIGTERM)
            with trio.fail_after(5):
                code = await server.wait()
    assert code != 0


async def test_submit_follow_survives_server_restart(tmp_path):
    """`submit --follow` prints every line once, in order, across a server restart, and exits with
    the run's exit code."""
    data = tmp_path / "data"
    script = "import time, sys\nfor i in range(8):\n    print(i, flush=True)\n    time.sleep(0.4)\nsys.exit(3)"
    env = child_env(RUNSVC_USERNAME="admin", RUNSVC_PASSWORD=ADMIN_PASSWORD)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, data, "--drain-s", "10")  # port 0: read from its log
            port = server.url.rsplit(":", 1)[1]  # the restarted server must come back where the CLI is
            cli = await trio.lowlevel.open_process(
                [PY, "-m", "runsvc", "submit", "--server", server.url, "--follow", "--", PY, "-c", script],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env,
            )
            out = b""
            while b"2\n" not in out:
                out += await cli.stdout.receive_some(1024)
            # Restart: the drain lets the run finish while the follower is disconnected (1001).
            server.send_signal(signal.SIGTERM)
            assert await server.wait() == 0
            server = await start_server(nursery, data, "--port", port)
            while chunk := await cli.stdout.receive_some(1024):
                out += chunk
            code = await cli.wait()
            err = await cli.stderr.receive_some(65536)
            server.send_signal(signal.SIGTERM)
            await server.wait()
    assert out.decode().split() == [str(i) for i in range(8)]
    assert code == 3, err


def test_submit_prints_run_id_and_refuses_bad_input(tmp_path):
    """`submit` without --follow prints the run id; a missing command or password is one clear line."""

    async def main():
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, tmp_path / "data")
            env = child_env(RUNSVC_USERNAME="admin", RUNSVC_PASSWORD=ADMIN_PASSWORD)
            ok = await trio.run_process([PY, "-m", "runsvc", "submit", "--server", server.url, "--", "true"],
                                        capture_stdout=True, capture_stderr=True, env=env)
            empty = await trio.run_process([PY, "-m", "runsvc", "submit", "--server", server.url],
                                           capture_stdout=True, capture_stderr=True, env=env, check=False)
            nopass = await trio.run_process(
                [PY, "-m", "runsvc", "submit", "--server", server.url, "--username", "admin", "--", "true"],
                capture_stdout=True, capture_stderr=True, env=child_env(), check=False, stdin=subprocess.DEVNULL)
            wrong = await trio.run_process(
                [PY, "-m", "runsvc", "follow", "--server", server.url, "999"],
                capture_stdout=True, capture_stderr=True, env=env, check=False)
            server.send_signal(signal.SIGTERM)
            await server.wait()
        return ok, empty, nopass, wrong

    ok, empty, nopass, wrong = trio.run(main)
    assert ok.stdout.decode().strip().isdigit()
    assert empty.returncode == 2 and b"no command given" in empty.stderr
    assert nopass.returncode == 1 and b"no password" in nopass.stderr
    assert wrong.returncode == 1 and b"no run 999" in wrong.stderr and b"Traceback" not in wrong.stderr
