"""The group-commit writer: what a cancelled writer reports, and one bad request in a batch. On both
backends (`backend`: "" for SQLite, else a PostgreSQL database's URL)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import trio
import trio.testing

from runsvc.store import StoreClosedError, StoreUnavailable, open_store
from runsvc.store.dialect import SQLITE

DEADLINE_S = 20


def insert_user(conn: sqlite3.Connection, name: str) -> str:
    conn.execute(
        "INSERT INTO users (username, password_hash, role, created_at) VALUES (?, 'x', 'viewer', 'now')", (name,)
    )
    return name


def committed_users(path: Path, backend: str) -> list[str]:
    """Read by a connection of its own: only what was committed."""
    if backend:
        import psycopg

        with psycopg.connect(backend) as pg:
            return [row[0] for row in pg.execute("SELECT username FROM users ORDER BY id")]
    conn = sqlite3.connect(path)
    try:
        return [row[0] for row in conn.execute("SELECT username FROM users ORDER BY id")]
    finally:
        conn.close()


async def test_cancelled_writer_publishes_only_what_committed(tmp_path: Path, backend: str) -> None:
    """Cancelling the writer while its thread is mid-batch neither abandons the thread nor runs
    on_commit early: on_commit runs after the transaction committed, with the real result."""
    path = tmp_path / "t.db"
    entered, release = threading.Event(), threading.Event()
    outcomes: list[tuple[str, Any, list[str]]] = []

    def slow_insert(conn: sqlite3.Connection) -> str:
        insert_user(conn, "alice")
        entered.set()
        release.wait(DEADLINE_S)
        return "alice"

    def record(kind: str, value: Any) -> None:
        outcomes.append((kind, value, committed_users(path, backend)))

    async def use_store(scope: trio.CancelScope, task_status: trio.TaskStatus[None]) -> None:
        with scope:
            async with open_store(path, database_url=backend) as store:
                store.submit_write(
                    slow_insert, on_commit=lambda v: record("commit", v), on_error=lambda e: record("error", e)
                )
                task_status.started()
                await trio.sleep_forever()

    try:
        with trio.fail_after(DEADLINE_S):
            async with trio.open_nursery() as nursery:
                scope = trio.CancelScope()
                await nursery.start(use_store, scope)
                await trio.to_thread.run_sync(entered.wait)
                scope.cancel()  # cancels the writer task too, while its thread holds the batch
                await trio.testing.wait_all_tasks_blocked()
                release.set()
    finally:
        release.set()
    assert outcomes == [("commit", "alice", ["alice"])]


async def test_cancelled_writer_fails_the_batch_it_interrupts(tmp_path: Path, backend: str) -> None:
    """A cancelled writer whose batch is still running SQL waits for it; the close interrupts the
    statement, the batch rolls back, and its requests fail (on_error, never on_commit)."""
    path = tmp_path / "t.db"
    entered = threading.Event()
    outcomes: list[tuple[str, Any]] = []

    def insert_then_spin(conn: sqlite3.Connection) -> int:
        insert_user(conn, "alice")
        entered.set()
        return conn.execute(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
        ).fetchone()[0]

    async def use_store(scope: trio.CancelScope, task_status: trio.TaskStatus[None]) -> None:
        with scope:
            async with open_store(path, database_url=backend, close_timeout_s=0.2) as store:
                for fn, args in ((insert_user, ("bob",)), (insert_then_spin, ())):
                    store.submit_write(
                        fn, *args, on_commit=lambda v: outcomes.append(("commit", v)),
                        on_error=lambda e: outcomes.append(("error", type(e))),
                    )
                task_status.started()
                await trio.sleep_forever()

    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()
            await nursery.start(use_store, scope)
            await trio.to_thread.run_sync(entered.wait)
            scope.cancel()
    assert outcomes == [("error", StoreUnavailable), ("error", StoreUnavailable)]
    assert committed_users(path, backend) == []


async def test_requests_queued_behind_a_cancelled_batch_fail_as_closed(tmp_path: Path, backend: str) -> None:
    """Requests the cancelled writer never took fail with StoreClosedError; none of them committed."""
    path = tmp_path / "t.db"
    entered, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def blocking(conn: sqlite3.Connection) -> None:
        entered.set()
        release.wait(DEADLINE_S)

    async def use_store(scope: trio.CancelScope, task_status: trio.TaskStatus[None]) -> None:
        with scope:
            async with open_store(path, database_url=backend) as store:
                store.submit_write(blocking)
                await trio.to_thread.run_sync(entered.wait)  # the writer's thread holds that batch
                store.submit_write(insert_user, "bob", on_error=errors.append)
                task_status.started()
                await trio.sleep_forever()

    try:
        with trio.fail_after(DEADLINE_S):
            async with trio.open_nursery() as nursery:
                scope = trio.CancelScope()
                await nursery.start(use_store, scope)
                scope.cancel()
                await trio.testing.wait_all_tasks_blocked()
                release.set()
    finally:
        release.set()
    assert [type(e) for e in errors] == [StoreClosedError]
    assert committed_users(path, backend) == []


def deferred_check(conn: sqlite3.Connection) -> None:
    """PostgreSQL: a table whose constraint is checked at COMMIT (the schema's foreign keys are not
    deferrable there)."""
    conn.execute("CREATE TABLE deferred_check (x INTEGER UNIQUE DEFERRABLE INITIALLY DEFERRED)")


def orphan_session(conn: sqlite3.Connection) -> None:
    """Breaks a deferred constraint: the statement succeeds, the COMMIT of its transaction fails."""
    if conn.dialect != SQLITE:
        conn.execute("INSERT INTO deferred_check (x) VALUES (1), (1)")
        return
    conn.execute("PRAGMA defer_foreign_keys = ON")
    conn.execute(
        "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES (x'00', 999, 'now', 'later')"
    )


def is_integrity_error(error: BaseException | None) -> bool:
    """A constraint's refusal, from either driver."""
    if isinstance(error, sqlite3.IntegrityError):
        return True
    import psycopg

    return isinstance(error, psycopg.IntegrityError)


