"""`python -m runsvc db stats|prune` as real subprocesses on a real data dir."""

from __future__ import annotations

import datetime as dt
import sqlite3
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import trio

from runsvc.store import SCHEMA_VERSION
from runsvc.store.migrations import schema_sql
from runsvc.store.pg_admin import display_url
from runsvc.timeutil import format_ts, utcnow
from tests.helpers import child_env
from tests.maintenance_rows import add_run, event_counts, ids


def days_ago(days: float) -> str:
    return format_ts(utcnow() - dt.timedelta(days=days))


def make_database(data_dir: Path) -> dict[str, int]:
    """A data dir whose database holds two expired runs, a recent one and an old queued one."""
    data_dir.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(data_dir / "runsvc.db", isolation_level=None)
    conn.executescript(schema_sql())
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    conn.execute("PRAGMA journal_mode = WAL")
    runs = {
        "expired-1": add_run(conn, "succeeded", created_at=days_ago(50), ended_at=days_ago(45), events=400,
                             line="z" * 500),
        "expired-2": add_run(conn, "failed", created_at=days_ago(50), ended_at=days_ago(40), events=400,
                             line="z" * 500),
        "recent": add_run(conn, "succeeded", created_at=days_ago(2), ended_at=days_ago(1), events=5),
        "queued": add_run(conn, "queued", created_at=days_ago(60), events=1),
    }
    conn.close()
    return runs


async def runsvc(*args: str, **env: str) -> trio.CompletedProcess:
    with trio.fail_after(30):
        return await trio.run_process(
            [sys.executable, "-m", "runsvc", *args], capture_stdout=True, capture_stderr=True, check=False,
            env=child_env(**env),
        )


def rows(data_dir: Path) -> tuple[list[int], dict[int, int]]:
    conn = sqlite3.connect(data_dir / "runsvc.db")
    try:
        return ids(conn, "runs"), event_counts(conn)
    finally:
        conn.close()


@pytest.mark.slow
async def test_db_stats(tmp_path):
    """Sizes, page figures, schema version, rows per table, runs by status, oldest and newest run."""
    runs = make_database(tmp_path / "data")
    result = await runsvc("db", "stats", "--data-dir", str(tmp_path / "data"))
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr
    lines = out.splitlines()
    assert lines[0] == f"database: {tmp_path / 'data' / 'runsvc.db'}"
    for prefix in ("file size: ", "wal size: ", "pages: ", "free pages: "):
        assert any(line.startswith(prefix) for line in lines), out
    assert f"schema version: {SCHEMA_VERSION}" in lines
    assert "page size: 4096 bytes" in lines
    assert "auto vacuum: incremental" in lines
    for table, count in [("runs", 4), ("run_events", 806), ("sessions", 0), ("users", 0),
                         ("login_throttle", 0), ("enrollment_tokens", 0)]:
        assert f"  {table}: {count}" in lines, out
    assert "runs by status: failed=1, queued=1, succeeded=2" in lines
    assert any(line.startswith(f"oldest run: #{runs['expired-1']} created ") for line in lines), out
    assert any(line.startswith(f"newest run: #{runs['queued']} created ") for line in lines), out
    assert result.stderr == b""


