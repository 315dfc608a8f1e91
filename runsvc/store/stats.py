"""Statistics for `runsvc db stats`, read on a reader connection of either dialect.

What an operator needs differs with the database: SQLite's are its file's figures (pages, free pages,
auto-vacuum); PostgreSQL's are the database's size, each table's size with its indexes, and what
autovacuum — which gives deleted rows' space back there — has done on the big tables. Both have the
schema version, the rows of every table (exact counts), runs by status and the oldest and newest run.
"""

from __future__ import annotations

import datetime as dt

import attrs

from ..timeutil import format_ts
from .dialect import SQLITE, Connection

VACUUM_TABLES = ("runs", "run_events")  # the tables retention deletes from: where dead rows pile up


@attrs.frozen
class RunSummary:
    """Rows every dialect reports: rows per table, runs by status, the oldest and newest run."""

    table_rows: dict[str, int]
    runs_by_status: dict[str, int]
    oldest_run: tuple[int, str] | None  # (id, created_at)
    newest_run: tuple[int, str] | None


@attrs.frozen
class DatabaseStats:
    """A SQLite database's figures."""

    schema_version: int
    page_size: int  # bytes
    page_count: int
    freelist_count: int  # free pages inside the file, reusable or reclaimable
    auto_vacuum: str
    table_rows: dict[str, int]
    runs_by_status: dict[str, int]
    oldest_run: tuple[int, str] | None  # (id, created_at)
    newest_run: tuple[int, str] | None


@attrs.frozen
class PgTableStats:
    name: str
    rows: int  # exact (count(*))
    total_bytes: int  # the table with its indexes and TOAST (pg_total_relation_size)
    dead_rows: int  # deleted or updated row versions not yet vacuumed (statistics: approximate)
    last_autovacuum: str | None  # RFC 3339, None: never
    last_vacuum: str | None  # a manual VACUUM
    autovacuum_count: int


@attrs.frozen
class PgDatabaseStats:
    """A PostgreSQL database's figures."""

    schema_version: int
    server_version: str
    database_bytes: int  # pg_database_size
    tables: tuple[PgTableStats, ...]
    runs_by_status: dict[str, int]
    oldest_run: tuple[int, str] | None
    newest_run: tuple[int, str] | None


_AUTO_VACUUM = {0: "none", 1: "full", 2: "incremental"}


def database_stats(conn: Connection) -> DatabaseStats | PgDatabaseStats:
    return _sqlite_stats(conn) if conn.dialect == SQLITE else _pg_stats(conn)


def _summary(conn: Connection, tables: list[str]) -> RunSummary:
    table_rows = {
        name: conn.execute(f'SELECT count(*) FROM "{name.replace(chr(34), chr(34) * 2)}"').fetchone()[0]
        for name in tables
    }
    by_status = {row[0]: row[1] for row in conn.execute("SELECT status, count(*) FROM runs GROUP BY status")}
    oldest = conn.execute("SELECT id, created_at FROM runs ORDER BY id LIMIT 1").fetchone()
    newest = conn.execute("SELECT id, created_at FROM runs ORDER BY id DESC LIMIT 1").fetchone()
    return RunSummary(
        table_rows, by_status, (oldest[0], oldest[1]) if oldest else None, (newest[0], newest[1]) if newest else None
    )


def _sqlite_stats(conn: Connection) -> DatabaseStats:
    def pragma(name: str) -> int:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]

    tables = [
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
    ]
    summary = _summary(conn, tables)
    return DatabaseStats(
        schema_version=pragma("user_version"),
        page_size=pragma("page_size"),
        page_count=pragma("page_count"),
        freelist_count=pragma("freelist_count"),
        auto_vacuum=_AUTO_VACUUM.get(pragma("auto_vacuum"), "unknown"),
        table_rows=summary.table_rows,
        runs_by_status=summary.runs_by_status,
        oldest_run=summary.oldest_run,
        newest_run=summary.newest_run,
    )


# Every table of the current schema but runsvc's own bookkeeping, with its size and vacuum statistics.
_PG_TABLES = (
    "SELECT c.relname, pg_total_relation_size(c.oid), coalesce(s.n_dead_tup, 0), s.last_autovacuum, "
    "s.last_vacuum, coalesce(s.autovacuum_count, 0) "
    "FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
    "LEFT JOIN pg_stat_user_tables AS s ON s.relid = c.oid "
    "WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname <> 'schema_version' "
    "ORDER BY c.relname"
)


def _pg_stats(conn: Connection) -> PgDatabaseStats:
    def when(moment: dt.datetime | None) -> str | None:
        return None if moment is None else format_ts(moment)

    listed = conn.execute(_PG_TABLES).fetchall()
    summary = _summary(conn, [row[0] for row in listed])
    tables = tuple(
        PgTableStats(name, summary.table_rows[name], size, dead, when(autovacuum), when(vacuum), count)
        for name, size, dead, autovacuum, vacuum, count in listed
    )
    return PgDatabaseStats(
        schema_version=conn.execute("SELECT version FROM schema_version").fetchone()[0],
        server_version=conn.execute("SHOW server_version").fetchone()[0],
        database_bytes=conn.execute("SELECT pg_database_size(current_database())").fetchone()[0],
        tables=tables,
        runs_by_status=summary.runs_by_status,
        oldest_run=summary.oldest_run,
        newest_run=summary.newest_run,
    )