async def test_a_request_that_fails_the_commit_fails_alone(tmp_path: Path, backend: str) -> None:
    """A request that makes its group's COMMIT fail (not a storage fault) gets the error; the requests
    batched with it commit and run on_commit."""
    path = tmp_path / "t.db"
    with trio.fail_after(DEADLINE_S):
        async with open_store(path, database_url=backend) as store:
            if store.dialect != SQLITE:
                await store.write(deferred_check)
            batches = store.statistics().write_batches
            published: list[str] = []
            requests = [
                store.submit_write(insert_user, "alice", on_commit=published.append),
                store.submit_write(orphan_session, on_commit=published.append),
                store.submit_write(insert_user, "bob", on_commit=published.append),
            ]
            for request in requests:
                await request.done.wait()
            assert store.statistics().write_batches == batches + 1  # one batch: they shared a transaction at first
    assert [r.error for r in requests[::2]] == [None, None]
    assert is_integrity_error(requests[1].error)
    assert published == ["alice", "bob"]
    assert committed_users(path, backend) == ["alice", "bob"]


async def test_a_failed_request_outside_a_transaction_leaves_none_open(tmp_path: Path, backend: str) -> None:
    """A `transaction=False` request that fails with its own transaction open is rolled back, so the
    writes after it still begin, commit, and do not carry its rows."""
    path = tmp_path / "t.db"

    def begin_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN")
        insert_user(conn, "half")
        raise ValueError("failed half-way")

    with trio.fail_after(DEADLINE_S):
        async with open_store(path, database_url=backend) as store:
            failing = store.submit_write(begin_then_fail, transaction=False)
            after = store.submit_write(insert_user, "bob")
            await failing.done.wait()
            await after.done.wait()
    assert isinstance(failing.error, ValueError)
    assert after.error is None
    assert committed_users(path, backend) == ["bob"]
