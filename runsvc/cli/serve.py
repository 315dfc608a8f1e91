"""`runsvc serve`: run the server in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse

import trio

from ..config import SettingsError, prepare_data_dir
from ..log import configure_logging, get_logger
from ..store import SchemaError
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
    from ..server import run_until_signalled

    settings = settings_from_args(args, parser)
    try:
        prepare_data_dir(settings)
    except SettingsError as exc:
        usage_error(parser, str(exc))
    configure_logging(settings.log_level)
    try:
        trio.run(run_until_signalled, settings)
    except Exception as exc:
        kinds = (
            (SchemaError, "cannot open database"), (StartupError, "cannot start"), (OSError, "cannot start"),
        )
        for kind, what in kinds:
            found = find_exception(exc, kind)
            if found is not None:
                log.error(f"{what}: {found}")
                return 1
        raise
    return 0
