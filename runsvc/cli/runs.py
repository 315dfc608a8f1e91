"""`runsvc runs list|show`, `runsvc cancel`, `runsvc rerun`, `runsvc log`: the rest of the runs API from a
terminal.

Credentials as for `submit` (see remote.py): RUNSVC_TOKEN / `--token-stdin`, or a password login that
is logged out when the command ends.
"""

from __future__ import annotations

import argparse
import json
import sys
from urllib.parse import urlencode

from ..model import STATUSES, Run
from .remote import add_connection_flags, add_follow_flags, connected, follow_run, parse_run, run_client

LIST_COLUMNS = ("ID", "STATUS", "EXIT", "NAME", "BY", "CREATED")


def add_parsers(commands: argparse._SubParsersAction) -> None:
    runs = commands.add_parser("runs", help="list and show runs", description="List and show runs.")
    actions = runs.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="list runs, newest first", description="List runs, newest first.")
    add_connection_flags(listing)
    listing.add_argument(
        "--status", metavar="STATUS[,STATUS...]",
        help=f"only runs in these statuses ({', '.join(STATUSES)})",
    )
    listing.add_argument("--limit", type=int, default=50, help="at most this many runs (1-500; default 50)")
    listing.set_defaults(run=run_list)
    show = actions.add_parser("show", help="print a run as JSON", description="Print a run as JSON.")
    add_connection_flags(show)
    show.add_argument("run_id", type=int, metavar="RUN_ID")
    show.set_defaults(run=run_show)

    cancel = commands.add_parser(
        "cancel", help="cancel a run", description="Cancel a queued or running run; print its status."
    )
    add_connection_flags(cancel)
    cancel.add_argument("run_id", type=int, metavar="RUN_ID")
    cancel.set_defaults(run=run_cancel)

    rerun = commands.add_parser(
        "rerun", help="start a run again",
        description="Start a new run like RUN_ID, finished or not (same command, env, timeout, labels, job, "
                    "params, retries and concurrency); print its id (or follow it with --follow).",
    )
    add_connection_flags(rerun)
    rerun.add_argument("run_id", type=int, metavar="RUN_ID")
    rerun.add_argument(
        "--follow", action="store_true", help="print the new run's output and exit with its status"
    )
    add_follow_flags(rerun)
    rerun.set_defaults(run=run_rerun)

    log = commands.add_parser(
        "log", help="print a run's stored output",
        description="Print the stdout and stderr lines stored so far (use `follow` to watch live).",
    )
    add_connection_flags(log)
    log.add_argument("run_id", type=int, metavar="RUN_ID")
    log.set_defaults(run=run_log)


def _table(runs: list[Run]) -> list[str]:
    rows = [list(LIST_COLUMNS)]
    for run in runs:
        exit_code = "" if run.exit_code is None else str(run.exit_code)
        rows.append([str(run.id), run.status, exit_code, run.name or "", run.created_by or "", run.created_at])
    widths = [max(len(row[i]) for row in rows) for i in range(len(LIST_COLUMNS))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]


def run_list(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if not 1 <= args.limit <= 500:
        parser.error("--limit must be 1-500")
    query = {"limit": str(args.limit)}
    if args.status:
        query["status"] = args.status

    async def main() -> int:
        async with connected(args) as client:
            answer = await client.call("GET", "/api/v1/runs?" + urlencode(query))
        for line in _table([parse_run(run) for run in answer["runs"]]):
            print(line)
        return 0

    return run_client(main)


def run_show(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    async def main() -> int:
        async with connected(args) as client:
            run = await client.get_run(args.run_id)
        print(json.dumps(run, indent=2))
        return 0

    return run_client(main)


def run_cancel(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    async def main() -> int:
        async with connected(args) as client:
            answer = await client.call("POST", f"/api/v1/runs/{args.run_id}/cancel", expect=202)
        print(f"run {args.run_id}: {parse_run(answer['run']).status}")
        return 0

    return run_client(main)


def run_rerun(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    async def main() -> int:
        async with connected(args) as client:
            answer = await client.call("POST", f"/api/v1/runs/{args.run_id}/rerun", expect=201)
            run = parse_run(answer["run"])
            if not args.follow:
                print(run.id)
                return 0
            print(f"[runsvc] run {run.id} started again from run {args.run_id}", file=sys.stderr, flush=True)
            return await follow_run(client, run.id, 0, args.give_up_after)

    return run_client(main)


def run_log(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    async def main() -> int:
        async with connected(args) as client:
            await client.copy_to(f"/api/v1/runs/{args.run_id}/log", sys.stdout.buffer)
        return 0

    return run_client(main)
