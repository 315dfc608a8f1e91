"""`runsvc jobs list|show|run`: saved jobs (SPEC §15) from a terminal.

A job is named on the command line by its name (unique ignoring case), found through `GET /jobs`; the
API itself addresses jobs by id. Credentials as for `submit` (see remote.py). `jobs run --follow`
prints the run's output and exits with its status, as `submit --follow` does.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .client import ApiClient, ClientError
from .remote import add_connection_flags, add_follow_flags, connected, follow_run, parse_run, run_client

LIST_COLUMNS = ("NAME", "SCHEDULE", "NEXT FIRE", "LAST RUN", "DESCRIPTION")
DESCRIPTION_CHARS = 60  # of a description in `jobs list`; `jobs show` prints it whole


def add_parser(commands: argparse._SubParsersAction) -> None:
    jobs = commands.add_parser("jobs", help="list, show and start saved jobs",
                               description="List, show and start saved jobs.")
    actions = jobs.add_subparsers(dest="action", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="list jobs by name", description="List jobs by name.")
    add_connection_flags(listing)
    listing.set_defaults(run=run_list)

    show = actions.add_parser("show", help="print a job as JSON", description="Print a job as JSON.")
    add_connection_flags(show)
    show.add_argument("name", metavar="NAME")
    show.set_defaults(run=run_show)

    start = actions.add_parser(
        "run", help="start a run of a job",
        description="Start a run of a job; print its id (or follow it with --follow).",
    )
    add_connection_flags(start)
    start.add_argument("name", metavar="NAME")
    start.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE",
        help="a parameter value (repeatable); the run gets it as PARAM_<NAME>",
    )
    start.add_argument(
        "--not-before", metavar="TIME",
        help="do not start before this time (RFC 3339 with a UTC offset, e.g. 2026-12-24T18:00:00+01:00)",
    )
    start.add_argument("--follow", action="store_true", help="print the output and exit with the run's status")
    add_follow_flags(start)
    start.set_defaults(run=run_start)


async def find_job(client: ApiClient, name: str) -> dict[str, Any]:
    """The job named `name` (ignoring case, as the server compares names); a ClientError if none is."""
    answer = await client.call("GET", "/api/v1/jobs")
    for job in answer["jobs"]:
        if job["name"].casefold() == name.casefold():
            return job
    raise ClientError(f"no job named {name!r} (`runsvc jobs list` lists them)")


def _cell(text: str, limit: int) -> str:
    text = " ".join(text.split())  # one line whatever the description holds
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _table(jobs: list[dict[str, Any]]) -> list[str]:
    rows = [list(LIST_COLUMNS)]
    for job in jobs:
        schedule = job["schedule"]
        if schedule is None:
            cron, next_fire = "-", "-"
        else:
            cron = schedule["cron"] + ("" if schedule["timezone"] == "UTC" else f" ({schedule['timezone']})")
            next_fire = job["next_fires"][0] if job["next_fires"] else ("paused" if not schedule["enabled"] else "-")
        last = job["last_run"]
        last_run = "-" if last is None else f"#{last['id']} {last['status']}"
        rows.append([job["name"], cron, next_fire, last_run, _cell(job["description"], DESCRIPTION_CHARS)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(LIST_COLUMNS))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]


def _params(items: list[str], parser: argparse.ArgumentParser) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--param takes NAME=VALUE, got {item!r}")
        if name in params:
            parser.error(f"--param {name} is given twice")
        params[name] = value
    return params


def run_list(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    async def main() -> int:
        async with connected(args) as client:
            answer = await client.call("GET", "/api/v1/jobs")
        for line in _table(answer["jobs"]):
            print(line)
        return 0

    return run_client(main)


def run_show(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    async def main() -> int:
        async with connected(args) as client:
            job = await find_job(client, args.name)
        print(json.dumps(job, indent=2, ensure_ascii=False))
        return 0

    return run_client(main)


def run_start(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    body: dict[str, Any] = {"params": _params(args.param, parser)}
    if args.not_before is not None:
        body["not_before"] = args.not_before

    async def main() -> int:
        async with connected(args) as client:
            job = await find_job(client, args.name)
            answer = await client.call("POST", f"/api/v1/jobs/{job['id']}/runs", body, expect=201)
            run = parse_run(answer["run"])
            if not args.follow:
                print(run.id)
                return 0
            print(f"[runsvc] run {run.id} of job {job['name']} started", file=sys.stderr, flush=True)
            return await follow_run(client, run.id, 0, args.give_up_after)

    return run_client(main)
