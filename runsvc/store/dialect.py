"""The store's two SQL dialects, SQLite and PostgreSQL, and what the rest of the store may assume of a
connection in either.

Business logic is written once (store/runs.py, jobs.py, …) against `Connection`. Most SQL is written
once too, in SQLite's spelling with `?` or `:name` placeholders; the PostgreSQL connection translates
the placeholders (postgres.py). A statement whose SQL must differ is a `Variants`, both spellings side
by side where it is used, so a reader sees both; each connection picks its own. PostgreSQL variants are
written in psycopg's own placeholder style (`%s`, `%(name)s`) and are not translated.

Data is kept alike on both so the code reading it is one: timestamps are fixed-width RFC 3339 UTC
text, flags are integers 0/1, nested objects are JSON text, case-insensitive names are COLLATE NOCASE
on SQLite and citext on PostgreSQL.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import attrs

SQLITE = "sqlite"
POSTGRESQL = "postgresql"


@attrs.frozen
class Variants:
    """One statement in each dialect."""

    sqlite: str
    postgresql: str


class Row(Protocol):
    """A result row: by position and by column name, like sqlite3.Row."""

    def __getitem__(self, key: int | str, /) -> Any: ...
    def __iter__(self) -> Iterator[Any]: ...
    def __len__(self) -> int: ...
    def keys(self) -> list[str]: ...


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...
    def close(self) -> None: ...


class Connection(Protocol):
    """What store functions use of a connection: sqlite3's execute/executemany, `in_transaction`, and
    `dialect` (SQLITE or POSTGRESQL) for the few places whose logic differs, not just their SQL."""

    dialect: str

    @property
    def in_transaction(self) -> bool: ...
    def execute(self, sql: str | Variants, parameters: Any = (), /) -> Any: ...
    def executemany(self, sql: str | Variants, parameters: Sequence[Any], /) -> Any: ...


# A write transaction: SQLite takes the write lock at once (a deferred one could fail to upgrade later);
# PostgreSQL locks rows as it goes.
BEGIN_WRITE = Variants(sqlite="BEGIN IMMEDIATE", postgresql="BEGIN")
# Several reads that must see one snapshot: a SQLite read transaction is one; PostgreSQL's default, READ
# COMMITTED, takes a new snapshot per statement.
BEGIN_SNAPSHOT = Variants(sqlite="BEGIN", postgresql="BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")


def is_unique_violation(exc: BaseException) -> bool:
    """A UNIQUE constraint refused the write (a name taken), in either dialect."""
    if isinstance(exc, sqlite3.IntegrityError):
        return "UNIQUE constraint failed" in str(exc)
    return getattr(exc, "sqlstate", None) == "23505"  # psycopg's errors carry PostgreSQL's SQLSTATE


def database_errors() -> tuple[type[BaseException], ...]:
    """The exception classes of the database drivers in use, for `except database_errors():`. psycopg is
    only imported by a PostgreSQL store (it costs 0.2 s), so a SQLite process never pays for it."""
    psycopg = sys.modules.get("psycopg")
    return (sqlite3.Error,) if psycopg is None else (sqlite3.Error, psycopg.Error)
