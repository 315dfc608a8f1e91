"""`runsvc db stats`, `runsvc db prune` and `runsvc db copy-to`: inspect, prune and move the database.

`stats` and `prune` work on the database the settings name — the data dir's SQLite file, or PostgreSQL
with `database_url` — with or without a server running on it (SQLite in WAL mode lets them share the
file; PostgreSQL is made for it). Neither creates a database: a data dir without one, or a PostgreSQL
database without runsvc's schema, is an error. `copy-to` is in db_copy.py.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import trio

from ..config import Settings
from ..log import configure_logging
from ..maintenance import PruneResult, prune_pass, retention_cutoff
from ..store import DatabaseSettingError, DatabaseUnreachable, SchemaError, StoreError, open_store
from ..store.dialect import database_errors
from ..store.maintenance import PrunePreview, count_expired
from ..store.stats import DatabaseStats, PgDatabaseStats, database_stats
from ..timeutil import utcnow
from . import db_copy
from .common import (
    CliError,
    add_settings_flags,
    database_name,
    find_exception,
    one_line,
    require_database,
    settings_from_args,
)

_DB_SETTINGS = ["data_dir", "database_url"]
_PRUNE_SETTINGS = ["data_dir", "database_url", "retention_days", "prune_batch_events"]


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "db", help="inspect, prune and move the database",
        description="Inspect, prune and move the database.",
    )
    actions = parser.add_subparsers(dest="db_command", metavar="ACTION", required=True)

    stats = actions.add_parser(
        "stats",
        help="sizes, row counts, oldest and newest run, free pages or dead rows, schema version",
        description="Show the database's sizes, rows per table, runs by status, oldest and newest run and "
        "schema version; for SQLite also its file and WAL sizes, page size and free pages, for PostgreSQL "
        "each table's size and what autovacuum has done on the big tables.",
    )
    add_settings_flags(stats, _DB_SETTINGS)
    stats.set_defaults(run=_run_stats)

    prune = actions.add_parser(
        "prune",
        help="delete finished runs older than the retention window",
        description="Delete finished runs that ended more than retention_days ago, with their events, "
        "in bounded batches, then (SQLite) give the space back to the file system; on PostgreSQL "
        "autovacuum makes the space reusable. With --dry-run, only count what would be deleted.",
    )
    prune.add_argument("--dry-run", action="store_true", help="count what would be deleted; change nothing")
    add_settings_flags(prune, _PRUNE_SETTINGS)
    prune.set_defaults(run=_run_prune)

    db_copy.add_parser(actions)


def _sizes(path: Path) -> tuple[int, int]:
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size, wal.stat().st_size if wal.exists() else 0


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit} ({size} bytes)"
        value /= 1024
    raise AssertionError("unreachable")


def _run_db(settings: Settings, fn, *args):
    """trio.run `fn(store, *args)` on the settings' database; errors become one-line CliErrors."""
    require_database(settings, "is --data-dir right?")

    async def main():
        async with open_store(settings.database_path, database_url=settings.database_url, readers=1) as store:
            return await fn(store, *args)

    try:
        return trio.run(main)
    except Exception as exc:
        statuses: tuple[tuple[type[Exception], int], ...] = ((DatabaseSettingError, 2), (DatabaseUnreachable, 1))
        for kind, status in statuses:
            found = find_exception(exc, kind)
            if found is not None:
                raise CliError(one_line(found), status=status) from None
        # StoreError last: a read past the time limit, the database unavailable (all one line too).
        failures: tuple[type[BaseException], ...] = (SchemaError, *database_errors(), OSError, StoreError)
        for failure in failures:
            cause = find_exception(exc, failure)
            if cause is not None:
                text = one_line(cause) if settings.database_url else str(cause)  # SQLite's, as it always was
                raise CliError(f"cannot use database {database_name(settings)}: {text}") from None
        raise


