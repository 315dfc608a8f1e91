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
