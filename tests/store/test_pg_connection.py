"""PgConnection holds BEGIN, SAVEPOINT and RELEASE and sends them with the next statement: one round trip
for a transaction's shape and its next statement, with the same results and errors as one by one. Runs
only where PostgreSQL is available (a database of its own on $RUNSVC_TEST_DATABASE_URL)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from runsvc.store.connections import StatementCounter
from runsvc.store.postgres import PgConnection, connect
from tests import pg


@pytest.fixture(name="conn")
def _conn(tmp_path: Path):
    if not pg.ADMIN_URL:
        pytest.skip(pg.SKIP_REASON)
    url = pg.create_database()
    raw = connect(url)
    raw.execute("CREATE TABLE t (id BIGINT PRIMARY KEY)")
    try:
        yield PgConnection(raw, StatementCounter(trio_thread=-1))
    finally:
        raw.close()
        pg.drop_database(url)


def _round_trips(conn: PgConnection, trace: Path, work) -> int:
    """Query and Sync messages the client sent while `work(conn)` ran: each is one wait for the server
    (a simple query, or the end of an extended-protocol batch) in libpq's protocol trace (PQtrace,
    through psycopg's public pq interface)."""
    with trace.open("w") as file:
        conn.raw.pgconn.trace(file.fileno())
        try:
            work(conn)
        finally:
            conn.raw.pgconn.untrace()
    sent = [line.split("\t") for line in trace.read_text().splitlines()]
    return sum(1 for fields in sent if len(fields) > 3 and fields[1] == "F" and fields[3] in ("Query", "Sync"))


def test_a_transactions_shape_rides_with_its_next_statement(conn, tmp_path):
    """BEGIN, a savepoint, an insert, its release and COMMIT cost two round trips (five one by one),
    and do what they did one by one: the row is committed, in_transaction says so throughout."""

    def work(c: PgConnection) -> None:
        c.execute("BEGIN")
        assert c.in_transaction
        c.execute("SAVEPOINT request")
        assert c.execute("INSERT INTO t (id) VALUES (?) RETURNING id", (7,)).fetchone()[0] == 7
        c.execute("RELEASE request")
        c.execute("COMMIT")

    assert _round_trips(conn, tmp_path / "trace", work) == 2
    assert not conn.in_transaction
    assert conn.execute("SELECT id FROM t").fetchall() == [(7,)]


def test_a_held_statement_the_server_refuses_fails_the_next_one(conn):
    """In a transaction a failed statement aborted, a held SAVEPOINT is refused: the next statement's
    execute raises that refusal (it is what could not run), and a rollback leaves the connection
    usable and outside any transaction."""
    conn.execute("BEGIN")
    conn.execute("INSERT INTO t (id) VALUES (1)")
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute("INSERT INTO t (id) VALUES (1)")
    conn.execute("SAVEPOINT request")
    with pytest.raises(psycopg.errors.InFailedSqlTransaction):
        conn.execute("SELECT 1")
    conn.rollback_quietly()
    assert not conn.in_transaction
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 0


def test_a_rollback_drops_what_is_held(conn):
    """A BEGIN held and then rolled back began nothing: the next statement runs on its own and commits."""
    conn.execute("BEGIN")
    conn.execute("SAVEPOINT request")
    conn.rollback_quietly()
    assert not conn.in_transaction
    conn.execute("INSERT INTO t (id) VALUES (2)")
    assert not conn.in_transaction
    assert conn.execute("SELECT id FROM t").fetchall() == [(2,)]
