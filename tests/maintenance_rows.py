"""Rows for maintenance and retention tests, inserted with plain SQL (sync, for store.write), and the
mock clock that drives the loops."""

from __future__ import annotations

import datetime as dt

import pytest
import trio
import trio.testing

from runsvc.store.dialect import Connection
from runsvc.timeutil import format_ts

EPOCH = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def ts(seconds: float = 0.0, *, days: float = 0.0) -> str:
    """The timestamp `days` + `seconds` after EPOCH (negative: before)."""
    return format_ts(EPOCH + dt.timedelta(days=days, seconds=seconds))


def add_user(conn: Connection, username: str = "alice") -> int:
    return conn.execute(
        "INSERT INTO users (username, password_hash, role, created_at) VALUES (?, 'x', 'admin', ?) RETURNING id",
        (username, ts()),
    ).fetchone()[0]


def add_session(conn: Connection, user_id: int, expires_at: str) -> int:
    token = f"token-{expires_at}-{conn.execute('SELECT count(*) FROM sessions').fetchone()[0]}".encode()
    return conn.execute(
        "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?) RETURNING id",
        (token, user_id, ts(days=-10), expires_at),
    ).fetchone()[0]


def add_enrollment_token(conn: Connection, expires_at: str) -> int:
    token = f"enroll-{expires_at}-{conn.execute('SELECT count(*) FROM enrollment_tokens').fetchone()[0]}"
    return conn.execute(
        "INSERT INTO enrollment_tokens (token_hash, created_at, expires_at) VALUES (?, ?, ?) RETURNING id",
        (token.encode(), ts(days=-10), expires_at),
    ).fetchone()[0]


def add_throttle(
    conn: Connection, username: str, last_failed_at: str, locked_until: str | None = None
) -> None:
    conn.execute(
        "INSERT INTO login_throttle (username, client, failures, first_failed_at, last_failed_at, "
        "locked_until, lockout_s) VALUES (?, '127.0.0.1', 5, ?, ?, ?, ?)",
        (username, last_failed_at, last_failed_at, locked_until, 3600 if locked_until else 0),
    )


def add_run(
    conn: Connection,
    status: str,
    *,
    created_at: str,
    ended_at: str | None = None,
    events: int = 3,
    line: str = "output line",
) -> int:
    run_id = conn.execute(
        "INSERT INTO runs (command, env, timeout_s, status, created_at, started_at, ended_at, last_seq) "
        "VALUES ('[\"true\"]', '{}', 60, ?, ?, ?, ?, ?) RETURNING id",
        (status, created_at, created_at if status != "queued" else None, ended_at, events),
    ).fetchone()[0]
    conn.executemany(
        "INSERT INTO run_events (run_id, seq, ts, kind, data) VALUES (?, ?, ?, 'stdout', ?)",
        ((run_id, seq, created_at, line) for seq in range(1, events + 1)),
    )
    return run_id


def ids(conn: Connection, table: str, column: str = "id") -> list:
    return [row[0] for row in conn.execute(f"SELECT {column} FROM {table} ORDER BY {column}")]


def event_counts(conn: Connection) -> dict[int, int]:
    return dict(conn.execute("SELECT run_id, count(*) FROM run_events GROUP BY run_id").fetchall())


@pytest.fixture(name="clock")
def _clock():
    """Virtual time running at real speed, so `fail_after` stays a real deadline, and jumping on demand.

    (An autojump clock would jump to the `fail_after` deadline whenever the test waits on a SQLite
    worker thread, since a thread is not a trio task.)
    """
    return trio.testing.MockClock(rate=1)


def wall_clock():
    """`now` for the loops: EPOCH when called first, then moving with trio's (mock) clock."""
    start = trio.current_time()
    return lambda: EPOCH + dt.timedelta(seconds=trio.current_time() - start)


async def next_interval(clock: trio.testing.MockClock, seconds: float) -> None:
    """Let the loop reach its sleep, then jump the clock to the end of that sleep."""
    await trio.testing.wait_all_tasks_blocked()
    clock.jump(seconds)