@pytest.mark.slow
async def test_db_prune_dry_run_counts_and_changes_nothing(tmp_path):
    """--dry-run counts the expired finished runs and their events, and deletes nothing."""
    data_dir = tmp_path / "data"
    make_database(data_dir)
    before = rows(data_dir)
    result = await runsvc("db", "prune", "--dry-run", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().startswith("dry run: would delete 2 runs and 800 events: ")
    assert rows(data_dir) == before

    longer = await runsvc("db", "prune", "--dry-run", "--data-dir", str(data_dir), "--retention-days", "42")
    assert longer.stdout.decode().startswith("dry run: would delete 1 runs and 400 events: ")
    forever = await runsvc("db", "prune", "--dry-run", "--data-dir", str(data_dir), "--retention-days", "0")
    assert forever.returncode == 0
    assert "kept forever; nothing to prune" in forever.stdout.decode()
    assert rows(data_dir) == before


@pytest.mark.slow
async def test_db_prune_deletes_expired_runs_and_shrinks_the_file(tmp_path):
    """Without --dry-run: expired runs and their events go, the rest stays, the file gets smaller."""
    data_dir = tmp_path / "data"
    runs = make_database(data_dir)
    size_before = (data_dir / "runsvc.db").stat().st_size
    result = await runsvc("db", "prune", "--data-dir", str(data_dir), "--prune-batch-events", "100")
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr
    assert out.startswith("deleted 2 runs and 800 events in 9 batches: "), out
    assert "freed " in out
    kept = sorted([runs["recent"], runs["queued"]])
    assert rows(data_dir) == (kept, {runs["recent"]: 5, runs["queued"]: 1})
    assert (data_dir / "runsvc.db").stat().st_size < size_before / 2


@pytest.mark.slow
async def test_db_commands_without_a_database(tmp_path):
    """A data dir without a database: one clear line, exit status 1, and no database created."""
    data_dir = tmp_path / "empty"
    for args in (["db", "stats"], ["db", "prune", "--dry-run"], ["db", "prune"]):
        result = await runsvc(*args, "--data-dir", str(data_dir))
        assert result.returncode == 1
        expected = f"runsvc: error: no database at {data_dir / 'runsvc.db'} (is --data-dir right?)\n"
        assert result.stderr.decode() == expected
        assert result.stdout == b""
    assert not data_dir.exists()


async def test_db_stats_on_a_file_that_is_not_a_database(tmp_path):
    """A garbage file is reported in one line with exit status 1, never a traceback."""
    (tmp_path / "runsvc.db").write_bytes(b"not a database at all, " * 100)
    result = await runsvc("db", "stats", "--data-dir", str(tmp_path))
    assert result.returncode == 1
    err = result.stderr.decode()
    assert err.startswith("runsvc: error: cannot use database ") and err.count("\n") == 1, err
    assert "Traceback" not in err


async def on_postgresql(tmp_path: Path, url: str) -> dict[str, int]:
    """make_database's runs, moved into the PostgreSQL database at `url` with `db copy-to`."""
    runs = make_database(tmp_path / "sqlite")
    copied = await runsvc("db", "copy-to", url, "--data-dir", str(tmp_path / "sqlite"))
    assert copied.returncode == 0, copied.stderr
    return runs


def pg_rows(url: str) -> tuple[list[int], dict[int, int]]:
    import psycopg

    with psycopg.connect(url) as conn:
        return ids(conn, "runs"), event_counts(conn)


@pytest.mark.slow
async def test_db_stats_on_postgresql(tmp_path, pg_url):
    """On PostgreSQL (RUNSVC_DATABASE_URL): the database named without its password, the server, its size, schema
    version, exact rows and size of each table, runs by status, oldest and newest run, and what
    autovacuum has done on runs and run_events."""
    runs = await on_postgresql(tmp_path, pg_url)
    parts = urlsplit(pg_url)
    if parts.username and parts.password is None:  # the test cluster trusts its clients: any password works
        pg_url = urlunsplit(parts._replace(netloc=parts.netloc.replace("@", ":not-shown-1@", 1)))
    result = await runsvc("db", "stats", RUNSVC_DATABASE_URL=pg_url)
    out = result.stdout.decode()
    assert "not-shown-1" not in out
    assert result.returncode == 0, result.stderr
    lines = out.splitlines()
    assert lines[0] == f"database: {display_url(pg_url)}" and (parts.password or "not-shown-1") not in lines[0]
    assert lines[1].startswith("server: PostgreSQL ")
    assert lines[2].startswith("database size: ") and lines[2].endswith(" bytes)")
    assert f"schema version: {SCHEMA_VERSION}" in lines
    assert "rows (exact) and size with indexes:" in lines
    for table, count in [("runs", 4), ("run_events", 806), ("sessions", 0), ("users", 0),
                         ("webhook_deliveries", 0)]:
        assert any(line.startswith(f"  {table}: {count} rows, ") for line in lines), out
    assert not any("schema_version" in line for line in lines), out
    assert "runs by status: failed=1, queued=1, succeeded=2" in lines
    assert any(line.startswith(f"oldest run: #{runs['expired-1']} created ") for line in lines), out
    assert any(line.startswith(f"newest run: #{runs['queued']} created ") for line in lines), out
    vacuum = lines[lines.index("vacuum (PostgreSQL's autovacuum makes deleted rows' space reusable):") + 1:]
    assert [line.split(":")[0] for line in vacuum] == ["  run_events", "  runs"], out
    assert all(" dead rows, last autovacuum " in line for line in vacuum), out
    assert result.stderr == b""


@pytest.mark.slow
async def test_db_prune_on_postgresql(tmp_path, pg_url):
    """On PostgreSQL --dry-run counts and changes nothing; prune deletes the expired runs and their events
    in bounded batches and leaves the space to autovacuum."""
    runs = await on_postgresql(tmp_path, pg_url)
    before = await trio.to_thread.run_sync(pg_rows, pg_url)
    dry = await runsvc("db", "prune", "--dry-run", "--database-url", pg_url)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.decode().startswith("dry run: would delete 2 runs and 800 events: ")
    assert await trio.to_thread.run_sync(pg_rows, pg_url) == before
    result = await runsvc("db", "prune", "--prune-batch-events", "100", RUNSVC_DATABASE_URL=pg_url)
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr
    assert out.startswith("deleted 2 runs and 800 events in 9 batches: "), out
    assert out.splitlines()[1] == "PostgreSQL's autovacuum makes their space reusable (see `runsvc db stats`)"
    kept = sorted([runs["recent"], runs["queued"]])
    assert await trio.to_thread.run_sync(pg_rows, pg_url) == (kept, {runs["recent"]: 5, runs["queued"]: 1})


async def test_db_commands_on_a_postgresql_database_without_runsvc(pg_url):
    """An empty PostgreSQL database is not made a runsvc one by `db stats` or `db prune`: one line, exit 1;
    a server that does not answer is one line too."""
    for args in (["db", "stats"], ["db", "prune", "--dry-run"], ["db", "prune", "--retention-days", "0"]):
        result = await runsvc(*args, RUNSVC_DATABASE_URL=pg_url)
        assert result.returncode == 1, result.stderr
        assert result.stderr.decode() == (
            f"runsvc: error: no runsvc database at {display_url(pg_url)} (is --database-url right?)\n"
        )
    import psycopg

    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT to_regclass('schema_version')").fetchone()[0] is None
    down = await runsvc("db", "stats", RUNSVC_DATABASE_URL="postgresql://runsvc@127.0.0.1:1/runsvc")
    assert down.returncode == 1
    err = down.stderr.decode()
    assert err.startswith("runsvc: error: cannot reach PostgreSQL: ") and err.count("\n") == 1, err
