"""The store: migrations, pragmas, threads, group commit, close."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
import trio

from runsvc.store import SCHEMA_VERSION, SchemaError, StoreClosedError, open_store
from runsvc.store.migrations import schema_sql
from tests.helpers import wait_until

V2_SCHEMA = Path(__file__).with_name("schema_v2.sql")
V1_SCHEMA = Path(__file__).with_name("schema_v1.sql")


def _pragma(conn: sqlite3.Connection, name: str):
    return conn.execute(f"PRAGMA {name}").fetchone()[0]


async def test_fresh_database_gets_current_schema(tmp_path):
    """A new file is created with every table, WAL mode, incremental auto-vacuum, the latest version."""
    async with open_store(tmp_path / "new.db") as store:
        tables = await store.read(
            lambda c: {r[0] for r in c.execute("SELECT name FROM sqlite_schema WHERE type='table'")}
        )
        assert {"users", "sessions", "login_throttle", "runs", "run_events", "enrollment_tokens"} <= tables
        assert await store.read(_pragma, "journal_mode") == "wal"
        assert await store.read(_pragma, "user_version") == SCHEMA_VERSION
        assert await store.read(_pragma, "auto_vacuum") == 2  # incremental
        assert await store.read(_pragma, "foreign_keys") == 1
        assert await store.read(_pragma, "synchronous") == 1  # NORMAL
        assert await store.read(_pragma, "busy_timeout") == 5000


async def test_older_database_is_upgraded_in_place(tmp_path):
    """A version-1 file (no auto-vacuum) keeps its rows and is upgraded to the current version."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(V1_SCHEMA.read_text())
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO runs (command, env, timeout_s, status, created_at) "
        "VALUES ('[\"true\"]', '{}', 60, 'queued', '2026-01-01T00:00:00.000000Z')"
    )
    conn.commit()
    assert _pragma(conn, "auto_vacuum") == 0
    conn.close()

    async with open_store(path) as store:
        assert await store.read(_pragma, "user_version") == SCHEMA_VERSION
        assert await store.read(_pragma, "auto_vacuum") == 2
        rows = await store.read(lambda c: c.execute("SELECT status FROM runs").fetchall())
        assert [tuple(r) for r in rows] == [("queued",)]


async def test_version_2_database_gains_agents_and_run_routing(tmp_path):
    """A version-2 file gets the agents table and runs.labels/executor/attempt; runs already handed out
    count as attempt 1 on the local executor, queued ones have no executor yet."""
    path = tmp_path / "v2.db"
    conn = sqlite3.connect(path)
    conn.executescript(V2_SCHEMA.read_text())
    conn.execute("PRAGMA user_version = 2")
    for status in ("queued", "succeeded"):
        conn.execute(
            "INSERT INTO runs (command, env, timeout_s, status, created_at) "
            f"VALUES ('[\"true\"]', '{{}}', 60, '{status}', '2026-01-01T00:00:00.000000Z')"
        )
    conn.commit()
    conn.close()

    async with open_store(path) as store:
        assert await store.read(_pragma, "user_version") == SCHEMA_VERSION
        rows = await store.read(lambda c: c.execute(
            "SELECT status, labels, executor, attempt FROM runs ORDER BY id").fetchall())
        assert [tuple(r) for r in rows] == [("queued", "[]", None, 0), ("succeeded", "[]", "local", 1)]
        assert await store.read(lambda c: c.execute("SELECT count(*) FROM agents").fetchone()[0]) == 0


async def test_newer_database_is_refused(tmp_path):
    """A file from a newer runsvc is refused with a message naming both versions, and left untouched."""
    path = tmp_path / "new.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaError, match=f"version {SCHEMA_VERSION + 1} is newer than this runsvc supports"):
        async with open_store(path):
            pass
    conn = sqlite3.connect(path)
    assert _pragma(conn, "user_version") == SCHEMA_VERSION + 1
    conn.close()


async def test_foreign_database_is_refused(tmp_path):
    """A file with tables but no version is not ours: refused, not overwritten."""
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (x)")
    conn.close()
    with pytest.raises(SchemaError, match="not a runsvc database"):
        async with open_store(path):
            pass


def test_schema_file_is_the_packaged_one():
    """The package ships the repository's schema.sql."""
    root = Path(__file__).parents[2] / "schema.sql"
    assert schema_sql() == root.read_text()


