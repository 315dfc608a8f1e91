"""`runsvc db copy-to`: the whole SQLite database of a data dir into an empty PostgreSQL database.

Every table is copied with its ids, parents before children (the foreign keys hold at every step), in
ONE PostgreSQL transaction: a copy that fails half way (a full disk, a lost connection, Ctrl-C) leaves
the target as empty as it was, ready for another try. Rows are read from SQLite `BATCH_ROWS` at a time
inside one read transaction (one consistent snapshot) and streamed into PostgreSQL's COPY FROM STDIN
(psycopg's `Cursor.copy`), so memory stays bounded however many millions of events there are. Then each
identity sequence is set past the highest id SQLite ever gave out (its AUTOINCREMENT high-water mark in
sqlite_sequence, not only the highest id left: a deleted run's id is never reused), and the rows of
every table are counted on both sides before the commit.

The target must be empty: runsvc's tables without a row (a server started on it once), or no tables at
all (the schema is created here, as a server would). Any table of something else is refused, and so is
any row in a runsvc table. The tables are locked for the copy, so two copies into one database cannot
both pass that check.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Protocol

import attrs
import psycopg
from psycopg import sql

from .errors import StoreError
from .migrations import migrate as migrate_sqlite
from .migrations_pg import migrate as migrate_pg

# Every table of schema version 7, parents before children. A table missing here would be lost by the
# copy, so a source or target with any other table is refused (tests/store/test_copy.py checks the list
# against schema.sql).
TABLES = (
    "users", "sessions", "login_throttle", "api_tokens", "enrollment_tokens", "agents", "jobs", "job_fires",
    "runs", "run_events", "secrets", "webhooks", "webhook_deliveries",
)
# Tables with an identity id on PostgreSQL (the rest have natural keys).
IDENTITY_TABLES = (
    "users", "sessions", "api_tokens", "enrollment_tokens", "agents", "jobs", "runs", "webhooks",
    "webhook_deliveries",
)
PG_BOOKKEEPING = ("schema_version",)  # the target's own tables that are not copied
BATCH_ROWS = 5_000  # rows read from SQLite and written to COPY per step: memory stays bounded
REPLACEMENT = "\ufffd"  # what a NUL character becomes: PostgreSQL's text cannot hold NUL


class CopyRefused(StoreError):
    """The copy cannot start (a target that is not empty, an unknown table): one line for the user."""


class Progress(Protocol):
    """What the copy reports as it goes (the CLI draws a progress bar)."""

    def table(self, name: str, rows: int) -> None:
        """Copying `name` starts; it has `rows` rows."""

    def advance(self, rows: int) -> None:
        """`rows` more rows of the current table were sent."""


@attrs.frozen
class TableCount:
    """One table's rows in the source and, after the copy, in the target."""

    name: str
    source: int
    target: int


@attrs.frozen
class CopyResult:
    tables: tuple[TableCount, ...]
    nul_replaced: int  # text values that held NUL characters (each now U+FFFD)

    @property
    def rows(self) -> int:
        return sum(table.target for table in self.tables)


def copy_database(source: sqlite3.Connection, target: psycopg.Connection[Any], progress: Progress) -> CopyResult:
    """Copy every table of `source` (a SQLite connection in autocommit mode; upgraded to the current
    schema first, as a server would) into the PostgreSQL database behind `target` (autocommit mode).

    Raises CopyRefused when the target is not empty or either side has a table this copy does not know.
    """
    migrate_sqlite(source)
    _check_tables("the SQLite database", _sqlite_tables(source), ())
    _check_tables("the target database", _pg_tables(target), PG_BOOKKEEPING)
    migrate_pg(target)  # an empty database gets runsvc's schema; an older runsvc schema is upgraded
    source.row_factory = None  # plain tuples: what COPY's write_row takes, without a conversion per row
    source.execute("BEGIN")  # one snapshot of every table, even if a `runsvc user` command writes meanwhile
    try:
        with target.transaction():
            return _copy_locked(source, target, progress)
    finally:
        if source.in_transaction:  # SQLite may have ended it itself after an error
            source.execute("ROLLBACK")


