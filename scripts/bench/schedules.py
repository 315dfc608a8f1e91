#!/usr/bin/env python3
"""Schedules (SPEC §10): 1,000 jobs each on `* * * * *`; per observed minute, how late each fire starts its
child, and what the server does between two fires.

    python scripts/bench/schedules.py [--jobs 1000] [--minutes 2] [--max-concurrent-runs 1000]

`python -m runsvc serve` runs as a subprocess, as a user starts it; the jobs are created through
`POST /api/v1/jobs` (command `date +%s.%N`, so each child prints its own start time). For each minute:

- fire → child started: the child's printed time minus the fire time (p50, p99, max), beside fire →
  claimed (the run's `started_at`, when the claim committed, just before the spawn) and fire → recorded
  (the fire's `recorded_at`); outcomes as recorded (`skipped_overlap` means the previous minute's run of
  that job was still queued or running);
- between fires: from the moment every run of the minute has finished until 2 s before the next minute,
  the server's SQL statements (`runsvc_sql_statements_total` read by two /metrics scrapes; each scrape
  runs one count query of its own, subtracted here) and its CPU time (/proc, the server process alone).

SPEC §10's anchor: every fire starts its run ≤ 1 s after its minute; between fires no SQL and ≈ 0 CPU.
The results are read from the database file with a read-only connection of the benchmark's own.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from live_common import Server, cpu_seconds, ms, percentile, subprocess_server  # noqa: E402

from runsvc.timeutil import format_ts, parse_ts  # noqa: E402

CREATORS = 8  # concurrent clients creating the jobs
SETTLE_TIMEOUT_S = 50.0  # a minute's runs must all have finished this long after it
QUIET_MARGIN_S = 2.0  # the quiet window ends this long before the next minute


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000, help="jobs on * * * * * (1000)")
    parser.add_argument("--minutes", type=int, default=2, help="minutes observed (2)")
    parser.add_argument("--max-concurrent-runs", type=int, default=1000,
                        help="the server's --max-concurrent-runs (1000: starting the runs is not the bottleneck)")
    return parser.parse_args()


async def create_jobs(server: Server, count: int) -> None:
    names = iter(range(count))

    async def creator() -> None:
        async with server.client() as client:
            for i in names:
                body = {"name": f"every-minute-{i:04d}", "command": ["date", "+%s.%N"],
                        "schedule": {"cron": "* * * * *"}}
                (await client.post("/api/v1/jobs", json=body)).raise_for_status()

    async with trio.open_nursery() as nursery:
        for _ in range(CREATORS):
            nursery.start_soon(creator)


async def statements(server: Server) -> float:
    """runsvc_sql_statements_total, by a /metrics scrape (which itself runs one count query)."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        text = (await client.get("/metrics")).raise_for_status().text
    for line in text.splitlines():
        if line.startswith("runsvc_sql_statements_total "):
            return float(line.split()[1])
    raise RuntimeError("no runsvc_sql_statements_total in /metrics")


def minute_rows(db: Path, minute: str) -> list[tuple]:
    """(outcome, recorded_at, status, started_at, first stdout line) of each fire of `minute`."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(
            "SELECT f.outcome, f.recorded_at, r.status, r.started_at, "
            "(SELECT e.data FROM run_events AS e WHERE e.run_id = r.id AND e.kind = 'stdout' ORDER BY e.seq LIMIT 1) "
            "FROM job_fires AS f LEFT JOIN runs AS r ON r.id = f.run_id WHERE f.scheduled_for = ?",
            (minute,),
        ).fetchall()
    finally:
        conn.close()


async def settled(db: Path, minute: str, jobs: int) -> list[tuple]:
    """The minute's fires once every job has one and every run it started has finished."""
    deadline = time.time() + SETTLE_TIMEOUT_S
    while True:
        rows = await trio.to_thread.run_sync(minute_rows, db, minute)
        started = [row for row in rows if row[2] is not None]
        if len(rows) == jobs and all(row[2] not in ("queued", "running") for row in started):
            return rows
        if time.time() > deadline:
            raise RuntimeError(f"{minute}: {len(rows)} fires, {sum(r[2] in ('queued', 'running') for r in started)} "
                               f"runs unfinished after {SETTLE_TIMEOUT_S:g} s")
        await trio.sleep(0.2)


def lateness_line(label: str, values: list[float]) -> str:
    if not values:
        return f"{label:>26}: none"
    return (f"{label:>26}: p50={ms(percentile(values, 0.5))} p99={ms(percentile(values, 0.99))} "
            f"max={ms(max(values))} (n={len(values)})")


async def sleep_until(wall: float) -> None:
    await trio.sleep(max(0.0, wall - time.time()))


async def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="runsvc-bench-schedules-") as tmp:
        data_dir = Path(tmp) / "data"
        async with subprocess_server(data_dir, "--max-concurrent-runs", str(args.max_concurrent_runs)) as server:
            t0 = time.time()
            await create_jobs(server, args.jobs)
            print(f"{args.jobs} jobs on '* * * * *' created in {time.time() - t0:.1f} s "
                  f"(server --max-concurrent-runs {args.max_concurrent_runs})")
            first = (int(time.time() + QUIET_MARGIN_S) // 60 + 1) * 60  # the next whole minute, not too close
            window: tuple[float, float, float] | None = None  # (wall, statements, cpu) when a quiet window began
            for index in range(args.minutes):
                minute = first + 60 * index
                await sleep_until(minute - QUIET_MARGIN_S)
                if window is not None:
                    report_window(window, await statements(server), cpu_seconds(server.pid))
                fire_text = format_ts(dt.datetime.fromtimestamp(minute, dt.UTC))
                rows = await settled(server.db_path, fire_text, args.jobs)
                window = (time.time(), await statements(server), cpu_seconds(server.pid))
                report_minute(fire_text, minute, rows)
            await sleep_until(first + 60 * args.minutes - QUIET_MARGIN_S)
            assert window is not None
            report_window(window, await statements(server), cpu_seconds(server.pid))
    print("SPEC §10: every fire starts its run ≤ 1 s after its minute; between fires no SQL and ≈ 0 CPU")


def report_minute(fire_text: str, minute: float, rows: list[tuple]) -> None:
    outcomes: dict[str, int] = {}
    for row in rows:
        outcomes[row[0]] = outcomes.get(row[0], 0) + 1
    recorded = [parse_ts(row[1]).timestamp() - minute for row in rows]
    claimed = [parse_ts(row[3]).timestamp() - minute for row in rows if row[3] is not None]
    child = [float(row[4]) - minute for row in rows if row[4]]
    print(f"fires of {fire_text}: " + ", ".join(f"{count} {outcome}" for outcome, count in sorted(outcomes.items())))
    print(lateness_line("fire → recorded", recorded))
    print(lateness_line("fire → claimed (started_at)", claimed))
    print(lateness_line("fire → child running", child))


def report_window(window: tuple[float, float, float], statements_now: float, cpu_now: float) -> None:
    began, statements_then, cpu_then = window
    # The closing scrape's own count query is in its reading.
    quiet = statements_now - statements_then - 1
    print(f"  between fires: {time.time() - began:.1f} s quiet window, {quiet:.0f} SQL statements, "
          f"{(cpu_now - cpu_then) * 1000:.0f} ms server CPU (two /metrics scrapes included)")


if __name__ == "__main__":
    trio.run(main)
