"""`python -m runsvc db copy-to URL` as a real subprocess: a data dir filled by a real server on SQLite,
copied into a fresh PostgreSQL database, then served from there by a real server."""

from __future__ import annotations

import functools
import re
import shlex
import shutil
import sqlite3
import sys
from pathlib import Path

import httpx
import psycopg
import pytest
import trio

from runsvc.store.copy import TABLES
from runsvc.store.migrations import schema_sql
from runsvc.store.pg_admin import display_url
from tests.conftest import make_settings
from tests.helpers import PASSWORD, add_user, child_env, login, running_server, wait_status
from tests.maintenance_rows import add_run, ts

PY = sys.executable
# Each table's key, for reading both sides in the same order.
KEYS = {"login_throttle": "username, client", "job_fires": "job_id, scheduled_for", "run_events": "run_id, seq",
        "secrets": "name"}
SECRET_BYTES = bytes(range(256)) * 2  # every byte value, NUL and 0xff included: BYTEA must keep them all


async def runsvc(*args: str) -> trio.CompletedProcess:
    with trio.fail_after(60):
        return await trio.run_process(
            [sys.executable, "-m", "runsvc", *args], capture_stdout=True, capture_stderr=True, check=False,
            env=child_env(),
        )


def assert_one_line(result: trio.CompletedProcess, status: int, text: str) -> None:
    err = result.stderr.decode()
    assert result.returncode == status, (result.stdout, err)
    assert err.startswith("runsvc: error: ") and err.count("\n") == 1, err
    assert text in err, err
    assert result.stdout == b""


