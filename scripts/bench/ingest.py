#!/usr/bin/env python3
"""Durable ingest: N producers appending small events concurrently through the group-commit EventLog.

Prints committed events/s and transactions/s for each append size (events per append() call), then the
same workload done the naive way (one transaction and one thread hop per event) for comparison.
Every run has one live subscriber draining the bus, so "committed" here means committed and published.

With `--database-url postgresql://…` (a role that may create databases) each size is measured on SQLite
and then on PostgreSQL (a scratch database of its own on that server, dropped afterwards: pg_scratch.py),
printed side by side with PostgreSQL's ratio to its SPEC §10 target (50,000 events/s at 100 events per
append, fsync and synchronous_commit on; the server's settings are printed first). `--repeat N` measures
everything N times and prints every measurement.

    .venv/bin/python scripts/bench/ingest.py [--producers 10] [--events 200000] [--sizes 1,10,100]
                                             [--database-url URL] [--repeat 1]
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from runsvc.config import default_value  # noqa: E402
from runsvc.events import (
    EventLog,  # noqa: E402
    RunEventBus,  # noqa: E402
)
from runsvc.store import open_store  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pg_scratch import describe_server, scratch_database  # noqa: E402

PG_TARGET = 50_000  # events/s at 100 events per append on PostgreSQL (SPEC §10)


def _insert_run(conn) -> int:
    return conn.execute(
        "INSERT INTO runs (command, env, timeout_s, status, created_at) "
        "VALUES ('[\"bench\"]', '{}', 60, 'running', '2026-01-01T00:00:00.000000Z') RETURNING id"
    ).fetchone()[0]


async def _drain(subscription, expected_last: int) -> None:
    while True:
        batch = await subscription.receive()
        batch.fragments  # noqa: B018 - the JSON a WebSocket watcher sends (built here if not yet)
        if batch.last_seq >= expected_last:
            return


async def group_commit(
    producers: int, events: int, size: int, commit_interval_s: float, *, path: Path | None = None,
    database_url: str = "",
) -> tuple[float, int]:
    """(events/s, transactions/s) through the EventLog on the SQLite file `path` or at `database_url`."""
    per_producer = events // producers // size * size
    async with open_store(path, database_url=database_url) as store:
        bus = RunEventBus(capacity=1_000_000)
        eventlog = EventLog(store, bus, commit_interval_s=commit_interval_s)
        runs = [await store.write(_insert_run) for _ in range(producers)]
        line = [("stdout", "x" * 60)] * size

        async def produce(run_id: int) -> None:
            for _ in range(per_producer // size):
                await eventlog.append(run_id, line)

        subscriptions = [bus.subscribe(run_id) for run_id in runs]
        before = store.statistics().transactions
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for run_id, subscription in zip(runs, subscriptions, strict=True):
                nursery.start_soon(produce, run_id)
                nursery.start_soon(_drain, subscription, per_producer)
        elapsed = time.perf_counter() - start
        transactions = store.statistics().transactions - before
        for subscription in subscriptions:
            subscription.close()
    return per_producer * producers / elapsed, int(transactions / elapsed)


def _naive_append(conn: sqlite3.Connection, run_id: int, line: str) -> None:
    conn.execute("BEGIN IMMEDIATE")
    seq = conn.execute("SELECT last_seq FROM runs WHERE id = ?", (run_id,)).fetchone()[0] + 1
    conn.execute(
        "INSERT INTO run_events (run_id, seq, ts, kind, data) VALUES (?, ?, '2026-01-01T00:00:00.000000Z', "
        "'stdout', ?)",
        (run_id, seq, line),
    )
    conn.execute("UPDATE runs SET last_seq = ? WHERE id = ?", (seq, run_id))
    conn.execute("COMMIT")


async def one_transaction_per_event(path: Path, producers: int, events: int) -> float:
    async with open_store(path) as store:
        runs = [await store.write(_insert_run) for _ in range(producers)]
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA synchronous = NORMAL")
    lock = trio.Lock()  # one writer connection, as in runsvc
    per_producer = events // producers

    async def produce(run_id: int) -> None:
        for _ in range(per_producer):
            async with lock:
                await trio.to_thread.run_sync(_naive_append, conn, run_id, "x" * 60)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for run_id in runs:
            nursery.start_soon(produce, run_id)
    elapsed = time.perf_counter() - start
    conn.close()
    return per_producer * producers / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--producers", type=int, default=10)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--sizes", default="1,10,100", help="events per append() call, comma-separated")
    parser.add_argument("--naive-events", type=int, default=20_000)
    parser.add_argument(
        "--commit-interval-s", type=float, default=default_value("commit_interval_s"),
        help="least time between group commits (default: the server's default)",
    )
    parser.add_argument("--database-url", default="", help="also measure on this PostgreSQL server (CREATEDB)")
    parser.add_argument("--repeat", type=int, default=1, help="measure everything this many times")
    args = parser.parse_args()
    print(f"producers={args.producers} events={args.events} commit_interval_s={args.commit_interval_s}")
    if args.database_url:
        print(describe_server(args.database_url))
    for repetition in range(1, args.repeat + 1):
        if args.repeat > 1:
            print(f"-- repetition {repetition}/{args.repeat}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            best = 0.0
            for size in (int(s) for s in args.sizes.split(",")):
                rate, tps = await group_commit(
                    args.producers, args.events, size, args.commit_interval_s, path=Path(tmp) / f"group-{size}.db"
                )
                best = max(best, rate)
                line = f"group commit, {size:>3} events/append: SQLite {rate:>10,.0f} events/s {tps:>7,} tx/s"
                if args.database_url:
                    with scratch_database(args.database_url) as url:
                        pg_rate, pg_tps = await group_commit(
                            args.producers, args.events, size, args.commit_interval_s, database_url=url
                        )
                    line += (f" | PostgreSQL {pg_rate:>10,.0f} events/s {pg_tps:>7,} tx/s "
                             f"(PostgreSQL/SQLite {pg_rate / rate:.2f}")
                    line += f", /target {pg_rate / PG_TARGET:.2f})" if size == 100 else ")"
                print(line, flush=True)
            naive = await one_transaction_per_event(Path(tmp) / "naive.db", args.producers, args.naive_events)
            print(f"SQLite, one transaction per event:  {naive:>10,.0f} events/s")
            print(f"ratio, best SQLite group commit / one transaction per event: {best / naive:.1f}x", flush=True)


if __name__ == "__main__":
    trio.run(main)