def _run_stats(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    settings = settings_from_args(args, parser)
    configure_logging("warning")
    path = settings.database_path
    # Sizes first: opening the store may add a WAL, and closing it checkpoints the WAL away.
    file_size, wal_size = _sizes(path) if not settings.database_url and path.is_file() else (0, 0)
    stats = _run_db(settings, _read_stats)
    if isinstance(stats, PgDatabaseStats):
        _print_pg_stats(database_name(settings), stats)
    else:
        _print_stats(path, file_size, wal_size, stats)
    return 0


async def _read_stats(store) -> DatabaseStats | PgDatabaseStats:
    return await store.read(database_stats)


def _run_text(run: tuple[int, str] | None) -> str:
    return "none" if run is None else f"#{run[0]} created {run[1]}"


def _status_text(by_status: dict[str, int]) -> str:
    return "runs by status: " + (
        ", ".join(f"{status}={count}" for status, count in sorted(by_status.items())) or "none"
    )


def _print_stats(path: Path, file_size: int, wal_size: int, stats: DatabaseStats) -> None:
    lines = [
        f"database: {path}",
        f"file size: {human(file_size)}",
        f"wal size: {human(wal_size)}",
        f"schema version: {stats.schema_version}",
        f"page size: {stats.page_size} bytes",
        f"pages: {stats.page_count}",
        f"free pages: {stats.freelist_count} ({human(stats.freelist_count * stats.page_size)})",
        f"auto vacuum: {stats.auto_vacuum}",
        "rows:",
        *(f"  {name}: {count}" for name, count in stats.table_rows.items()),
        _status_text(stats.runs_by_status),
        f"oldest run: {_run_text(stats.oldest_run)}",
        f"newest run: {_run_text(stats.newest_run)}",
    ]
    print("\n".join(lines))


def _print_pg_stats(name: str, stats: PgDatabaseStats) -> None:
    from ..store.stats import VACUUM_TABLES

    def when(moment: str | None) -> str:
        return moment or "never"

    lines = [
        f"database: {name}",
        f"server: PostgreSQL {stats.server_version}",
        f"database size: {human(stats.database_bytes)}",
        f"schema version: {stats.schema_version}",
        "rows (exact) and size with indexes:",
        *(f"  {table.name}: {table.rows} rows, {human(table.total_bytes)}" for table in stats.tables),
        _status_text(stats.runs_by_status),
        f"oldest run: {_run_text(stats.oldest_run)}",
        f"newest run: {_run_text(stats.newest_run)}",
        "vacuum (PostgreSQL's autovacuum makes deleted rows' space reusable):",
        *(
            f"  {table.name}: {table.dead_rows} dead rows, last autovacuum {when(table.last_autovacuum)} "
            f"({table.autovacuum_count} so far), last manual vacuum {when(table.last_vacuum)}"
            for table in stats.tables if table.name in VACUUM_TABLES
        ),
    ]
    print("\n".join(lines))


def _run_prune(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    settings = settings_from_args(args, parser)
    configure_logging("warning")
    path = settings.database_path
    sqlite = not settings.database_url
    moment = utcnow()
    cutoff = retention_cutoff(settings, moment)
    if cutoff is None:
        require_database(settings, "is --data-dir right?")
        print("retention_days is 0: finished runs are kept forever; nothing to prune")
        return 0
    window = f"runs that ended before {cutoff} (retention {settings.retention_days:g} days)"
    if args.dry_run:
        preview = _run_db(settings, _preview, cutoff)
        print(f"dry run: would delete {preview.runs} runs and {preview.events} events: {window}")
        return 0
    before = sum(_sizes(path)) if sqlite and path.is_file() else 0
    result = _run_db(settings, _prune, settings, moment)
    deleted = f"deleted {result.runs} runs and {result.events} events in {result.batches} batches: {window}"
    if sqlite:
        after = sum(_sizes(path))
        print(f"{deleted}\nfreed {result.pages_freed} pages; database and WAL: {human(before)} -> {human(after)}")
    else:
        print(f"{deleted}\nPostgreSQL's autovacuum makes their space reusable (see `runsvc db stats`)")
    return 0


async def _preview(store, cutoff: str) -> PrunePreview:
    return await store.read(count_expired, cutoff)


async def _prune(store, settings: Settings, moment: dt.datetime) -> PruneResult:
    return await prune_pass(store, settings, now=lambda: moment)
