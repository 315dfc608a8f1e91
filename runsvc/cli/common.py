"""Helpers shared by subcommands: settings flags, errors out of trio.run."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from ..config import (
    SETTINGS_FIELDS,
    Settings,
    SettingsError,
    default_value,
    env_name,
    flag_name,
    load_settings,
)
from ..store import DatabaseSettingError, DatabaseUnreachable
from ..store.dialect import database_errors

E = TypeVar("E", bound=BaseException)


class CliError(Exception):
    """A failure to report as one line and a non-zero exit status (default 1)."""

    def __init__(self, message: str, status: int = 1):
        super().__init__(message)
        self.status = status


def add_settings_flags(parser: argparse.ArgumentParser, names: list[str] | None = None) -> None:
    """One flag per setting (or per setting in `names`), with its default and environment variable."""
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML file of settings")
    for field in SETTINGS_FIELDS:
        if names is not None and field.name not in names:
            continue
        text, default = _help_and_default(field.metadata["help"], default_value(field.name))
        parser.add_argument(
            flag_name(field.name),
            dest=f"setting_{field.name}",
            metavar=field.name.split("_")[-1].upper(),
            help=f"{text} (default: {default}; env {env_name(field.name)})",
        )


_OWN_DEFAULT = re.compile(r"\s*\(default: ([^)]*)\)\s*$")


def _help_and_default(text: str, value: object) -> tuple[str, str]:
    """A setting's help without its own "(default: ...)" (then that wording is the default shown, once)."""
    match = _OWN_DEFAULT.search(text)
    if match is None:
        if isinstance(value, (tuple, list)):
            value = ",".join(str(item) for item in value)  # as the flag takes it
        return text, "none" if value in ("", None) else str(value)
    return text[: match.start()], match.group(1)


def settings_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Settings:
    flags: dict[str, Any] = {
        field.name: getattr(args, f"setting_{field.name}", None) for field in SETTINGS_FIELDS
    }
    try:
        return load_settings(flags, config_file=args.config)
    except SettingsError as exc:
        usage_error(parser, str(exc))


def usage_error(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    parser.print_usage(sys.stderr)
    print(f"{parser.prog}: error: {message}", file=sys.stderr)
    sys.exit(2)


def find_exception(error: BaseException, kind: type[E]) -> E | None:
    """The first `kind` inside `error`, looking through exception groups (nurseries wrap errors)."""
    if isinstance(error, kind):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = find_exception(inner, kind)
            if found is not None:
                return found
    return None


def database_name(settings: Settings) -> str:
    """The database the settings name, for messages: the SQLite file, or the URL without its password."""
    if settings.database_url:
        from ..store.pg_admin import display_url

        return display_url(settings.database_url)
    return str(settings.database_path)


def require_database(settings: Settings, hint: str) -> None:
    """CliError unless the settings' database exists: the SQLite file (else "no database at PATH (hint)"),
    or runsvc's schema in the PostgreSQL database. PostgreSQL's one-line errors become
    CliError with exit status 2 (a setting to fix) or 1 (not reachable now)."""
    if not settings.database_url:
        if not settings.database_path.is_file():
            raise CliError(f"no database at {settings.database_path} ({hint})")
        return
    from ..store.pg_admin import has_schema

    try:
        found = has_schema(settings.database_url)
    except (DatabaseSettingError, DatabaseUnreachable) as exc:
        raise CliError(str(exc), status=2 if isinstance(exc, DatabaseSettingError) else 1) from None
    except database_errors() as exc:
        raise CliError(f"cannot use database {database_name(settings)}: {one_line(exc)}") from None
    if not found:
        raise CliError(f"no runsvc database at {database_name(settings)} (is --database-url right?)")


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
