"""Retention benchmark: prune a big backlog of old runs while a live run keeps appending events.

Builds a database with RUNS old finished runs of EVENTS_PER_RUN events each (default 10,000 x 100 =
1,000,000 events) plus one running run, then runs the real pruner (`prune_expired`, then
`reclaim_space`, exactly what a retention pass does) while another task appends one event to the live
run through `store.write` every few milliseconds. Prints the prune and reclaim times, the longest single
batch, the live append latency before and during the prune, and the file sizes before and after.

    python scripts/bench/retention.py                       # the full 1,000,000 events
    python scripts/bench/retention.py --runs 1000           # 100,000 events
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from runsvc.maintenance import VACUUM_STEP_PAGES, prune_expired, reclaim_space  # noqa: E402
from runsvc.store import open_store  # noqa: E402
from runsvc.timeutil import format_ts, utcnow  # noqa: E402

INSERT_CHUNK_RUNS = 1000  # runs (with their events) per bulk-insert transaction


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000, help="old finished runs (default 10000)")
    parser.add_argument("--events-per-run", type=int, default=100, help="events per old run (default 100)")
    parser.add_argument("--line-bytes", type=int, default=80, help="bytes of output per event (default 80)")
    parser.add_argument("--batch-events", type=int, default=10_000,
                        help="rows per retention transaction, the prune_batch_events setting (default 10000)")
    parser.add_argument("--append-every-ms", type=float, default=2.0,
                        help="pause between live appends, milliseconds (default 2)")
    parser.add_argument("--baseline-s", type=float, default=2.0,
                        help="seconds of live appends measured before pruning starts (default 2)")
    parser.add_argument("--dir", type=Path, help="directory for the database (default: a temporary one)")
    return parser.parse_args()


def file_size(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def populate(path: Path, args: argparse.Namespace) -> int:
    """Bulk-insert the old runs and their events; return the id of the live (running) run."""
    old = format_ts(utcnow() - dt.timedelta(days=60))
    line = "x" * args.line_bytes
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    for first in range(0, args.runs, INSERT_CHUNK_RUNS):
        count = min(INSERT_CHUNK_RUNS, args.runs - first)
        conn.execute("BEGIN")
        run_ids = [
            conn.execute(
                "INSERT INTO runs (command, env, timeout_s, status, created_at, started_at, ended_at, last_seq)"
                " VALUES ('[\"bench\"]', '{}', 60, 'succeeded', ?, ?, ?, ?)",
                (old, old, old, args.events_per_run),
            ).lastrowid
            for _ in range(count)
        ]
        conn.executemany(
            "INSERT INTO run_events (run_id, seq, ts, kind, data) VALUES (?, ?, ?, 'stdout', ?)",
            ((run_id, seq, old, line) for run_id in run_ids for seq in range(1, args.events_per_run + 1)),
        )
        conn.execute("COMMIT")
    now = format_ts(utcnow())
    live = conn.execute(
        "INSERT INTO runs (command, env, timeout_s, status, created_at, started_at) "
        "VALUES ('[\"live\"]', '{}', 3600, 'running', ?, ?)",
        (now, now),
    ).lastrowid
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    conn.close()
    return live


def append(conn: sqlite3.Connection, run_id: int) -> None:
    seq = conn.execute(
        "UPDATE runs SET last_seq = last_seq + 1 WHERE id = ? RETURNING last_seq", (run_id,)
    ).fetchone()[0]
    conn.execute(
        "INSERT INTO run_events (run_id, seq, ts, kind, data) VALUES (?, ?, ?, 'stdout', 'live output line')",
        (run_id, seq, format_ts(utcnow())),
    )


async def bench(path: Path, live: int, args: argparse.Namespace) -> None:
    latencies: dict[str, list[float]] = {"baseline": [], "prune": [], "reclaim": []}
    phase = "baseline"
    stop = trio.Event()

    async def live_appender() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            await store.write(append, live)
            latencies[phase].append(time.perf_counter() - started)
            await trio.sleep(args.append_every_ms / 1000)

    size_before = file_size(path)
    cutoff = format_ts(utcnow() - dt.timedelta(days=30))
    async with open_store(path) as store:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(live_appender)
            await trio.sleep(args.baseline_s)
            phase = "prune"
            started = time.perf_counter()
            pruned = await prune_expired(store, cutoff, batch_events=args.batch_events)
            prune_s = time.perf_counter() - started
            phase = "reclaim"
            started = time.perf_counter()
            reclaimed = await reclaim_space(store)
            reclaim_s = time.perf_counter() - started
            stop.set()
        size_after = file_size(path)
        left = await store.read(lambda c: c.execute("SELECT count(*) FROM run_events").fetchone()[0])

    print(f"database: {args.runs} old runs x {args.events_per_run} events = {args.runs * args.events_per_run} "
          f"events of {args.line_bytes} bytes; batch {args.batch_events} rows; live append every "
          f"{args.append_every_ms:g} ms")
    print(f"pruned: {pruned.runs} runs, {pruned.events} events in {pruned.batches} batches; "
          f"{left} events left (the live run's)")
    print(f"prune time: {prune_s:.2f} s ({pruned.events / prune_s:,.0f} events/s)")
    print(f"longest batch: {ms(pruned.longest_batch_s)} transaction (BEGIN to COMMIT), "
          f"{ms(pruned.longest_batch_wait_s)} from submit to commit")
    print(f"reclaim time: {reclaim_s:.2f} s ({reclaimed.pages_freed} pages freed in steps of "
          f"{VACUUM_STEP_PAGES}, checkpointed={reclaimed.checkpointed}); longest step "
          f"{ms(reclaimed.longest_step_s)}")
    for name in ("baseline", "prune", "reclaim"):
        values = latencies[name]
        if values:
            print(f"live append latency, {name:8}: n={len(values):5}  p50={ms(statistics.median(values))}  "
                  f"p99={ms(percentile(values, 0.99))}  max={ms(max(values))} "
                  f"(append #{values.index(max(values)) + 1})")
    print(f"file size (database + WAL): before {mib(size_before)}, after {mib(size_after)}")


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "runsvc.db"
        trio.run(create_schema, path)
        started = time.perf_counter()
        live = populate(path, args)
        print(f"built in {time.perf_counter() - started:.1f} s: {mib(file_size(path))} at {path}")
        trio.run(bench, path, live, args)
        print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}")


async def create_schema(path: Path) -> None:
    async with open_store(path, readers=1):
        pass


if __name__ == "__main__":
    main()
