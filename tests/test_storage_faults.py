"""A running server whose database fails under it (SPEC §14): a write lock held by another connection
past the busy timeout, injected I/O errors, a full disk (a small tmpfs, root only). The run goes on
with every line, requests that need a write answer 503, /healthz says degraded, and everything
resumes by itself."""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import trio

from tests.conftest import make_settings
from tests.helpers import add_user, login, running_server, wait_status

PY = sys.executable
FIRST, SECOND = 100, 2000  # lines before and after the gate opens


def gated_printer(gate: Path) -> list[str]:
    """Prints FIRST lines, waits for `gate` to exist, prints SECOND more, exits 0."""
    code = (
        "import os, sys, time\n"
        f"for i in range({FIRST}): print(f'line {{i}}', flush=True)\n"
        f"while not os.path.exists({str(gate)!r}): time.sleep(0.01)\n"
        f"for i in range({FIRST}, {FIRST + SECOND}): print(f'line {{i}} ' + 'x' * 100, flush=True)\n"
    )
    return [PY, "-c", code]


async def stdout_lines(client: httpx.AsyncClient, run_id: int) -> list[str]:
    lines: list[str] = []
    after = 0
    while True:
        page = (await client.get(f"/api/v1/runs/{run_id}/events", params={"after_seq": after})).json()
        lines += [e["data"] for e in page["events"] if e["kind"] == "stdout"]
        if not page["events"]:
            return lines
        after = page["last_seq"]


async def wait_for_lines(client: httpx.AsyncClient, run_id: int, count: int) -> None:
    while len(await stdout_lines(client, run_id)) < count:
        await trio.sleep(0.02)


async def wait_health(client: httpx.AsyncClient, status: int) -> dict:
    while True:
        answer = await client.get("/healthz")
        if answer.status_code == status:
            return answer.json()
        await trio.sleep(0.02)


def assert_every_line(lines: list[str]) -> None:
    assert len(lines) == FIRST + SECOND
    assert [line.split()[1] for line in lines] == [str(i) for i in range(FIRST + SECOND)]


def assert_no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or "Traceback" in r.getMessage()]
    assert not errors, [r.getMessage() for r in errors]


async def _run_through_a_fault(settings, caplog, make_fault, clear_fault, reason: str) -> None:
    gate = settings.data_dir.parent / "gate"
    with trio.fail_after(60):
        async with running_server(settings) as server, httpx.AsyncClient(base_url=server.url) as client:
            await add_user(server, "olga", "operator")
            csrf = {"X-CSRF-Token": await login(client, "olga")}
            answer = await client.post("/api/v1/runs", json={"command": gated_printer(gate)}, headers=csrf)
            run_id = answer.json()["run"]["id"]
            await wait_for_lines(client, run_id, FIRST)

            make_fault(server)
            gate.touch()
            degraded = await wait_health(client, 503)
            assert degraded["status"] == "degraded" and reason in degraded["reason"], degraded
            refused = await client.post("/api/v1/runs", json={"command": ["true"]}, headers=csrf)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "unavailable"
            assert int(refused.headers["Retry-After"]) > 0
            cancel = await client.post(f"/api/v1/runs/{run_id}/cancel", headers=csrf)
            assert cancel.status_code == 503 and cancel.json()["error"]["code"] == "unavailable"
            assert (await client.get(f"/api/v1/runs/{run_id}")).json()["run"]["status"] == "running"

            clear_fault(server)
            run = await wait_status(client, run_id)
            assert run["status"] == "succeeded", run
            assert_every_line(await stdout_lines(client, run_id))
            assert (await wait_health(client, 200)) == {"status": "ok"}
            later = await client.post("/api/v1/runs", json={"command": ["true"]}, headers=csrf)
            assert later.status_code == 201
            assert (await wait_status(client, later.json()["run"]["id"]))["status"] == "succeeded"
    assert_no_tracebacks(caplog)


async def test_write_lock_held_past_the_busy_timeout(tmp_path: Path, caplog) -> None:
    """Issue 14 #1: another connection holds the write lock much longer than the busy timeout while a run
    prints; with the safety net at 0.2 s the idle claim loop retries too. The server stays up."""
    settings = make_settings(tmp_path, db_busy_timeout_s=0.1, scheduler_safety_net_s=0.2)
    state: dict[str, sqlite3.Connection] = {}

    def hold(server) -> None:
        conn = sqlite3.connect(settings.database_path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        state["conn"] = conn

    def release(server) -> None:
        state["conn"].execute("ROLLBACK")
        state["conn"].close()

    await _run_through_a_fault(settings, caplog, hold, release, "locked")


async def test_injected_io_errors(settings, caplog) -> None:
    """The fault hook: every write attempt fails with an I/O error until cleared (on both backends;
    PostgreSQL really going away: test_pg_outage.py)."""
    await _run_through_a_fault(
        settings, caplog,
        lambda server: server.services.store.inject_write_faults(10**9, "ioerr"),
        lambda server: server.services.store.inject_write_faults(0), "I/O error",
    )


@contextmanager
def small_tmpfs(path: Path, size: str = "8m"):
    path.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {result.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> None:
    """Write `path` until the file system is full."""
    block = b"\0" * 65536
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                os.write(fd, block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(block) == 1:
                    return
                block = block[: len(block) // 2]
    finally:
        os.close(fd)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
async def test_disk_full_then_freed(tmp_path: Path, caplog) -> None:
    """Issue 14 #1 with a real full disk: the data dir on a small tmpfs, filled while a run prints, then
    freed: the run finishes with every line."""
    with small_tmpfs(tmp_path / "mnt") as mount:
        settings = make_settings(tmp_path, data_dir=mount / "data")
        filler = mount / "filler"
        await _run_through_a_fault(
            settings, caplog, lambda server: fill(filler), lambda server: filler.unlink(), "full"
        )