async def test_sql_runs_off_the_trio_thread(store):
    """Reads and writes run on worker threads, and no statement ever ran on the Trio thread."""
    trio_thread = threading.get_ident()
    assert await store.read(lambda c: threading.get_ident()) != trio_thread
    assert await store.write(lambda c: threading.get_ident()) != trio_thread
    await store.write(lambda c: c.execute("INSERT INTO users (username, password_hash, role, created_at) "
                                          "VALUES ('a', 'x', 'admin', 'now')"))
    stats = store.statistics()
    assert stats.statements > 0
    assert stats.statements_on_trio_thread == 0


async def test_concurrent_writes_share_transactions(store):
    """Many concurrent writers are group-committed: fewer transactions than requests, all durable."""

    def insert(conn, i):
        conn.execute(
            "INSERT INTO users (username, password_hash, role, created_at) VALUES (?, 'x', 'viewer', 'now')",
            (f"user{i}",),
        )

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(store.write, insert, i)
    count = await store.read(lambda c: c.execute("SELECT count(*) FROM users").fetchone()[0])
    assert count == 200
    stats = store.statistics()
    assert stats.write_requests == 200
    assert stats.transactions < 200


async def test_failing_write_does_not_undo_its_neighbours(store):
    """A request that raises is rolled back alone; the others in its transaction commit."""

    def insert(conn, name):
        conn.execute(
            "INSERT INTO users (username, password_hash, role, created_at) VALUES (?, 'x', 'viewer', 'now')",
            (name,),
        )

    def insert_then_fail(conn):
        insert(conn, "doomed")
        raise ValueError("boom")

    results = {}

    async def attempt(key, fn, *args):
        try:
            results[key] = await store.write(fn, *args)
        except ValueError as exc:
            results[key] = exc

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(attempt, "a", insert, "alice")
            nursery.start_soon(attempt, "bad", insert_then_fail)
            nursery.start_soon(attempt, "b", insert, "bob")
    assert isinstance(results["bad"], ValueError)
    names = await store.read(lambda c: sorted(r[0] for r in c.execute("SELECT username FROM users")))
    assert names == ["alice", "bob"]


async def test_on_commit_runs_after_commit(store):
    """on_commit sees the write already visible to a fresh reader."""
    seen = []

    def insert(conn):
        conn.execute("INSERT INTO users (username, password_hash, role, created_at) VALUES ('c','x','admin','n')")
        return "done"

    def check(result):
        fresh = store.connect()
        seen.append((result, fresh.execute("SELECT count(*) FROM users").fetchone()[0]))
        fresh.close()

    await store.write(insert, on_commit=check)
    assert seen == [("done", 1)]


async def test_close_is_idempotent_and_use_after_close_fails(tmp_path):
    """aclose() twice is fine; read and write afterwards raise StoreClosedError."""
    async with open_store(tmp_path / "c.db") as store:
        await store.aclose()
        await store.aclose()
        with pytest.raises(StoreClosedError):
            await store.read(lambda c: 1)
        with pytest.raises(StoreClosedError):
            await store.write(lambda c: 1)


async def test_close_under_write_load_leaves_database_intact(tmp_path):
    """Closing while writers are busy finishes what was queued; integrity_check is ok afterwards."""
    path = tmp_path / "load.db"

    def insert(conn, i):
        conn.execute(
            "INSERT INTO runs (command, env, timeout_s, status, created_at) VALUES (?, '{}', 1, 'queued', 'n')",
            (f'["echo", "{i}"]',),
        )

    async def writer(store, start):
        for i in range(start, start + 10_000):
            try:
                await store.write(insert, i)
            except StoreClosedError:
                return

    with trio.fail_after(30):
        async with open_store(path) as store:
            async with trio.open_nursery() as nursery:
                for w in range(5):
                    nursery.start_soon(writer, store, w * 10_000)
                await wait_until(lambda: store.statistics().transactions >= 20)  # writes committing and queued
                await store.aclose()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] > 0
    conn.close()


async def test_statements_are_counted_per_call_not_per_row(store):
    """An executemany of 1,000 rows counts as one statement (the count is per execute call)."""
    await store.write(lambda c: c.execute("CREATE TABLE counted (x INTEGER)"))
    before = store.statistics().statements
    await store.write(lambda c: c.executemany("INSERT INTO counted VALUES (?)", [(i,) for i in range(1000)]))
    # BEGIN IMMEDIATE, SAVEPOINT, the executemany, RELEASE, COMMIT; on PostgreSQL also the transaction's id,
    # taken before COMMIT in case its answer is lost (writer.py)
    assert store.statistics().statements - before == (5 if store.dialect == "sqlite" else 6)
    assert store.statistics().statements_on_trio_thread == 0
