"""`runsvc submit` and `runsvc follow`: talk to a running server over its API.

Credentials: an API token from RUNSVC_TOKEN or `--token-stdin` (sent as `Authorization: Bearer`; it
wins over a username), else `--username` (or RUNSVC_USERNAME) and the password from RUNSVC_PASSWORD,
from `--password-stdin`, or from a prompt; a password login is logged out again when the command ends.
Exit status of a followed run:

    succeeded 0 · failed with code N: N (1 if N > 255) · killed by signal N: 128 + N
    spawn failure: 127 · timed_out: 124 · cancelled: 130 · interrupted: 143 · client error: 1
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from ..http.run_json import run_from_json
from ..model import Run
from .client import RECONNECT_FOR_S, ApiClient, ClientError, follow_events

DEFAULT_SERVER = "http://127.0.0.1:8080"


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server", default=os.environ.get("RUNSVC_SERVER", DEFAULT_SERVER),
        help=f"server URL (default: RUNSVC_SERVER or {DEFAULT_SERVER})",
    )
    parser.add_argument(
        "--username", default=os.environ.get("RUNSVC_USERNAME"),
        help="user to log in as (default: RUNSVC_USERNAME)",
    )
    secrets = parser.add_mutually_exclusive_group()
    secrets.add_argument(
        "--password-stdin", action="store_true",
        help="read the password from the first line of stdin (default: RUNSVC_PASSWORD, else a prompt)",
    )
    secrets.add_argument(
        "--token-stdin", action="store_true",
        help="read an API token (rsv_...) from the first line of stdin (default: RUNSVC_TOKEN)",
    )


def add_follow_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--give-up-after", type=_seconds, default=RECONNECT_FOR_S, metavar="SECONDS",
        help="stop with exit status 1 after this long of reconnecting without receiving anything "
        f"(default: {RECONNECT_FOR_S:g})",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a number of seconds") from None
    if not 0 < value < 1e9:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def add_parsers(commands: argparse._SubParsersAction) -> None:
    submit = commands.add_parser(
        "submit", help="submit a run", description="Submit a run; print its id (or follow it with --follow).",
    )
    add_connection_flags(submit)
    submit.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE", help="environment (repeatable)"
    )
    submit.add_argument("--timeout", type=float, metavar="SECONDS", help="run timeout (server default 3600)")
    submit.add_argument("--name", help="a name for the run")
    submit.add_argument(
        "--follow", action="store_true", help="print the output and exit with the run's status"
    )
    add_follow_flags(submit)
    submit.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ARGS", help="the command")
    submit.set_defaults(run=run_submit)

    follow = commands.add_parser(
        "follow", help="print a run's output as it comes",
        description="Print a run's output live (reconnecting as needed); exit with the run's status.",
    )
    add_connection_flags(follow)
    follow.add_argument("run_id", type=int, metavar="RUN_ID")
    follow.add_argument("--after-seq", type=int, default=0, help="start after this event seq")
    add_follow_flags(follow)
    follow.set_defaults(run=run_follow)


def parse_run(value: Any) -> Run:
    """A run object of an answer; a ClientError if it is not one (a server of another version)."""
    try:
        return run_from_json(value)
    except (KeyError, TypeError) as exc:
        raise ClientError(f"the server's answer is not a run object this client knows (missing {exc})") from None


def exit_status(run: Run) -> int:
    status, code = run.status, run.exit_code
    if status == "succeeded":
        return 0
    if status == "failed":
        if code is None:
            return 127
        if code < 0:
            return 128 + min(-code, 127)
        return code if code <= 255 else 1
    return {"timed_out": 124, "cancelled": 130, "interrupted": 143}.get(status, 1)


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    if "RUNSVC_PASSWORD" in os.environ:
        return os.environ["RUNSVC_PASSWORD"]
    if not sys.stdin.isatty():
        raise ClientError("no password: set RUNSVC_PASSWORD or use --password-stdin")
    return getpass.getpass(f"password for {args.username}: ")


def _token(args: argparse.Namespace) -> str | None:
    if args.token_stdin:
        token = sys.stdin.readline().strip()
        if not token:
            raise ClientError("--token-stdin: no token on stdin")
        return token
    if args.password_stdin:
        return None
    return os.environ.get("RUNSVC_TOKEN") or None


@asynccontextmanager
async def connected(args: argparse.Namespace) -> AsyncIterator[ApiClient]:
    """A client with credentials: the API token if there is one, else a password login that is
    logged out again when the block ends (so no CLI call leaves a 7-day session behind)."""
    token = _token(args)
    if token is not None:
        yield ApiClient(args.server, token=token)
        return
    if not args.username:
        raise ClientError("no credentials: set RUNSVC_TOKEN (or --token-stdin), or pass --username")
    client = ApiClient(args.server)
    await client.login(args.username, _password(args))
    try:
        yield client
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            try:
                await client.logout()
            except ClientError:
                pass  # the command's own outcome matters more; the session expires by itself


async def follow_run(client: ApiClient, run_id: int, after_seq: int, give_up_after: float) -> int:
    async with follow_events(client, run_id, after_seq, reconnect_for_s=give_up_after) as events:
        async for event in events:
            kind, data = event["kind"], event["data"]
            if kind == "stdout":
                print(data, flush=True)
            elif kind == "stderr":
                print(data, file=sys.stderr, flush=True)
            elif kind == "system":
                print(f"[runsvc] {data}", file=sys.stderr, flush=True)
    run = parse_run(await client.get_run(run_id))
    if run.status != "succeeded":
        detail = f" (exit code {run.exit_code})" if run.exit_code is not None else ""
        print(f"[runsvc] run {run_id} {run.status}{detail}", file=sys.stderr, flush=True)
    return exit_status(run)


def _env_pairs(items: list[str], parser: argparse.ArgumentParser) -> dict[str, str]:
    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--env takes KEY=VALUE, got {item!r}")
        env[key] = value
    return env


def run_client(main: Any) -> int:
    try:
        return trio.run(main)
    except ClientError as exc:
        print(f"runsvc: error: {exc}", file=sys.stderr)
        return 1


def run_submit(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (write it after --)")
    body: dict[str, Any] = {"command": command, "env": _env_pairs(args.env, parser)}
    if args.timeout is not None:
        body["timeout_s"] = args.timeout
    if args.name is not None:
        body["name"] = args.name

    async def main() -> int:
        async with connected(args) as client:
            run = parse_run(await client.submit(body))
            if not args.follow:
                print(run.id)
                return 0
            print(f"[runsvc] run {run.id} submitted", file=sys.stderr, flush=True)
            return await follow_run(client, run.id, 0, args.give_up_after)

    return run_client(main)


def run_follow(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.after_seq < 0:
        parser.error("--after-seq must be >= 0")

    async def main() -> int:
        async with connected(args) as client:
            return await follow_run(client, args.run_id, args.after_seq, args.give_up_after)

    return run_client(main)
