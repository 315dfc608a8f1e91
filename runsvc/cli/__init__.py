"""The command line. Each subcommand lives in its own module and registers its parser here."""

from __future__ import annotations

import argparse
import sys

from . import agent as agent_cmd
from . import db as db_cmd
from . import jobs as jobs_cmd
from . import remote as remote_cmd
from . import runs as runs_cmd
from . import secrets as secrets_cmd
from . import serve as serve_cmd
from . import users as users_cmd
from .common import CliError

__all__ = ["CliError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runsvc", description="A self-hosted run service.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve_cmd.add_parser(commands)
    users_cmd.add_parser(commands)
    db_cmd.add_parser(commands)
    remote_cmd.add_parsers(commands)
    agent_cmd.add_parser(commands)
    runs_cmd.add_parsers(commands)
    jobs_cmd.add_parser(commands)
    secrets_cmd.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args, parser)
    except CliError as exc:
        print(f"runsvc: error: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return 130
