"""`python -m runsvc serve` as an operator meets it on a bad day (SPEC §14): a second server on the
same data dir, startup failures, a second signal with runs still running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import trio

from runsvc.config import Settings, server_id
from tests.helpers import admin_login, alive, child_env, daemon_command, start_server, wait_status

PY = sys.executable


async def running_sleeper(client: httpx.AsyncClient, csrf: dict[str, str]) -> tuple[int, int]:
    """A run whose process prints its pid and sleeps; (run id, pid) once it printed."""
    code = "import os, time; print(os.getpid(), flush=True); time.sleep(120)"
    run = (await client.post("/api/v1/runs", json={"command": [PY, "-c", code]}, headers=csrf)).json()["run"]
    while True:
        events = (await client.get(f"/api/v1/runs/{run['id']}/events")).json()["events"]
        stdout = [e["data"] for e in events if e["kind"] == "stdout"]
        if stdout:
            return run["id"], int(stdout[0])
        await trio.sleep(0.05)


def serve_once(data: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PY, "-m", "runsvc", "serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", str(data), *args],
        capture_output=True, text=True, timeout=30, env=env or child_env(), stdin=subprocess.DEVNULL,
    )


async def test_second_server_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    """Issue 14 #2: the second `serve` exits 1 with one line naming the lock, and touches nothing: the
    first server's run keeps running and is not marked interrupted."""
    data = tmp_path / "data"
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, data)
            async with admin_login(server.url) as (client, csrf):
                run_id, pid = await running_sleeper(client, csrf)
                second = await trio.to_thread.run_sync(serve_once, data)
                assert second.returncode == 1
                lines = second.stderr.strip().splitlines()
                assert len(lines) == 1, second.stderr
                assert "runsvc.lock" in lines[0] and "in use by another runsvc server" in lines[0]
                assert alive(pid)
                run = (await client.get(f"/api/v1/runs/{run_id}")).json()["run"]
                assert run["status"] == "running"
                await client.post(f"/api/v1/runs/{run_id}/cancel", headers=csrf)
                await wait_status(client, run_id)
            server.send_signal(signal.SIGTERM)
            assert await server.wait() == 0


def test_corrupt_database_is_one_line(tmp_path: Path) -> None:
    """Issue 14 #8: a corrupt database: one line on stderr, non-zero exit, no traceback."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "runsvc.db").write_bytes(b"this is not a database at all" * 1000)
    result = serve_once(data)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "runsvc.db" in lines[0]


def test_bad_work_dir_is_one_line(tmp_path: Path) -> None:
    """A work dir inside the data dir is refused at start, in one line."""
    data = tmp_path / "data"
    result = serve_once(data, "--work-dir", str(data / "work"))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "must not be inside the data dir" in lines[0], result.stderr


async def test_second_signal_kills_running_runs(tmp_path: Path) -> None:
    """Issue 10 #4: SIGTERM starts a long drain; a second SIGTERM exits at once (143) and takes the
    run's process with it; the next start records the run interrupted."""
    data = tmp_path / "data"
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, data, "--drain-s", "600")
            async with admin_login(server.url) as (client, csrf):
                run_id, pid = await running_sleeper(client, csrf)
            server.send_signal(signal.SIGTERM)
            while not any("draining running runs" in line for line in server.stderr_lines):
                await trio.sleep(0.05)
            server.send_signal(signal.SIGTERM)
            assert await server.wait() == 128 + signal.SIGTERM
            while alive(pid):  # SIGKILLed before the exit; gone once its zombie is reaped by init
                await trio.sleep(0.05)

            again = await start_server(nursery, data)
            async with admin_login(again.url) as (client, _):
                assert (await wait_status(client, run_id))["status"] == "interrupted"
            again.send_signal(signal.SIGTERM)
            assert await again.wait() == 0


def escaped_of(data: Path, run_id: int) -> list[int]:
    """Pids whose environment carries RUNSVC_RUN_ID=<run_id> and the server id of `data` (other tests'
    servers have runs with the same ids)."""
    tags = {f"RUNSVC_RUN_ID={run_id}".encode(), f"RUNSVC_SERVER_ID={server_id(Settings(data_dir=data))}".encode()}
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if tags <= set(f.read().split(b"\0")) and alive(int(name)):
                    found.append(int(name))
        except OSError:
            continue
    return found


async def test_recovery_kills_escaped_processes_after_kill_9(tmp_path: Path) -> None:
    """Issue 14 #6 at startup: after kill -9 of the server, the next start kills the run's process and
    the daemon that left its group and directory, found by their environment."""
    data = tmp_path / "data"
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, data)
            async with admin_login(server.url) as (client, csrf):
                command = daemon_command(tmp_path / "daemon.pid", run_stays=True)
                answer = await client.post("/api/v1/runs", json={"command": command}, headers=csrf)
                run_id = answer.json()["run"]["id"]
                while not [e for e in (await client.get(f"/api/v1/runs/{run_id}/events")).json()["events"]
                           if e["kind"] == "stdout"]:
                    await trio.sleep(0.05)
            leftovers = escaped_of(data, run_id)
            assert len(leftovers) == 2  # the run's process and the daemon
            server.send_signal(signal.SIGKILL)
            await server.wait()
            assert all(alive(pid) for pid in leftovers)

            again = await start_server(nursery, data)
            async with admin_login(again.url) as (client, _):
                assert (await wait_status(client, run_id))["status"] == "interrupted"
            while any(alive(pid) for pid in leftovers):
                await trio.sleep(0.05)
            again.send_signal(signal.SIGTERM)
            assert await again.wait() == 0


async def test_idle_server_outlives_a_lock_held_by_another_process(tmp_path: Path) -> None:
    """Issue 14 #1 as reported: an idle server (safety net 0.5 s) while another process holds the write
    lock past the busy timeout. It used to die with a traceback; now /healthz goes degraded, then back
    to ok once the lock is gone, and the log has two warnings and no traceback."""
    data = tmp_path / "data"
    holder_code = (
        "import sqlite3, sys\n"
        "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "conn.execute('BEGIN IMMEDIATE')\n"
        "print('locked', flush=True)\n"
        "sys.stdin.readline()\n"
        "conn.execute('ROLLBACK')\n"
    )
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, data, "--scheduler-safety-net-s", "0.5",
                                        "--db-busy-timeout-s", "0.2")
            holder = await trio.lowlevel.open_process(
                [PY, "-c", holder_code, str(data / "runsvc.db")], stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
            try:
                assert holder.stdout is not None and holder.stdin is not None
                said = b""
                while not said.endswith(b"\n"):
                    said += await holder.stdout.receive_some()
                assert said == b"locked\n"
                async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
                    while (health := await client.get("/healthz")).status_code != 503:
                        await trio.sleep(0.05)
                    assert health.json()["status"] == "degraded" and "locked" in health.json()["reason"]
                    await trio.sleep(2)  # several claim attempts and busy timeouts while locked
                    assert server.process.returncode is None
                    await holder.stdin.send_all(b"\n")
                    assert await holder.wait() == 0
                    while (await client.get("/healthz")).status_code != 200:
                        await trio.sleep(0.05)
            finally:
                if holder.returncode is None:
                    holder.kill()
                    await holder.wait()
                for stream in (holder.stdin, holder.stdout):
                    if stream is not None:
                        await stream.aclose()
            server.send_signal(signal.SIGTERM)
            assert await server.wait() == 0
    log = server.log_text()
    assert "Traceback" not in log and "level=error" not in log
    assert "database writes failing" in log and "database writable again" in log
