"""Retention is atomic for readers (SPEC §14, issue 14 #7): once it is about to delete a run's events,
a watcher in the middle of catching up gets RunGone (4404) instead of a gap, a /log in progress breaks
off instead of ending early with 200, and new reads are 404."""

from __future__ import annotations

import json
import sqlite3
from contextlib import aclosing

import httpx
import pytest
import trio

from runsvc.maintenance import prune_expired
from runsvc.model import RunGone
from tests.conftest import make_settings
from tests.helpers import add_user, login, running_server
from tests.http.test_live import open_ws, read_all

EVENTS = 12_000  # more than a catch-up page (2,000) and a log page (5,000)
CUTOFF = "2021-01-01T00:00:00.000000Z"


def insert_old_run(conn: sqlite3.Connection) -> int:
    run_id = conn.execute(
        "INSERT INTO runs (command, env, timeout_s, status, created_at, ended_at, last_seq) "
        "VALUES ('[\"true\"]', '{}', 60, 'succeeded', '2020-01-01T00:00:00.000000Z', "
        "'2020-01-01T00:00:01.000000Z', ?) RETURNING id", (EVENTS,),
    ).fetchone()[0]
    rows = [(run_id, seq, "2020-01-01T00:00:00.000000Z", "stdout", f"line {seq}") for seq in range(1, EVENTS)]
    rows.append((run_id, EVENTS, "2020-01-01T00:00:01.000000Z", "state",
                 '{"status": "succeeded", "exit_code": 0}'))
    conn.executemany("INSERT INTO run_events (run_id, seq, ts, kind, data) VALUES (?, ?, ?, ?, ?)", rows)
    return run_id


@pytest.fixture(name="old_run")
async def _old_run(tmp_path):
    # The server's own pruner is off; the tests run retention passes themselves, at chosen moments.
    settings = make_settings(tmp_path, retention_days=0)
    async with running_server(settings) as server:
        run_id = await server.services.store.write(insert_old_run)
        yield server, run_id


async def prune(server, budget: int = 3000) -> None:
    runs = server.services.runs
    await prune_expired(server.services.store, CUTOFF, batch_events=budget, on_fence=runs.fence,
                        on_runs_deleted=runs.runs_deleted)


async def test_watcher_catching_up_sees_no_gap(old_run):
    server, run_id = old_run
    runs = server.services.runs
    with trio.fail_after(20):
        async with aclosing(runs.watch(run_id, 0)) as batches:
            first = await batches.__anext__()
            assert (first.first_seq, first.last_seq) == (1, 2000)
            await prune(server)
            with pytest.raises(RunGone):
                await batches.__anext__()


async def test_log_in_progress_breaks_off(old_run):
    server, run_id = old_run
    runs = server.services.runs
    with trio.fail_after(20):
        async with aclosing(runs.log_lines(run_id, EVENTS)) as chunks:
            first = await chunks.__anext__()
            assert first.startswith("line 1\n") and first.count("\n") == 5000
            await prune(server)
            with pytest.raises(RunGone):
                await chunks.__anext__()


async def test_fenced_run_is_404_and_its_watchers_close_4404(old_run):
    server, run_id = old_run
    await add_user(server, "vera", "viewer")
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            await login(client, "vera")
            cookie = client.cookies["runsvc_session"]
            async with open_ws(server, f"/api/v1/runs/{run_id}/events/ws", cookie=cookie) as ws:
                first = json.loads(await ws.get_message())  # catching up: the first page is out
                server.services.runs.fence([run_id])  # what retention does before deleting anything
                seqs, end, code = await read_all(ws)
            assert code == 4404 and end is None
            seqs = [event["seq"] for event in first["events"]] + seqs
            assert seqs == list(range(1, len(seqs) + 1))  # whatever came before the close has no gap
            for path in (f"/api/v1/runs/{run_id}", f"/api/v1/runs/{run_id}/log", f"/api/v1/runs/{run_id}/events"):
                assert (await client.get(path)).status_code == 404, path
            await prune(server)
            assert (await client.get(f"/api/v1/runs/{run_id}")).status_code == 404
