"""`runsvc secrets list|set NAME|delete NAME`: secrets (SPEC §17) from a terminal, through the server's API.

`set` reads the value from stdin (never from the command line, where `ps` and shell history would show
it): all of stdin, less one final line end, so `printf %s "$VALUE" | runsvc secrets set NAME` and
`runsvc secrets set NAME < file` both work. It creates the secret, or replaces the value of one that
exists. Credentials as for `submit` (see remote.py); since stdin holds the value, `set` takes them from
RUNSVC_TOKEN, or RUNSVC_PASSWORD / a prompt, not from `--token-stdin` / `--password-stdin`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any
from urllib.parse import quote

from .client import ClientError
from .remote import add_connection_flags, connected, run_client

LIST_COLUMNS = ("NAME", "UPDATED", "BY", "CREATED")
MAX_VALUE_BYTES = 64 * 1024


def add_parser(commands: argparse._SubParsersAction) -> None:
    secrets = commands.add_parser("secrets", help="list, set and delete secrets",
                                  description="List, set and delete secrets (values are never shown).")
    actions = secrets.add_subparsers(dest="action", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="list secrets by name (operators, admins)",
                                 description="List secrets by name; values are never shown.")
    add_connection_flags(listing)
    listing.set_defaults(run=run_list)

    setting = actions.add_parser(
        "set", help="create or replace a secret, its value read from stdin (admins)",
        description="Create a secret, or replace the value of an existing one. The value is read from stdin "
        "(all of it, less one final line end).",
    )
    add_connection_flags(setting)
    setting.add_argument("name", metavar="NAME")
    setting.set_defaults(run=run_set)

    deleting = actions.add_parser("delete", help="delete a secret (admins)", description="Delete a secret.")
    add_connection_flags(deleting)
    deleting.add_argument("name", metavar="NAME")
    deleting.set_defaults(run=run_delete)


def _table(secrets: list[dict[str, Any]]) -> list[str]:
    rows = [list(LIST_COLUMNS)]
    for secret in secrets:
        rows.append([secret["name"], secret["updated_at"], secret["updated_by"] or "-", secret["created_at"]])
    widths = [max(len(row[i]) for row in rows) for i in range(len(LIST_COLUMNS))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]


def read_value(raw: bytes) -> str:
    """The value in `raw` (stdin): UTF-8, one final line end dropped; a ClientError if it is unusable.
    The message never holds the value."""
    if raw.endswith(b"\r\n"):
        raw = raw[:-2]
    elif raw.endswith(b"\n"):
        raw = raw[:-1]
    if not raw:
        raise ClientError("no value on stdin (pipe it in: printf %s \"$VALUE\" | runsvc secrets set NAME)")
    if len(raw) > MAX_VALUE_BYTES:
        raise ClientError(f"the value on stdin is {len(raw)} bytes; at most {MAX_VALUE_BYTES}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ClientError("the value on stdin is not UTF-8 text") from None


def run_list(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    async def main() -> int:
        async with connected(args) as client:
            answer = await client.call("GET", "/api/v1/secrets")
        for line in _table(answer["secrets"]):
            print(line)
        return 0

    return run_client(main)


def run_set(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.token_stdin or args.password_stdin:
        parser.error("secrets set reads the value from stdin: give credentials with RUNSVC_TOKEN or "
                     "RUNSVC_PASSWORD instead of --token-stdin / --password-stdin")
    try:
        value = read_value(sys.stdin.buffer.read())
    except ClientError as exc:
        print(f"runsvc: error: {exc}", file=sys.stderr)
        return 1

    async def main() -> int:
        async with connected(args) as client:
            names = {secret["name"] for secret in (await client.call("GET", "/api/v1/secrets"))["secrets"]}
            if args.name in names:
                await client.call("PUT", f"/api/v1/secrets/{quote(args.name, safe='')}", {"value": value})
                print(f"secret {args.name} replaced", file=sys.stderr)
            else:
                await client.call("POST", "/api/v1/secrets", {"name": args.name, "value": value}, expect=201)
                print(f"secret {args.name} created", file=sys.stderr)
        return 0

    return run_client(main)


def run_delete(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    async def main() -> int:
        async with connected(args) as client:
            await client.call("DELETE", f"/api/v1/secrets/{quote(args.name, safe='')}", expect=204)
        print(f"secret {args.name} deleted", file=sys.stderr)
        return 0

    return run_client(main)
