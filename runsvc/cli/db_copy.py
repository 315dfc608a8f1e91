"""`runsvc db copy-to URL`: move the data dir's SQLite database into an empty PostgreSQL database
(SPEC §16; the copy itself is store/copy.py).

The server must be stopped: the copy takes the data dir's lock, as `serve` does, so it refuses to start
while a server runs on the data dir and no server starts on it until the copy is done. A progress bar per
table (tqdm, on a terminal only) shows how far it is; at the end the rows of every table, counted on both
sides, are printed.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
from typing import Any

from ..config import Settings
from ..isolation import DataDirLock
from ..log import configure_logging
from .common import CliError, add_settings_flags, settings_from_args


def add_parser(actions: argparse._SubParsersAction) -> None:
    copy = actions.add_parser(
        "copy-to",
        help="copy the SQLite database into an empty PostgreSQL database",
        description="Copy every table of the data dir's SQLite database, ids and all, into an empty "
        "PostgreSQL database (its schema is created as a server would), in one transaction: a copy that "
        "fails leaves the target empty. The server must be stopped. Then start the server with "
        "--database-url URL.",
    )
    copy.add_argument(
        "url", metavar="URL",
        help="postgresql://user@host:port/dbname of an empty database; give the password in the "
        "PGPASSWORD environment variable or ~/.pgpass, not on the command line",
    )
    add_settings_flags(copy, ["data_dir"])
    copy.set_defaults(run=run)


class _Bars:
    """One tqdm bar per table, on standard error, drawn only when it is a terminal."""

    def __init__(self) -> None:
        self._bar: Any = None

    def table(self, name: str, rows: int) -> None:
        from tqdm import tqdm  # type: ignore[import-untyped]  # tqdm ships no type hints

        self.close()
        # The size from shutil: it falls back to $COLUMNS/$LINES or 80 x 24 where the terminal reports 0 x 0
        # (a pseudo-terminal nobody sized), where tqdm would draw nothing.
        size = shutil.get_terminal_size()
        self._bar = tqdm(total=rows, desc=f"{name:>18}", unit=" rows", disable=None,
                         file=sys.stderr, ncols=size.columns, nrows=size.lines)

    def advance(self, rows: int) -> None:
        self._bar.update(rows)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from ..accounts.first_admin import StartupError
    from ..store import DatabaseSettingError

    settings = settings_from_args(args, parser)
    configure_logging("warning")
    try:
        from ..store.pg_admin import display_url

        target_name = display_url(args.url)
    except DatabaseSettingError as exc:
        raise CliError(str(exc).replace("database_url", "URL"), status=2) from None
    path = settings.database_path
    if not path.is_file():
        raise CliError(f"no database at {path} (is --data-dir right?)")
    lock = DataDirLock(settings.data_dir)
    try:
        lock.acquire()
    except StartupError as exc:
        raise CliError(f"{exc}: stop the server before copying its database") from None
    try:
        result = _copy(settings, args.url, target_name)
    finally:
        lock.release()
    rows = [["TABLE", "SQLITE", "POSTGRESQL"]]
    rows += [[table.name, str(table.source), str(table.target)] for table in result.tables]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print(row[0].ljust(widths[0]), *(cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)),
              sep="  ")
    print(f"copied {result.rows} rows from {path} to {target_name}; every table's rows counted on both sides match")
    if result.nul_replaced:
        print(f"{result.nul_replaced} text values held NUL characters, which PostgreSQL cannot store: "
              "each was replaced by U+FFFD")
    return 0


def _copy(settings: Settings, url: str, target_name: str) -> Any:
    import psycopg

    from ..store import DatabaseSettingError, DatabaseUnreachable, SchemaError, StoreError
    from ..store.connections import connect as connect_sqlite
    from ..store.copy import CopyRefused, copy_database
    from ..store.postgres import connect

    bars = _Bars()
    try:
        source = connect_sqlite(settings.database_path)
        try:
            target = connect(url)
            try:
                return copy_database(source, target, bars)
            finally:
                bars.close()
                target.close()
        finally:
            source.close()
    except DatabaseSettingError as exc:
        raise CliError(str(exc).replace("database_url", "URL"), status=2) from None
    except (DatabaseUnreachable, CopyRefused) as exc:
        raise CliError(str(exc)) from None
    except SchemaError as exc:
        raise CliError(f"cannot copy: {exc}") from None
    except (StoreError, sqlite3.Error, psycopg.Error, OSError) as exc:
        line = " ".join(str(exc).split()) or type(exc).__name__
        raise CliError(f"copy failed, nothing was committed to {target_name}: {line}") from None