@functools.cache
def columns(table: str) -> str:
    """The table's columns in schema.sql's order, for a SELECT that reads both sides alike."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(schema_sql())
        return ", ".join(f'"{row[1]}"' for row in conn.execute(f"PRAGMA table_info({table})"))
    finally:
        conn.close()


def rows(conn, table: str) -> list[tuple]:
    """Every row of `table` in key order (the same SQL on both sides)."""
    query = f"SELECT {columns(table)} FROM {table} ORDER BY {KEYS.get(table, 'id')}"
    return [tuple(row) for row in conn.execute(query)]


def sqlite_rows(path: Path) -> dict[str, list[tuple]]:
    conn = sqlite3.connect(path)
    try:
        return {table: rows(conn, table) for table in TABLES}
    finally:
        conn.close()


def pg_rows(url: str) -> dict[str, list[tuple]]:
    with psycopg.connect(url) as conn:
        return {table: rows(conn, table) for table in TABLES}


def pg_tables(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")]


async def fill_with_a_server(tmp_path: Path) -> dict:
    """A SQLite data dir written by a real server: users, a session, an API token, an enrollment token,
    an agent, a job and its run, runs with output, a throttled login; then the tables no API of this
    branch writes yet (job fires, secrets, webhooks and their deliveries) by SQL, and a newest run
    deleted (its id must never come back). Returns what a client saw, to compare with later."""
    settings = make_settings(tmp_path)
    seen: dict = {}
    async with running_server(settings) as server, httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        await add_user(server, "alice", "admin")
        await add_user(server, "bob", "viewer")
        headers = {"X-CSRF-Token": await login(client, "alice")}
        seen["cookies"] = dict(client.cookies)
        seen["token"] = (await client.post("/api/v1/tokens", json={"name": "ci"}, headers=headers)).json()["secret"]
        enrollment = (await client.post("/api/v1/enrollment-tokens", json={"labels": ["gpu"]},
                                        headers=headers)).json()["token"]
        await server.services.agents.enroll(token=enrollment, name="builder", labels=["gpu"])
        await client.post("/api/v1/enrollment-tokens", json={"labels": []}, headers=headers)  # one left unused
        job = (await client.post("/api/v1/jobs", headers=headers, json={
            "name": "nightly", "command": [PY, "-c", "print('from the job')"]})).json()["job"]
        started = await client.post(f"/api/v1/jobs/{job['id']}/runs", json={}, headers=headers)
        assert started.status_code in (200, 201), started.text
        for text in ("hello", "wörld ✓", "x" * 3000):
            submitted = await client.post("/api/v1/runs", headers=headers, json={
                "command": [PY, "-c", f"import sys; print({text!r}); print('err', file=sys.stderr)"],
                "env": {"GREETING": text[:10]}})
            assert submitted.status_code == 201, submitted.text
        for run in (await client.get("/api/v1/runs")).json()["runs"]:
            await wait_status(client, run["id"])
        failed = await client.post("/api/v1/auth/login", json={"username": "bob", "password": "wrong-password"})
        assert failed.status_code == 401
        seen["runs"] = (await client.get("/api/v1/runs")).json()["runs"]
        seen["logs"] = {run["id"]: (await client.get(f"/api/v1/runs/{run['id']}/log")).text for run in seen["runs"]}
        seen["job_id"] = job["id"]
    conn = sqlite3.connect(settings.database_path, isolation_level=None)
    try:
        now = ts()
        conn.execute("INSERT INTO job_fires (job_id, scheduled_for, outcome, run_id, recorded_at) "
                     "VALUES (?, ?, 'started', ?, ?)", (job["id"], now, seen["runs"][-1]["id"], now))
        conn.execute("INSERT INTO secrets (name, value, created_at, updated_at, updated_by) VALUES (?, ?, ?, ?, ?)",
                     ("DEPLOY_KEY", SECRET_BYTES, now, now, "alice"))
        webhook = conn.execute(
            "INSERT INTO webhooks (url, job, statuses, secret, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?)",
            ("http://127.0.0.1:9/hook", "nightly", '["failed"]', SECRET_BYTES[::-1], now, "alice")).lastrowid
        conn.execute("INSERT INTO webhook_deliveries (webhook_id, event, run_id, body, attempts, last_status_code, "
                     "last_error, next_try_at, created_at) VALUES (?, 'run.finished', ?, '{}', 2, 500, 'boom', ?, ?)",
                     (webhook, seen["runs"][0]["id"], now, now))
        deleted = add_run(conn, "succeeded", created_at=now, ended_at=now, events=2)
        conn.execute("DELETE FROM run_events WHERE run_id = ?", (deleted,))
        conn.execute("DELETE FROM runs WHERE id = ?", (deleted,))
        seen["deleted_run"] = deleted
        seen["max_user"] = conn.execute("SELECT max(id) FROM users").fetchone()[0]
        empty = [table for table in TABLES if not conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]]
        assert empty == [], f"tables without a row: {empty}"
    finally:
        conn.close()
    return seen


@pytest.mark.slow
async def test_copy_to_moves_every_row_and_a_server_on_postgresql_carries_on(tmp_path, pg_url):
    """Every row of every table arrives exactly (BYTEA hashes and secrets byte for byte); a server on the
    PostgreSQL database then logs the old users in, honours old sessions and tokens, serves the same
    runs and logs, and gives new runs and users ids after every id SQLite ever gave out."""
    with trio.fail_after(120):
        seen = await fill_with_a_server(tmp_path)
        data_dir = tmp_path / "data"
        before = sqlite_rows(data_dir / "runsvc.db")

        result = await runsvc("db", "copy-to", pg_url, "--data-dir", str(data_dir))
        out = result.stdout.decode()
        assert result.returncode == 0, result.stderr
        lines = out.splitlines()
        assert lines[0].split() == ["TABLE", "SQLITE", "POSTGRESQL"]
        assert [line.split() for line in lines[1:14]] == [
            [table, str(len(before[table])), str(len(before[table]))] for table in TABLES
        ]
        total = sum(len(table) for table in before.values())
        assert lines[14].startswith(f"copied {total} rows from {data_dir / 'runsvc.db'} to {display_url(pg_url)};"), out
        assert result.stderr == b""  # no progress bar where stderr is not a terminal
        assert await trio.to_thread.run_sync(pg_rows, pg_url) == before

        # The copy's sealed values open only under the SQLite server's key: the new server is given that file.
        settings = make_settings(tmp_path / "pg", database_url=pg_url, secret_key_file=str(data_dir / "secret.key"))
        async with running_server(settings) as server, httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            async with httpx.AsyncClient(base_url=server.url, timeout=10, cookies=seen["cookies"]) as old_session:
                assert (await old_session.get("/api/v1/auth/me")).json()["user"]["username"] == "alice"
            me = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {seen['token']}"})
            assert me.status_code == 200 and me.json()["user"]["username"] == "alice", me.text
            headers = {"X-CSRF-Token": await login(client, "alice", PASSWORD)}
            assert (await client.get("/api/v1/runs")).json()["runs"] == seen["runs"]
            for run_id, log in seen["logs"].items():
                assert (await client.get(f"/api/v1/runs/{run_id}/log")).text == log
            submitted = await client.post("/api/v1/runs", json={"command": [PY, "-c", "pass"]}, headers=headers)
            assert submitted.json()["run"]["id"] == seen["deleted_run"] + 1
            user = await add_user(server, "carol", "viewer")
            assert user.id == seen["max_user"] + 1


async def small_data_dir(tmp_path: Path) -> Path:
    """A data dir whose database has a finished run with two lines of output, made by a real store."""
    from runsvc.store import open_store

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    async with open_store(data_dir / "runsvc.db") as store:
        await store.write(lambda conn: add_run(conn, "succeeded", created_at=ts(), ended_at=ts(), events=2))
    return data_dir


async def test_copy_to_refuses_a_target_that_is_not_empty(tmp_path, pg_url):
    """A second copy into a database that has rows, or a copy into one with tables of something else, is
    refused in one line with exit status 1, and the target is left as it was."""
    with trio.fail_after(60):
        data_dir = await small_data_dir(tmp_path)
        assert (await runsvc("db", "copy-to", pg_url, "--data-dir", str(data_dir))).returncode == 0
        before = await trio.to_thread.run_sync(pg_rows, pg_url)
        again = await runsvc("db", "copy-to", pg_url, "--data-dir", str(data_dir))
        assert_one_line(again, 1, "the target database is not empty (table runs has rows); copy into an empty one")
        assert await trio.to_thread.run_sync(pg_rows, pg_url) == before

        def foreign_table() -> None:
            with psycopg.connect(pg_url, autocommit=True) as conn:
                conn.execute("DROP SCHEMA public CASCADE")
                conn.execute("CREATE SCHEMA public")
                conn.execute("CREATE TABLE invoices (id integer)")

        await trio.to_thread.run_sync(foreign_table)
        foreign = await runsvc("db", "copy-to", pg_url, "--data-dir", str(data_dir))
        assert_one_line(foreign, 1, "the target database has tables that are not runsvc's: invoices")
        assert await trio.to_thread.run_sync(pg_tables, pg_url) == ["invoices"]


async def test_copy_to_refuses_while_a_server_runs_on_the_data_dir(tmp_path, pg_url):
    """While a server holds the data dir's lock the copy refuses in one line (exit 1) and touches nothing."""
    with trio.fail_after(60):
        settings = make_settings(tmp_path)
        async with running_server(settings):
            result = await runsvc("db", "copy-to", pg_url, "--data-dir", str(settings.data_dir))
        assert_one_line(result, 1, f"data dir {settings.data_dir} is in use by another runsvc server")
        assert "stop the server before copying its database" in result.stderr.decode()
        assert await trio.to_thread.run_sync(pg_tables, pg_url) == []


