"""The store under storage faults: retried writes, fast 503-able failures, the probe, read time limits
and a bounded close. Real faults (another connection holding the write lock) beside the injection
hook, which stands in where a fault cannot be produced on demand (an I/O error). Every test that is not
about SQLite's file runs on both backends (`backend`); PostgreSQL's own outages: test_pg_outage.py."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
import trio

from runsvc.store import ReadTimedOut, StoreClosedError, StoreUnavailable, open_store
from runsvc.store.core import PROBE_INTERVAL_S
from tests.helpers import wait_until

DEADLINE_S = 20


def insert_user(conn: sqlite3.Connection, name: str) -> int:
    return conn.execute(
        "INSERT INTO users (username, password_hash, role, created_at) VALUES (?, 'x', 'viewer', 'now') "
        "RETURNING id", (name,)
    ).fetchone()[0]


def usernames(conn: sqlite3.Connection) -> list[str]:
    return [row[0] for row in conn.execute("SELECT username FROM users ORDER BY id")]


class HeldLock:
    """Another connection (as an operator's `sqlite3` shell would) holding the write lock."""

    def __init__(self, path: Path):
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    def __enter__(self) -> HeldLock:
        self._conn.execute("BEGIN IMMEDIATE")
        return self

    def release(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def __exit__(self, *exc: object) -> None:
        self.release()
        self._conn.close()


async def test_injected_faults_are_retried_for_retrying_writes(tmp_path: Path, backend: str) -> None:
    """A retrying write waits through the faults and commits once; meanwhile the store says why it is
    unavailable and refuses non-retrying writes at once; afterwards it is writable again."""
    with trio.fail_after(DEADLINE_S):
        async with open_store(tmp_path / "t.db", database_url=backend) as store:
            store.inject_write_faults(3, "full")
            result: list[int] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: _append(result, store.write(insert_user, "alice", retry=True)))
                await wait_until(lambda: store.unavailable is not None)
                assert "full" in store.unavailable
                with pytest.raises(StoreUnavailable):
                    await store.write(insert_user, "bob")
            assert result == [1]
            assert store.unavailable is None
            assert await store.read(usernames) == ["alice"]  # committed once, not once per attempt
            assert store.statistics().write_faults == 3
            assert await store.write(insert_user, "bob") == 2


async def _append(into: list, awaitable) -> None:
    into.append(await awaitable)


async def test_non_retrying_write_fails_with_store_unavailable(tmp_path: Path, backend: str) -> None:
    with trio.fail_after(DEADLINE_S):
        async with open_store(tmp_path / "t.db", database_url=backend) as store:
            store.inject_write_faults(1, "ioerr")
            with pytest.raises(StoreUnavailable, match="disk I/O error"):
                await store.write(insert_user, "alice")
            # Idle and unavailable: the writer probes, and the probe finds the database writable.
            with trio.fail_after(PROBE_INTERVAL_S * 5):
                await wait_until(lambda: store.unavailable is None)
            assert await store.write(insert_user, "alice") == 1


async def test_real_held_lock_past_the_busy_timeout(tmp_path: Path) -> None:
    """Another connection holds the write lock for much longer than the busy timeout: a retrying write
    commits after it is released, a plain one fails with StoreUnavailable, reads keep working."""
    path = tmp_path / "t.db"
    with trio.fail_after(DEADLINE_S):
        async with open_store(path, busy_timeout_ms=50) as store:
            await store.write(insert_user, "first")
            with HeldLock(path) as lock:
                done = trio.Event()

                async def retrying() -> None:
                    await store.write(insert_user, "alice", retry=True)
                    done.set()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(retrying)
                    await wait_until(lambda: store.statistics().write_faults >= 3)  # > 3 busy timeouts
                    assert "locked" in store.unavailable
                    with pytest.raises(StoreUnavailable):
                        await store.write(insert_user, "bob")
                    assert await store.read(usernames) == ["first"]
                    assert not done.is_set()
                    lock.release()
                    await done.wait()
            assert store.unavailable is None
            assert await store.read(usernames) == ["first", "alice"]


async def test_idle_store_probes_until_the_lock_is_gone(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with trio.fail_after(DEADLINE_S):
        async with open_store(path, busy_timeout_ms=50) as store:
            with HeldLock(path):
                with pytest.raises(StoreUnavailable):
                    await store.write(insert_user, "alice")
                assert store.unavailable is not None
            await wait_until(lambda: store.unavailable is None)


async def test_batch_mates_of_a_retrying_write_fail_without_duplicates(tmp_path: Path, backend: str) -> None:
    """In one group-commit batch that meets a fault, the retrying request commits once later and the
    other fails; nothing of the batch is half-committed."""
    with trio.fail_after(DEADLINE_S):
        async with open_store(tmp_path / "t.db", database_url=backend) as store:
            store.inject_write_faults(1, "locked")
            retried = store.submit_write(insert_user, "alice", retry=True)
            plain = store.submit_write(insert_user, "bob")
            await plain.done.wait()
            await retried.done.wait()
            assert isinstance(plain.error, StoreUnavailable)
            assert retried.error is None
            assert await store.read(usernames) == ["alice"]


def endless(conn: sqlite3.Connection) -> int:
    """A query that never ends on either database."""
    return conn.execute(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    ).fetchone()[0]


async def test_reads_have_a_time_limit(tmp_path: Path, backend: str) -> None:
    """A read that runs away is interrupted (SQLite's progress handler, PostgreSQL's statement_timeout),
    503-able, and the reader connection stays usable."""
    with trio.fail_after(DEADLINE_S):
        async with open_store(tmp_path / "t.db", database_url=backend, readers=1, read_timeout_s=0.2) as store:
            with pytest.raises(ReadTimedOut):
                await store.read(endless)
            assert await store.read(usernames) == []


async def test_close_is_bounded_with_a_reader_wedged_in_sql(tmp_path: Path, backend: str) -> None:
    """aclose() interrupts a read in flight instead of waiting for it (here: forever)."""
    with trio.fail_after(DEADLINE_S):
        outcome: list[BaseException] = []
        entered = threading.Event()

        def endless_once_entered(conn: sqlite3.Connection) -> int:
            entered.set()
            return endless(conn)

        async with open_store(tmp_path / "t.db", database_url=backend, read_timeout_s=3600) as store:

            async def wedged() -> None:
                try:
                    await store.read(endless_once_entered)
                except StoreClosedError as exc:
                    outcome.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(wedged)
                # The read holds a connection in its thread: only interrupting the SQL can end it now.
                assert await trio.to_thread.run_sync(entered.wait, DEADLINE_S)
                await store.aclose()
        assert len(outcome) == 1


async def test_close_is_bounded_with_a_reader_wedged_outside_sql(tmp_path: Path, backend: str) -> None:
    """A reader thread stuck outside the database (no interrupt can reach it) holds up the close only
    for close_timeout_s; the store closes anyway and leaves that one connection alone."""
    release, entered = threading.Event(), threading.Event()

    def stuck(conn: sqlite3.Connection) -> None:
        entered.set()
        release.wait(30)

    try:
        with trio.fail_after(DEADLINE_S):
            async with open_store(tmp_path / "t.db", database_url=backend, close_timeout_s=0.5) as store:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(store.read, stuck)
                    await trio.to_thread.run_sync(entered.wait)
                    await store.aclose()  # returns although `stuck` still holds its connection
                    with pytest.raises(StoreClosedError):
                        await store.read(usernames)
                    release.set()
    finally:
        release.set()
