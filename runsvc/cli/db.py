"""`runsvc db stats` and `runsvc db prune`: inspect and prune the database of a data dir.

Both work on the file directly, with or without a server running on it (SQLite in WAL mode lets them
share it). Neither creates a database: a data dir without one is an error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sqlite3
import sys
from pathlib import Path

import trio

from ..config import Settings
from ..log import configure_logging
from ..maintenance import PruneResult, prune_pass, retention_cutoff
from ..store import SchemaError, open_store
from ..store.maintenance import DatabaseStats, PrunePreview, count_expired, database_stats
from ..timeutil import utcnow
from .common import add_settings_flags, find_exception, settings_from_args

_DB_SETTINGS = ["data_dir"]
_PRUNE_SETTINGS = ["data_dir", "retention_days", "prune_batch_events"]


class _DatabaseError(Exception):
    """Cannot use the database: one line for the user, exit status 1."""


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "db", help="inspect and prune the database", description="Inspect and prune the database."
    )
    actions = parser.add_subparsers(dest="db_command", metavar="ACTION", required=True)

    stats = actions.add_parser(
        "stats",
        help="sizes, row counts, oldest and newest run, free pages, schema version",
        description="Show the database's file and WAL sizes, rows per table, oldest and newest run, "
        "page size, free pages and schema version.",
    )
    add_settings_flags(stats, _DB_SETTINGS)
    stats.set_defaults(run=_run_stats)

    prune = actions.add_parser(
        "prune",
        help="delete finished runs older than the retention window",
        description="Delete finished runs that ended more than retention_days ago, with their events, "
        "in bounded batches, then give the space back to the file system. With --dry-run, only "
        "count what would be deleted.",
    )
    prune.add_argument("--dry-run", action="store_true", help="count what would be deleted; change nothing")
    add_settings_flags(prune, _PRUNE_SETTINGS)
    prune.set_defaults(run=_run_prune)


def _sizes(path: Path) -> tuple[int, int]:
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size, wal.stat().st_size if wal.exists() else 0


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit} ({size} bytes)"
        value /= 1024
    raise AssertionError("unreachable")


def _run_db(settings: Settings, fn, *args):
    """trio.run `fn(store, *args)` on the data dir's database; errors become _DatabaseError."""
    path = settings.database_path
    if not path.is_file():
        raise _DatabaseError(f"no database at {path} (is --data-dir right?)")

    async def main():
        async with open_store(path, readers=1) as store:
            return await fn(store, *args)

    try:
        return trio.run(main)
    except Exception as exc:
        for kind in (SchemaError, sqlite3.Error, OSError):
            found = find_exception(exc, kind)
            if found is not None:
                raise _DatabaseError(f"cannot use database {path}: {found}") from None
        raise


def _fail(message: str) -> int:
    print(f"runsvc: error: {message}", file=sys.stderr)
    return 1


def _run_stats(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    settings = settings_from_args(args, parser)
    configure_logging("warning")
    path = settings.database_path
    try:
        # Sizes first: opening the store may add a WAL, and closing it checkpoints the WAL away.
        file_size, wal_size = _sizes(path) if path.is_file() else (0, 0)
        stats = _run_db(settings, _read_stats)
    except _DatabaseError as exc:
        return _fail(str(exc))
    _print_stats(path, file_size, wal_size, stats)
    return 0


async def _read_stats(store) -> DatabaseStats:
    return await store.read(database_stats)


def _print_stats(path: Path, file_size: int, wal_size: int, stats: DatabaseStats) -> None:
    def run_text(run: tuple[int, str] | None) -> str:
        return "none" if run is None else f"#{run[0]} created {run[1]}"

    lines = [
        f"database: {path}",
        f"file size: {_human(file_size)}",
        f"wal size: {_human(wal_size)}",
        f"schema version: {stats.schema_version}",
        f"page size: {stats.page_size} bytes",
        f"pages: {stats.page_count}",
        f"free pages: {stats.freelist_count} ({_human(stats.freelist_count * stats.page_size)})",
        f"auto vacuum: {stats.auto_vacuum}",
        "rows:",
        *(f"  {name}: {count}" for name, count in stats.table_rows.items()),
        "runs by status: "
        + (", ".join(f"{status}={count}" for status, count in sorted(stats.runs_by_status.items())) or "none"),
        f"oldest run: {run_text(stats.oldest_run)}",
        f"newest run: {run_text(stats.newest_run)}",
    ]
    print("\n".join(lines))


def _run_prune(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    settings = settings_from_args(args, parser)
    configure_logging("warning")
    path = settings.database_path
    moment = utcnow()
    cutoff = retention_cutoff(settings, moment)
    try:
        if cutoff is None:
            if not path.is_file():
                raise _DatabaseError(f"no database at {path} (is --data-dir right?)")
            print("retention_days is 0: finished runs are kept forever; nothing to prune")
            return 0
        if args.dry_run:
            preview = _run_db(settings, _preview, cutoff)
        else:
            before = sum(_sizes(path)) if path.is_file() else 0
            result = _run_db(settings, _prune, settings, moment)
    except _DatabaseError as exc:
        return _fail(str(exc))
    window = f"runs that ended before {cutoff} (retention {settings.retention_days:g} days)"
    if args.dry_run:
        print(f"dry run: would delete {preview.runs} runs and {preview.events} events: {window}")
        return 0
    after = sum(_sizes(path))
    print(
        f"deleted {result.runs} runs and {result.events} events in {result.batches} batches: {window}\n"
        f"freed {result.pages_freed} pages; database and WAL: {_human(before)} -> {_human(after)}"
    )
    return 0


async def _preview(store, cutoff: str) -> PrunePreview:
    return await store.read(count_expired, cutoff)


async def _prune(store, settings: Settings, moment: dt.datetime) -> PruneResult:
    return await prune_pass(store, settings, now=lambda: moment)