async def test_copy_to_bad_targets_are_one_line(tmp_path, pg_url):
    """A URL that is not PostgreSQL's, a missing database, a server that does not answer, a data dir
    without a database: one line each, exit 2 for what must be fixed in the command, 1 otherwise."""
    with trio.fail_after(60):
        data_dir = await small_data_dir(tmp_path)
        missing = pg_url.rsplit("/", 1)[0] + "/no_such_database_here"
        cases = [
            ("mysql://localhost/runsvc", 2, "URL must start with postgresql://"),
            ("postgresql://[::1", 2, "URL is malformed"),
            (missing, 2, 'database "no_such_database_here" does not exist'),
            ("postgresql://runsvc@127.0.0.1:1/runsvc", 1, "cannot reach PostgreSQL"),
        ]
        for url, status, text in cases:
            assert_one_line(await runsvc("db", "copy-to", url, "--data-dir", str(data_dir)), status, text)
        nothing = tmp_path / "nothing"
        assert_one_line(await runsvc("db", "copy-to", pg_url, "--data-dir", str(nothing)), 1,
                        f"no database at {nothing / 'runsvc.db'} (is --data-dir right?)")
        assert await trio.to_thread.run_sync(pg_tables, pg_url) == []


async def test_a_copy_that_fails_half_way_leaves_the_target_empty(tmp_path, pg_url):
    """An event whose run is missing (SQLite did not enforce the key when it was written) fails the copy
    after users and runs were sent: one line, exit 1, and not one row stays in the target."""
    with trio.fail_after(60):
        data_dir = await small_data_dir(tmp_path)
        conn = sqlite3.connect(data_dir / "runsvc.db", isolation_level=None)  # foreign keys off, as by default
        conn.execute("INSERT INTO users (username, password_hash, role, created_at) VALUES ('dora', 'x', 'admin', ?)",
                     (ts(),))
        conn.execute("INSERT INTO run_events (run_id, seq, ts, kind, data) VALUES (999, 1, ?, 'stdout', 'orphan')",
                     (ts(),))
        conn.close()
        result = await runsvc("db", "copy-to", pg_url, "--data-dir", str(data_dir))
        assert_one_line(result, 1, f"copy failed, nothing was committed to {display_url(pg_url)}: ")
        assert "run_events" in result.stderr.decode()
        assert all(not table for table in (await trio.to_thread.run_sync(pg_rows, pg_url)).values())


