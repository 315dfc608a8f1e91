"""Opening a SQLite database: the file made owner-only, WAL mode and migrations on the writer, reader
connections, and a count of every statement (with those made on the Trio thread, which must stay 0).
`SqliteWriter` and `SqliteReader` are what the store's writer task and reads use of them (postgres.py
has the same two for PostgreSQL)."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import attrs

from . import faults
from .dialect import SQLITE, Connection, Variants
from .migrations import migrate

T = TypeVar("T")
PROGRESS_STEPS = 10_000  # SQLite VM steps between two checks of a read's time limit


@attrs.define
class StatementCounter:
    trio_thread: int
    statements: int = 0
    on_trio_thread: int = 0

    def count(self) -> None:
        # One connection is used by one thread at a time, so plain increments are safe.
        self.statements += 1
        if threading.get_ident() == self.trio_thread:
            self.on_trio_thread += 1


class SqliteConnection(sqlite3.Connection):
    """A connection that counts its execute/executemany/executescript calls, and those made on the Trio
    thread (which must stay 0). One count per call, not per statement run: an executemany of 10,000
    rows is one. (sqlite3's set_trace_callback counted every row of an executemany, and calling back
    into Python once per row cost a quarter to 40 % of insert throughput.)"""

    counter: StatementCounter
    dialect = SQLITE

    def execute(self, sql: str | Variants, parameters: Any = (), /) -> sqlite3.Cursor:
        self.counter.count()
        return super().execute(sql.sqlite if isinstance(sql, Variants) else sql, parameters)

    def executemany(self, sql: str | Variants, parameters: Any, /) -> sqlite3.Cursor:
        self.counter.count()
        return super().executemany(sql.sqlite if isinstance(sql, Variants) else sql, parameters)

    def executescript(self, sql_script: str, /) -> sqlite3.Cursor:
        self.counter.count()
        return super().executescript(sql_script)


def rollback_quietly(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # SQLite rolls back by itself when it cannot (e.g. after an I/O error)


def _connect(path: Path, busy_timeout_ms: int, counter: StatementCounter) -> SqliteConnection:
    conn = sqlite3.connect(
        path,
        isolation_level=None,
        check_same_thread=False,
        cached_statements=256,
        factory=SqliteConnection,
    )
    assert isinstance(conn, SqliteConnection)
    conn.counter = counter
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def open_connections(
    path: Path, readers: int, busy_timeout_ms: int, trio_thread: int
) -> tuple[list[SqliteConnection], list[StatementCounter]]:
    """Worker thread: the writer (WAL mode, migrated) followed by `readers` reader connections."""
    counters = [StatementCounter(trio_thread) for _ in range(readers + 1)]
    writer = _connect(path, busy_timeout_ms, counters[0])
    try:
        # Only takes effect on a new, empty file, and must precede WAL mode, which writes the header.
        writer.execute("PRAGMA auto_vacuum = INCREMENTAL")
        mode = writer.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise sqlite3.OperationalError(f"cannot switch {path} to WAL mode (got {mode})")
        migrate(writer)
        conns = [writer] + [_connect(path, busy_timeout_ms, c) for c in counters[1:]]
    except BaseException:
        writer.close()
        raise
    return conns, counters


def owner_only(path: Path) -> None:
    """Create the database file mode 0600 if missing; narrow it (and its -wal and -shm) to 0600."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
    for suffix in ("", "-wal", "-shm"):
        try:
            os.chmod(f"{path}{suffix}", 0o600)
        except FileNotFoundError:
            pass


class SqliteWriter:
    """The writer connection as the store's writer task uses it (see writer.py's WriterConnection)."""

    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)

    def __init__(self, conn: SqliteConnection):
        self.conn = conn

    def connection(self) -> SqliteConnection:
        return self.conn

    def rollback_quietly(self) -> None:
        rollback_quietly(self.conn)

    def probe(self) -> None:
        """A write transaction that changes nothing visible (it rewrites the schema cookie's neighbour,
        user_version, with its own value): does the file take writes again?"""
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            conn.execute(f"PRAGMA user_version = {int(version)}")
            conn.execute("COMMIT")
        finally:
            rollback_quietly(conn)

    def is_transient(self, exc: BaseException) -> bool:
        return faults.is_transient(exc)

    def describe(self, exc: BaseException) -> str:
        return faults.describe(exc)

    def interrupt(self) -> None:
        self.conn.interrupt()

    def close(self) -> None:
        self.conn.close()

    def commit_token(self, conn: Connection) -> None:
        """None: a COMMIT is a call into this process, it either returns or raises (writer.py)."""
        return None

    def committed(self, token: Any) -> bool:
        raise AssertionError("SQLite has no transactions in doubt")


class SqliteReader:
    """A reader connection whose reads are interrupted past their time limit by SQLite's progress
    handler, as Datasette does, or at once when the store closes."""

    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self._stopped = False  # the store is closing: every read of this connection stops at once
        self._deadline = float("inf")
        conn.set_progress_handler(self._over_time, PROGRESS_STEPS)

    def _over_time(self) -> int:
        return int(self._stopped or time.monotonic() >= self._deadline)

    def run(self, fn: Callable[..., T], args: tuple[Any, ...], timeout_s: float) -> T:
        """Worker thread: `fn(conn, *args)`; a read transaction it leaves open (an error) is ended."""
        self._deadline = time.monotonic() + timeout_s
        try:
            return fn(self.conn, *args)
        finally:
            if self.conn.in_transaction:
                self.conn.rollback()

    def timed_out(self, exc: BaseException) -> bool:
        return time.monotonic() >= self._deadline

    def is_transient(self, exc: BaseException) -> bool:
        return faults.is_transient(exc)

    def describe(self, exc: BaseException) -> str:
        return faults.describe(exc)

    def interrupt(self) -> None:
        self._stopped = True
        self.conn.interrupt()

    def close(self) -> None:
        self.conn.close()


def connect(path: Path | str, busy_timeout_ms: int = 5000) -> SqliteConnection:
    """One connection configured as the store's are, outside any store (CLI tools, tests): autocommit,
    rows by name, Variants resolved to their SQLite spelling, statements counted (from any thread)."""
    return _connect(Path(path), busy_timeout_ms, StatementCounter(trio_thread=-1))
