"""`runsvc user add|passwd|list|disable|enable|set-role`: manage accounts directly in the data dir's
database.

They work on the database the settings name — the data dir's SQLite file, or PostgreSQL with
`database_url` — with or without a running server (SQLite in WAL mode lets both use the file); a server
sees the changes on its next request, so `user passwd` ends that user's sessions at once. Only `user add`
creates a database (or runsvc's schema in an empty PostgreSQL database) where there is none.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

from ..accounts import (
    ROLES,
    AccountError,
    Auth,
    Passwords,
    User,
    UserNotFound,
    check_password,
    check_username,
)
from ..config import Settings, SettingsError, prepare_data_dir
from ..store import DatabaseSettingError, DatabaseUnreachable, SchemaError, StoreError, open_store
from ..store.dialect import database_errors
from .common import CliError, add_settings_flags, find_exception, one_line, require_database, settings_from_args

T = TypeVar("T")
_SETTINGS = ["data_dir", "database_url"]


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("user", help="manage user accounts", description="Manage user accounts.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    add = actions.add_parser("add", help="create a user", description="Create a user.")
    add.add_argument("name", metavar="NAME", help="1-64 characters of A-Z a-z 0-9 _ . -")
    add.add_argument("--role", required=True, choices=ROLES, help="what the user may do")
    _add_password_flag(add)
    add_settings_flags(add, _SETTINGS)
    add.set_defaults(run=run_add)

    passwd = actions.add_parser(
        "passwd", help="set a user's password", description="Set a user's password; ends their sessions."
    )
    passwd.add_argument("name", metavar="NAME")
    _add_password_flag(passwd)
    add_settings_flags(passwd, _SETTINGS)
    passwd.set_defaults(run=run_passwd)

    listing = actions.add_parser("list", help="list users", description="List users.")
    add_settings_flags(listing, _SETTINGS)
    listing.set_defaults(run=run_list)

    disable = actions.add_parser(
        "disable", help="disable a user",
        description="Disable a user: their sessions end and their API tokens stop working at once.",
    )
    disable.add_argument("name", metavar="NAME")
    add_settings_flags(disable, _SETTINGS)
    disable.set_defaults(run=run_change, change={"disabled": True}, done="disabled")

    enable = actions.add_parser(
        "enable", help="enable a disabled user",
        description="Enable a disabled user (their unexpired API tokens work again).",
    )
    enable.add_argument("name", metavar="NAME")
    add_settings_flags(enable, _SETTINGS)
    enable.set_defaults(run=run_change, change={"disabled": False}, done="enabled")

    set_role = actions.add_parser(
        "set-role", help="change a user's role",
        description="Change a user's role; it applies to their sessions and tokens at once.",
    )
    set_role.add_argument("name", metavar="NAME")
    set_role.add_argument("role", choices=ROLES, metavar="ROLE", help=" | ".join(ROLES))
    add_settings_flags(set_role, _SETTINGS)
    set_role.set_defaults(run=run_change, change=None, done="changed the role of")


def _add_password_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password-stdin", action="store_true",
        help="read the password as one line from standard input instead of prompting",
    )


def run_add(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    settings = settings_from_args(args, parser)
    try:
        check_username(args.name)
    except AccountError as exc:
        raise CliError(str(exc), status=2) from None
    password = read_password(args.name, from_stdin=args.password_stdin)
    if not settings.database_url:  # SQLite's file lives in the data dir; PostgreSQL needs none
        try:
            prepare_data_dir(settings)
        except SettingsError as exc:
            raise CliError(str(exc), status=2) from None

    async def add(auth: Auth) -> User:
        return await auth.create_user(args.name, password, args.role)

    user = _run(settings, add)
    print(f"created user {user.username} with role {user.role}")
    return 0


def run_passwd(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    settings = settings_from_args(args, parser)
    _require_database(settings)
    password = read_password(args.name, from_stdin=args.password_stdin)

    async def passwd(auth: Auth) -> User:
        return await auth.set_password(args.name, password)

    user = _run(settings, passwd)
    print(f"changed the password of {user.username} and ended their sessions")
    return 0


def run_list(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    settings = settings_from_args(args, parser)
    _require_database(settings)

    async def listing(auth: Auth) -> list[User]:
        return await auth.list_users()

    users = _run(settings, listing)
    rows = [["ID", "USERNAME", "ROLE", "DISABLED", "CREATED"]]
    rows += [[str(u.id), u.username, u.role, "yes" if u.disabled else "no", u.created_at] for u in users]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def run_change(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """disable, enable, set-role: one update of the user named NAME (any case)."""
    settings = settings_from_args(args, parser)
    _require_database(settings)
    change = args.change if args.change is not None else {"role": args.role}

    async def update(auth: Auth) -> User:
        for user in await auth.list_users():
            if user.username.lower() == args.name.lower():
                return await auth.update_user(user.id, **change)
        raise UserNotFound(f"no user named {args.name}")

    user = _run(settings, update)
    print(f"{args.done} {user.username}" + (f" (now {user.role})" if "role" in change else ""))
    return 0


def read_password(name: str, *, from_stdin: bool) -> str:
    """One line from stdin, or an interactive prompt (asked twice); checked against the rules."""
    if from_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        password = password[:-1] if password.endswith("\r") else password
        if not password:
            raise CliError("no password on standard input")
    else:
        if not sys.stdin.isatty():
            raise CliError("standard input is not a terminal: use --password-stdin", status=2)
        try:
            password = getpass.getpass(f"Password for {name}: ")
            again = getpass.getpass("Repeat the password: ")
        except EOFError:
            raise CliError("no password given") from None
        if password != again:
            raise CliError("the passwords do not match")
    try:
        check_password(password)
    except AccountError as exc:
        raise CliError(str(exc)) from None
    return password


def _require_database(settings: Settings) -> None:
    require_database(settings, "wrong --data-dir?")


def _run(settings: Settings, action: Callable[[Auth], Awaitable[T]]) -> T:
    """Open the store, run `action` with an accounts service on it, close the store."""

    async def main() -> T:
        async with open_store(settings.database_path, database_url=settings.database_url, readers=1) as store:
            auth = Auth(store=store, passwords=Passwords(), session_ttl_s=settings.session_ttl_s)
            return await action(auth)

    try:
        return trio.run(main)
    except Exception as exc:
        kinds: tuple[tuple[type[BaseException], str, int], ...] = (
            (AccountError, "", 1), (DatabaseSettingError, "", 2), (DatabaseUnreachable, "", 1),
            (SchemaError, "cannot open database: ", 1),
            *((kind, "database error: ", 1) for kind in database_errors()), (OSError, "cannot open database: ", 1),
            (StoreError, "database error: ", 1),  # unavailable, or a read past the time limit
        )
        for kind, prefix, status in kinds:
            found: Any = find_exception(exc, kind)
            if found is not None:
                raise CliError(prefix + one_line(found), status=status) from None
        raise
