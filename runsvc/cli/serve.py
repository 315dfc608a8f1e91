"""`runsvc serve`: run the server in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse

import trio

from ..config import SettingsError, prepare_data_dir
from ..log import configure_logging, get_logger
from ..store import DatabaseSettingError, DatabaseUnreachable, SchemaError, StoreError
from ..store.dialect import database_errors
from .common import add_settings_flags, find_exception, settings_from_args, usage_error

log = get_logger("runsvc.cli")


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "serve",
        help="run the server",
        description="Run the server. Settings come from flags, then RUNSVC_* environment variables, "
        "then the --config TOML file, then the defaults shown here.",
    )
    add_settings_flags(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from ..accounts.first_admin import StartupError
    from ..secrets.keyfile import MissingKeyFile, read_key_file
    from ..server import run_until_signalled

    settings = settings_from_args(args, parser)
    try:
        prepare_data_dir(settings)
    except SettingsError as exc:
        usage_error(parser, str(exc))
    configure_logging(settings.log_level)
    try:
        read_key_file(settings.secret_key_path)  # a key file that exists but is unusable: a bad setting
    except SettingsError as exc:
        log.error(f"cannot start: {exc}")
        return 2
    try:
        trio.run(run_until_signalled, settings)
    except Exception as exc:
        # Startup failures (and the rare fatal fault after it) are one line, never a traceback.
        # A setting that cannot work exits 2 (as a bad flag does); a database not reachable now exits 1.
        database = "PostgreSQL" if settings.database_url else f"database {settings.database_path}"
        kinds: tuple[tuple[type[BaseException], str, int], ...] = (
            (StartupError, "cannot start", 1), (SettingsError, "cannot start", 2), (MissingKeyFile, "cannot start", 1),
            (DatabaseSettingError, "cannot start", 2), (DatabaseUnreachable, "cannot start", 1),
            (SchemaError, "cannot open database", 1),
            *((kind, f"cannot use {database}", 1) for kind in database_errors()),
            (StoreError, "cannot use database", 1), (OSError, "cannot start", 1),
        )
        for kind, what, status in kinds:
            found = find_exception(exc, kind)
            if found is not None:
                log.error(f"{what}: {_one_line(found)}")
                return status
        raise
    return 0


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__