async def test_nul_characters_in_output_become_replacement_characters(tmp_path, pg_url):
    """PostgreSQL's text cannot hold NUL: a line of output with one arrives with U+FFFD in its place, and
    the copy says how many values it changed."""
    with trio.fail_after(60):
        data_dir = await small_data_dir(tmp_path)
        conn = sqlite3.connect(data_dir / "runsvc.db", isolation_level=None)
        conn.execute("UPDATE run_events SET data = ? WHERE seq = 1", ("a\x00b\x00",))
        conn.close()
        result = await runsvc("db", "copy-to", pg_url, "--data-dir", str(data_dir))
        assert result.returncode == 0, result.stderr
        assert "1 text values held NUL characters, which PostgreSQL cannot store" in result.stdout.decode()
        events = (await trio.to_thread.run_sync(pg_rows, pg_url))["run_events"]
        assert [event[4] for event in events] == ["a\ufffdb\ufffd", "output line"]


@pytest.mark.skipif(shutil.which("script") is None, reason="needs script(1) for a terminal")
async def test_progress_bars_on_a_terminal(tmp_path, pg_url):
    """On a terminal each table gets a progress bar that reaches its row count (12,000 events: three
    batches), and the counts table follows."""
    from runsvc.store import open_store

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with trio.fail_after(60):
        async with open_store(data_dir / "runsvc.db") as store:
            await store.write(lambda conn: add_run(conn, "succeeded", created_at=ts(), ended_at=ts(), events=12_000))
        command = shlex.join([sys.executable, "-m", "runsvc", "db", "copy-to", pg_url, "--data-dir", str(data_dir)])
        result = await trio.run_process(["script", "-qec", command, "/dev/null"], capture_stdout=True,
                                        stdin=b"", check=False, env=child_env(COLUMNS="120"))
    out = result.stdout.decode()
    assert result.returncode == 0, out
    assert re.search(r"run_events: 100%\|[^\n]*\| 12000/12000 ", out), out
    assert re.search(r"runs: 100%\|[^\n]*\| 1/1 ", out), out
    assert "copied 12001 rows from " in out