def _copy_locked(source: sqlite3.Connection, target: psycopg.Connection[Any], progress: Progress) -> CopyResult:
    # EXCLUSIVE: nobody else writes these tables until the commit (a second copy waits here, then finds
    # them full); reads go on.
    target.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(sql.SQL(", ").join(map(sql.Identifier, TABLES))))
    for name in TABLES:
        if _scalar(target, sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(name))):
            raise CopyRefused(f"the target database is not empty (table {name} has rows); copy into an empty one")
    counts = {name: source.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for name in TABLES}
    nul_replaced = 0
    for name in TABLES:
        progress.table(name, counts[name])
        nul_replaced += _copy_table(source, target, name, progress)
    _set_sequences(source, target)
    copied = tuple(
        TableCount(name, counts[name], _scalar(target, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name))))
        for name in TABLES
    )
    wrong = [table for table in copied if table.source != table.target]
    if wrong:  # rolled back by the transaction around us
        raise StoreError("row counts differ after the copy: " + ", ".join(
            f"{table.name} {table.source} in SQLite, {table.target} in PostgreSQL" for table in wrong))
    return CopyResult(copied, nul_replaced)


def _copy_table(source: sqlite3.Connection, target: psycopg.Connection[Any], name: str, progress: Progress) -> int:
    """Stream one table through COPY; return how many text values had their NUL characters replaced."""
    columns = _columns(source, target, name)
    text_columns = [i for i, (_column, kind) in enumerate(columns) if kind == "TEXT"]
    names = [column for column, _kind in columns]
    select = "SELECT {} FROM {}".format(", ".join(f'"{column}"' for column in names), name)
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(name), sql.SQL(", ").join(map(sql.Identifier, names))
    )
    replaced = 0
    rows = source.execute(select)
    with target.cursor() as cursor, cursor.copy(statement) as copy:
        while batch := rows.fetchmany(BATCH_ROWS):
            for row in batch:
                if any(isinstance(row[i], str) and "\0" in row[i] for i in text_columns):
                    row, count = _without_nul(row, text_columns)
                    replaced += count
                copy.write_row(row)
            progress.advance(len(batch))
    return replaced


def _without_nul(row: Sequence[Any], text_columns: list[int]) -> tuple[tuple[Any, ...], int]:
    values = list(row)
    count = 0
    for i in text_columns:
        if isinstance(values[i], str) and "\0" in values[i]:
            values[i] = values[i].replace("\0", REPLACEMENT)
            count += 1
    return tuple(values), count


def _columns(source: sqlite3.Connection, target: psycopg.Connection[Any], name: str) -> list[tuple[str, str]]:
    """The table's columns and their SQLite types; the same column names must exist on both sides."""
    columns = [(row[1], str(row[2]).upper()) for row in source.execute(f"PRAGMA table_info({name})")]
    target_columns = {
        row[0] for row in target.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s", (name,))
    }
    if {column for column, _kind in columns} != target_columns:
        raise CopyRefused(f"table {name} has other columns in SQLite than in PostgreSQL; not the same schema")
    return columns


def _set_sequences(source: sqlite3.Connection, target: psycopg.Connection[Any]) -> None:
    """Each identity continues after the highest id SQLite used: the highest left in the table, or
    the AUTOINCREMENT high-water mark of a table whose newest rows were deleted (runs, jobs, …)."""
    high_water = dict(source.execute("SELECT name, seq FROM sqlite_sequence").fetchall())
    for name in IDENTITY_TABLES:
        highest = max(source.execute(f"SELECT coalesce(max(id), 0) FROM {name}").fetchone()[0],
                      high_water.get(name, 0))
        # setval(…, n, true): the next id is n + 1; (…, 1, false): the next id is 1.
        target.execute(
            "SELECT setval(pg_get_serial_sequence(%s, 'id'), %s::bigint, %s::integer <> 0)",
            (name, max(highest, 1), int(highest > 0)),
        )


def _scalar(target: psycopg.Connection[Any], query: sql.Composed) -> Any:
    row = target.execute(query).fetchone()
    assert row is not None  # an aggregate or EXISTS always has its one row
    return row[0]


def _sqlite_tables(source: sqlite3.Connection) -> set[str]:
    return {
        row[0] for row in source.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
    }


def _pg_tables(target: psycopg.Connection[Any]) -> set[str]:
    return {
        row[0] for row in target.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")
    }


def _check_tables(where: str, found: set[str], bookkeeping: tuple[str, ...]) -> None:
    unknown = sorted(found - set(TABLES) - set(bookkeeping))
    if unknown:
        raise CopyRefused(f"{where} has tables that are not runsvc's: {', '.join(unknown)}")
