"""Opening the database: the file made owner-only, WAL mode and migrations on the writer, reader
connections, and a count of every statement (with those made on the Trio thread, which must stay 0)."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import attrs

from .migrations import migrate


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


class _CountingConnection(sqlite3.Connection):
    """A connection that counts its execute/executemany/executescript calls, and those made on the Trio
    thread (which must stay 0). One count per call, not per statement run: an executemany of 10,000
    rows is one. (sqlite3's set_trace_callback counted every row of an executemany, and calling back
    into Python once per row cost a quarter to 40 % of insert throughput.)"""

    counter: StatementCounter

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        self.counter.count()
        return super().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
        self.counter.count()
        return super().executemany(sql, parameters)

    def executescript(self, sql_script: str, /) -> sqlite3.Cursor:
        self.counter.count()
        return super().executescript(sql_script)


def rollback_quietly(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # SQLite rolls back by itself when it cannot (e.g. after an I/O error)


def close_all(connections: list[sqlite3.Connection]) -> None:
    for conn in connections:
        conn.close()


def _connect(path: Path, busy_timeout_ms: int, counter: StatementCounter) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path,
        isolation_level=None,
        check_same_thread=False,
        cached_statements=256,
        factory=_CountingConnection,
    )
    assert isinstance(conn, _CountingConnection)
    conn.counter = counter
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def open_connections(
    path: Path, readers: int, busy_timeout_ms: int, trio_thread: int
) -> tuple[list[sqlite3.Connection], list[StatementCounter]]:
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
