"""The store on a PostgreSQL server that goes away and comes back (SPEC §14, §16): a private cluster of
this module's own (tests/private_cluster.py), stopped, killed and restarted under the store."""

from __future__ import annotations

import time

import psycopg
import pytest
import trio

from runsvc.store import StoreUnavailable, open_store
from runsvc.store import postgres as pg_store
from runsvc.store.writer import PROBE_INTERVAL_S
from tests.helpers import wait_until
from tests.private_cluster import (  # noqa: F401 (cluster_fixture, url_fixture: the `cluster`, `url` fixtures)
    PrivateCluster,
    cluster_fixture,
    in_thread,
    url_fixture,
)
from tests.store.test_faults import insert_user, usernames

DEADLINE_S = 60



@pytest.mark.slow
async def test_a_failed_read_makes_an_idle_store_unavailable_until_the_server_is_back(
    cluster: PrivateCluster, url: str
) -> None:
    """Nothing is written while the server is down: the first failed read is enough for the store to say
    it is unavailable (hence /healthz degraded), and it says writable again by itself once the server is
    back."""
    with trio.fail_after(DEADLINE_S):
        async with open_store(database_url=url, readers=1) as store:
            await store.write(insert_user, "alice")
            await in_thread(cluster.stop, "fast")
            try:
                with pytest.raises(StoreUnavailable):
                    await store.read(usernames)
                await wait_until(lambda: store.unavailable is not None)
            finally:
                await in_thread(cluster.start)
            with trio.fail_after(PROBE_INTERVAL_S * 5):
                await wait_until(lambda: store.unavailable is None)
            assert await store.read(usernames) == ["alice"]


async def test_a_restart_while_idle_costs_no_failed_request(
    cluster: PrivateCluster, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After `pg_ctl restart -m fast` of an idle store, the next plain (non-retrying) write and the next
    read work at once: the writer checks its idle connection, the pool checks each one it hands out."""
    # Every batch finds its connection idle, whatever time the restart took.
    monkeypatch.setattr(pg_store, "IDLE_CHECK_S", 0.0)
    with trio.fail_after(DEADLINE_S):
        async with open_store(database_url=url) as store:
            await store.write(insert_user, "alice")
            assert await store.read(usernames) == ["alice"]
            await in_thread(cluster.restart, "fast")
            assert await store.write(insert_user, "bob") == 2
            assert await store.read(usernames) == ["alice", "bob"]
            assert store.statistics().write_faults == 0


async def test_a_retrying_write_waits_out_a_crash(cluster: PrivateCluster, url: str) -> None:
    """`pg_ctl stop -m immediate` (a crash) under a pending retrying write: it commits once when the server
    is back; a plain write meanwhile fails with StoreUnavailable."""
    with trio.fail_after(DEADLINE_S):
        async with open_store(database_url=url) as store:
            await store.write(insert_user, "first")
            await in_thread(cluster.stop, "immediate")
            try:
                retried = store.submit_write(insert_user, "alice", retry=True)
                await wait_until(lambda: store.statistics().write_faults >= 2)
                with pytest.raises(StoreUnavailable):
                    await store.write(insert_user, "bob")
                assert not retried.done.is_set()
            finally:
                await in_thread(cluster.start)
            await retried.done.wait()
            assert retried.error is None
            assert await store.read(usernames) == ["first", "alice"]


@pytest.mark.slow
async def test_reads_resume_soon_after_a_long_outage(cluster: PrivateCluster, url: str) -> None:
    """After an outage of 12 s the readers' pool reconnects for the first read, instead of at the end of
    a backoff that doubled all through the outage (1, 2, 4, 8, 16 s: psycopg_pool's, without a limit)."""
    with trio.fail_after(DEADLINE_S):
        async with open_store(database_url=url, readers=1) as store:
            assert await store.read(usernames) == []
            await in_thread(cluster.stop, "fast")
            try:
                began = trio.current_time()
                with pytest.raises(StoreUnavailable):
                    await store.read(usernames)  # finds the connection broken: the pool replaces it
                # The outage itself (the fault under test, not a wait for a result).
                await trio.sleep_until(began + 12)
            finally:
                await in_thread(cluster.start)
            started = time.monotonic()
            assert await store.read(usernames) == []
            # The pool's next attempt would have come about 15 s into the outage, 2-3 s from here.
            assert time.monotonic() - started < 1.0


@pytest.mark.parametrize(("fatal", "refused"), [
    ('password authentication failed for user "runsvc"', True),
    ('database "runsvc" does not exist', True),
    ("the database system is starting up", False),
    ("the database system is shutting down", False),
    ("sorry, too many clients already", False),
])
def test_a_server_that_cannot_take_connections_yet_is_not_a_bad_setting(fatal: str, refused: bool) -> None:
    """A FATAL answer at connect is a bad setting (exit 2) only when the server refuses the URL itself;
    a server starting, stopping or full is one not reachable now (exit 1). (libpq's message for each, as
    psycopg raises it; a cluster cannot be caught starting up on demand.)"""
    error = psycopg.OperationalError(
        f'connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  {fatal}'
    )
    assert pg_store.refused_by_server(error) is refused


def create_counter(conn) -> None:
    conn.execute("CREATE TABLE counter (n INTEGER NOT NULL)")
    conn.execute("INSERT INTO counter (n) VALUES (0)")


def increment(conn) -> int:
    return conn.execute("UPDATE counter SET n = n + 1 RETURNING n").fetchone()[0]


def counter(conn) -> int:
    return conn.execute("SELECT n FROM counter").fetchone()[0]


async def test_a_commit_whose_answer_was_lost_is_not_written_again(url: str) -> None:
    """A retrying write whose COMMIT succeeded but whose answer never came (the connection broke right
    after: the injection hook) is not run a second time: the writer asks the server whether that
    transaction committed, and delivers the first result."""
    with trio.fail_after(DEADLINE_S):
        async with open_store(database_url=url) as store:
            await store.write(create_counter)
            store.inject_lost_commit_answers(1)
            published: list[int] = []
            assert await store.write(increment, retry=True, on_commit=published.append) == 1
            assert published == [1]
            assert await store.read(counter) == 1
            assert store.statistics().write_faults == 1
            assert await store.write(increment) == 2


def test_the_writer_asks_whether_a_transaction_committed(url: str) -> None:
    """PgWriter.committed: true for a committed transaction, false for one rolled back and for one the
    server never got as far as (an id in its future, as after a crash that lost it); a transaction that
    wrote nothing has no id to ask about."""
    link = pg_store.PgWriter(url, pg_store.reconnect(url), pg_store.StatementCounter(trio_thread=-1), exclusive=False)
    try:
        conn = link.connection()
        tokens = {}
        conn.execute("BEGIN")
        assert link.commit_token(conn) is None  # nothing written: no id, and no doubt to resolve
        conn.execute("ROLLBACK")
        for outcome in ("COMMIT", "ROLLBACK"):
            conn.execute("BEGIN")
            conn.execute(f"CREATE TABLE scratch_{outcome.lower()} (x INTEGER)")
            tokens[outcome] = link.commit_token(conn)
            conn.execute(outcome)
        assert link.committed(tokens["COMMIT"]) is True
        assert link.committed(tokens["ROLLBACK"]) is False
        assert link.committed(str(int(tokens["COMMIT"]) + 1_000_000)) is False
    finally:
        link.close()
