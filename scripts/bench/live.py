#!/usr/bin/env python3
"""Live events (SPEC §10): idle sockets, fan-out, catch-up, slow consumer, scheduler latency, connections.

Each scenario prints its figures and, where the SPEC asks for it, the same figure for the polling design
the seed replaced (one `SELECT … WHERE run_id = ? AND seq > ?` per connection every 250 ms, implemented
here on the benchmark's own SQLite connections against the same database) and the ratio.

    python scripts/bench/live.py idle [--connections 1000] [--seconds 30]
    python scripts/bench/live.py fanout [--subscribers 100] [--rate 10000] [--seconds 10]
                                        [--client-processes 2] [--no-polling] [--bus-tick-s S]
                                        [--bus-tick-max-s S] [--bus-frames-per-s N]
                                        [--commit-interval-s S]
                                        [--output-interval-s S]
    python scripts/bench/live.py catchup [--events 1000000]
    python scripts/bench/live.py slow [--events 1000000]
    python scripts/bench/live.py scheduler [--submissions 100] [--database-url URL]
    python scripts/bench/live.py connections [--connections 5000] [--hold 45]
    python scripts/bench/live.py all

The idle scenario runs the server in this process (to read its SQL statement counter); every other one
starts `python -m runsvc serve` as a subprocess, so its memory is its own and it has a core of its own.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import attrs
import trio
import trio_websocket

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from live_common import (
    CHATTY,
    SLEEPER,
    Poller,
    RssSampler,
    Watcher,
    cpu_seconds,
    inprocess_server,
    mib,
    ms,
    open_ws,
    percentile,
    raise_fd_limit,
    rss_bytes,
    subprocess_server,
)
from pg_scratch import describe_server, scratch_database

from runsvc.model import TERMINAL_STATUSES as TERMINAL

POLL_INTERVAL = 0.25
SCHEDULER_TARGET_S = 0.010  # enqueue → child started, idle server, p50 (SPEC §10)
SCHEDULER_TARGET_PG_S = 0.015  # the same on PostgreSQL 15, synchronous_commit on


def chatty(rate: float, seconds: float, total: int, go_file: Path) -> list[str]:
    return [sys.executable, "-c", CHATTY, str(rate), str(seconds), str(total), str(go_file)]


async def sleeper_run(server) -> int:
    run = await server.submit(SLEEPER)
    await server.wait_status(run["id"], ("running",))
    return run["id"]


# ---- 1. idle ----------------------------------------------------------------------------------------------


async def idle(args, tmp: Path) -> None:
    raise_fd_limit(3 * args.connections + 1000)
    async with inprocess_server(tmp / "idle") as server:
        store, bus = server.services.store, server.services.bus
        run_id = await sleeper_run(server)
        connected, stop = trio.Semaphore(0), trio.Event()
        alive = []

        async def watch() -> None:
            async with open_ws(server, run_id) as ws:
                await ws.get_message()
                connected.release()
                await stop.wait()
                alive.append(ws.closed is None)

        async with trio.open_nursery() as nursery:
            limit = trio.Semaphore(50)  # handshakes in flight

            async def start_one() -> None:
                async with limit:
                    nursery.start_soon(watch)
                    await trio.sleep(0.002)

            start = time.perf_counter()
            for _ in range(args.connections):
                await start_one()
            for _ in range(args.connections):
                await connected.acquire()
            print(f"{args.connections} WebSockets open on run {run_id} in {time.perf_counter() - start:.1f} s "
                  f"(bus subscribers: {bus.subscriber_count(run_id)})")
            await trio.sleep(1)  # let startup maintenance/retention passes and handshakes settle
            before = store.statistics().statements
            await trio.sleep(args.seconds)
            push = store.statistics().statements - before
            stop.set()
        print(f"push:    {push} SQL statements in {args.seconds:g} s with {args.connections} open sockets "
              f"({sum(alive)} still open at the end)")

        # The baseline: as many pollers, each on its own connection, against the same database.
        pollers = [Poller(server.db_path, run_id) for _ in range(args.connections)]
        limiter = trio.CapacityLimiter(8)
        before = store.statistics().statements
        deadline = trio.current_time() + args.seconds
        async with trio.open_nursery() as nursery:
            for poller in pollers:
                nursery.start_soon(poller.run, POLL_INTERVAL, deadline, limiter, random.uniform(0, POLL_INTERVAL))
        server_side = store.statistics().statements - before
        polled = sum(p.statements for p in pollers)
        for poller in pollers:
            poller.close()
        expected = int(args.connections * args.seconds / POLL_INTERVAL)
        print(f"polling: {polled + server_side} SQL statements in {args.seconds:g} s ({polled} polls, expected "
              f"{expected}; {server_side} by the server meanwhile)")
        ratio = "infinite (push ran none)" if push == 0 else f"{(polled + server_side) / push:,.0f}x"
        print(f"ratio polling / push: {ratio}")


# ---- 2. fan-out -------------------------------------------------------------------------------------------


async def fanout(args, tmp: Path) -> None:
    total = int(args.rate * args.seconds)
    server_args = [] if args.bus_tick_s is None else ["--bus-tick-s", str(args.bus_tick_s)]
    if args.bus_tick_max_s is not None:
        server_args += ["--bus-tick-max-s", str(args.bus_tick_max_s)]
    if args.commit_interval_s is not None:
        server_args += ["--commit-interval-s", str(args.commit_interval_s)]
    if args.bus_frames_per_s is not None:
        server_args += ["--bus-frames-per-s", str(args.bus_frames_per_s)]
    if args.output_interval_s is not None:
        server_args += ["--output-interval-s", str(args.output_interval_s)]
    async with subprocess_server(tmp / "fanout", *server_args) as server:
        # Push: N WebSocket clients, spread over `--client-processes` processes so that the clients'
        # own CPU does not limit what is measured, on one run whose child prints `rate` lines/s once
        # they are all connected.
        go = tmp / "go-push"
        run = await server.submit(chatty(args.rate, args.seconds, total, go))
        await server.wait_status(run["id"], ("running",))
        result = await fanout_clients(server, run["id"], args, tmp, go)
        final = await server.get_run(run["id"])
        last = final["last_seq"]
        ok = sum(w["last"] == last and w["in_order"] and w["end"] == last and w["code"] == 1000
                 for w in result.watchers)
        push = result.latencies
        print(f"push: {total} lines at {args.rate:,.0f}/s; {ok}/{len(result.watchers)} clients received seq "
              f"1..{last} in order, end + 1000; {result.frames:,} frames, {result.delivered:,} events delivered")
        print(f"push latency of each frame's oldest line (write→receive) over {len(push):,} frames: "
              f"p50={ms(percentile(push, 0.5))} p99={ms(percentile(push, 0.99))} max={ms(max(push))}")
        print(f"push: last client closed {result.elapsed:.1f} s after the start; server CPU "
              f"{result.server_cpu / result.elapsed:.0%} of a core, "
              f"{result.server_cpu / result.delivered * 1e6:.2f} CPU-s per million delivered events; "
              f"clients {result.client_cpu / result.elapsed:.0%} over {args.client_processes} processes; "
              f"server peak RSS {mib(result.peak_rss)}")
        if not args.polling:
            return
        poll, ok_poll, polls = await fanout_polling(server, args, tmp, total)
        print(f"polling: {ok_poll}/{args.subscribers} pollers read every line in order with {polls:,} SELECTs; "
              f"latency over {len(poll):,} deliveries: p50={ms(percentile(poll, 0.5))} "
              f"p99={ms(percentile(poll, 0.99))} max={ms(max(poll))}")
        print(f"ratio of p99, polling / push: {percentile(poll, 0.99) / percentile(push, 0.99):.1f}x")


@attrs.define
class FanoutResult:
    watchers: list[dict]
    latencies: list[float]  # per frame: receive time - write time of its oldest line
    frames: int
    delivered: int  # events received, over all clients
    elapsed: float  # from "go" until the last client closed
    server_cpu: float  # CPU-seconds of the server process meanwhile
    client_cpu: float
    peak_rss: int


async def fanout_clients(server, run_id: int, args, tmp: Path, go: Path) -> FanoutResult:
    """Start the client processes (fanout_worker.py), wait until all are connected, touch `go`, and
    collect what they saw once the server has closed every socket."""
    counts = [args.subscribers // args.client_processes + (i < args.subscribers % args.client_processes)
              for i in range(args.client_processes)]
    files = [tmp / f"fanout-{i}.json" for i in range(len(counts))]
    worker = str(Path(__file__).resolve().parent / "fanout_worker.py")
    processes = [
        await trio.lowlevel.open_process(
            [sys.executable, worker, server.url, server.cookie, str(run_id), str(count), str(file)],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
        )
        for count, file in zip(counts, files, strict=True)
    ]
    sampler = RssSampler(server.pid)
    async with trio.open_nursery() as nursery:
        for process in processes:  # each prints "ready" once all its clients have their first frame
            line = b""
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(64)
                if not chunk:
                    raise RuntimeError("a client process exited before it was ready")
                line += chunk
        nursery.start_soon(sampler.run)
        cpu = cpu_seconds(server.pid)
        go.touch()
        start = time.perf_counter()
        for process in processes:
            await process.wait()
        elapsed = time.perf_counter() - start
        server_cpu = cpu_seconds(server.pid) - cpu
        nursery.cancel_scope.cancel()
    results = [json.loads(file.read_text()) for file in files]
    watchers = [w for r in results for w in r["watchers"]]
    return FanoutResult(
        watchers=watchers,
        latencies=[lat for r in results for lat in r["latencies"]],
        frames=sum(w["frames"] for w in watchers),
        delivered=sum(w["events"] for w in watchers),
        elapsed=elapsed,
        server_cpu=server_cpu,
        client_cpu=sum(r["cpu_s"] for r in results),
        peak_rss=sampler.peak,
    )


async def fanout_polling(server, args, tmp: Path, total: int) -> tuple[list[float], int, int]:
    """The polling baseline of fan-out: N pollers on a run whose child prints like the push one."""
    go = tmp / "go-poll"
    run = await server.submit(chatty(args.rate, args.seconds, total, go))
    await server.wait_status(run["id"], ("running",))
    pollers = [Poller(server.db_path, run["id"], measure=i % 10 == 0) for i in range(args.subscribers)]
    limiter = trio.CapacityLimiter(8)
    cpu, start = (cpu_seconds(server.pid), cpu_seconds()), time.perf_counter()
    async with trio.open_nursery() as nursery:
        for poller in pollers:
            nursery.start_soon(poller.run, POLL_INTERVAL, math.inf, limiter, random.uniform(0, POLL_INTERVAL))
        go.touch()
        final = await server.wait_status(run["id"], TERMINAL, every=0.2)
        while min(p.last for p in pollers) < final["last_seq"]:
            await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    elapsed = time.perf_counter() - start
    print(f"polling: last poller done {elapsed:.1f} s after the start; CPU busy meanwhile: server "
          f"{(cpu_seconds(server.pid) - cpu[0]) / elapsed:.0%}, benchmark pollers "
          f"{(cpu_seconds() - cpu[1]) / elapsed:.0%} of one core")
    last = final["last_seq"]
    ok = sum(p.in_order and p.last == last for p in pollers)
    statements = sum(p.statements for p in pollers)
    for poller in pollers:
        poller.close()
    return [lat for p in pollers for lat in p.latencies], ok, statements


# ---- 3. catch-up ------------------------------------------------------------------------------------------


def bulk_insert(db_path: Path, run_id: int, events: int, line_bytes: int = 60) -> int:
    """Append `events` stdout rows to a running run directly in SQLite (the server is idle meanwhile);
    return the new last seq."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("BEGIN IMMEDIATE")
    first = conn.execute("SELECT last_seq FROM runs WHERE id = ?", (run_id,)).fetchone()[0] + 1
    ts = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    pad = "x" * (line_bytes - 12)
    conn.executemany("INSERT INTO run_events (run_id, seq, ts, kind, data) VALUES (?, ?, ?, 'stdout', ?)",
                     ((run_id, seq, ts, f"{seq:>11} {pad}") for seq in range(first, first + events)))
    last = first + events - 1
    conn.execute("UPDATE runs SET last_seq = ? WHERE id = ?", (last, run_id))
    conn.execute("COMMIT")
    conn.close()
    return last


async def catchup(args, tmp: Path) -> None:
    async with subprocess_server(tmp / "catchup") as server:
        run_id = await sleeper_run(server)
        start = time.perf_counter()
        last = await trio.to_thread.run_sync(bulk_insert, server.db_path, run_id, args.events)
        print(f"run {run_id}: {args.events:,} stored events inserted in {time.perf_counter() - start:.1f} s "
              f"(last seq {last})")
        watcher = Watcher()
        start = time.perf_counter()
        async with open_ws(server, run_id, queue=4) as ws:
            await watcher.read(ws, until_seq=last)
            elapsed = time.perf_counter() - start
            await server.cancel(run_id)
            await watcher.read(ws)
        final = await server.get_run(run_id)
        ok = watcher.complete(final["last_seq"]) and watcher.end == final["last_seq"] and watcher.code == 1000
        print(f"push: after_seq=0 → seq {last:,} received in {elapsed:.2f} s ({last / elapsed:,.0f} events/s, "
              f"{watcher.frames} frames); everything in order through the end frame: {ok}")

        # Baseline: a polling reader's first poll after reconnecting fetches everything missed at once.
        poller = Poller(server.db_path, run_id)
        start = time.perf_counter()
        await poller.poll(trio.CapacityLimiter(1))
        polled = time.perf_counter() - start
        poller.close()
        print(f"polling: one SELECT … seq > 0 returned {poller.last:,} rows in {polled:.2f} s (query and fetch "
              f"only: no JSON, no socket) in order: {poller.in_order}; ratio push / polling: {elapsed / polled:.1f}x")


# ---- 4. slow consumer -------------------------------------------------------------------------------------


async def slow(args, tmp: Path) -> None:
    async with subprocess_server(tmp / "slow") as server:
        go = tmp / "go-slow"
        run = await server.submit(chatty(0, 0, args.events, go))
        await server.wait_status(run["id"], ("running",))
        sampler = RssSampler(server.pid)
        watcher = Watcher()
        async with open_ws(server, run["id"], queue=1) as ws, trio.open_nursery() as nursery:
            watcher.take(await ws.get_message(), time.time())  # connected and live
            await trio.sleep(0.5)
            before = sampler.sample()
            nursery.start_soon(sampler.run)
            go.touch()
            start = time.perf_counter()
            final = await server.wait_status(run["id"], TERMINAL, every=0.2)
            produced = time.perf_counter() - start
            await trio.sleep(1)
            stalled = sampler.sample()
            peak_while_stalled = sampler.peak
            start = time.perf_counter()
            await watcher.read(ws)
            drained = time.perf_counter() - start
            await trio.sleep(1)
            after = sampler.sample()
            nursery.cancel_scope.cancel()
        last = final["last_seq"]
        ok = watcher.complete(last) and watcher.end == last and watcher.code == 1000
        print(f"{args.events:,} lines appended in {produced:.1f} s while the client read nothing; then it read "
              f"seq 1..{watcher.last:,} in {drained:.1f} s; in order through the end frame: {ok}")
        print(f"server RSS: before {mib(before)}, peak while stalled {mib(peak_while_stalled)} "
              f"(growth {mib(peak_while_stalled - before)}), at the end of the appends {mib(stalled)}, "
              f"after the drain {mib(after)}, overall peak {mib(sampler.peak)}")


# ---- 5. scheduler latency ---------------------------------------------------------------------------------


def parse_ts(value: str) -> float:
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()


async def scheduler_latencies(data_dir: Path, submissions: int, *server_args: str) -> dict[str, list[float]]:
    """Submit `submissions` runs one at a time to an idle server; each one's latencies, in seconds."""
    started, claimed, answered = [], [], []
    async with subprocess_server(data_dir, *server_args) as server, server.client() as client:
        for _ in range(submissions):
            await trio.sleep(0.2)  # idle: nothing running, nothing queued, no request in flight
            t0 = time.time()
            response = await client.post("/api/v1/runs", json={"command": ["date", "+%s.%N"]})
            answered.append(time.time() - t0)
            run_id = response.raise_for_status().json()["run"]["id"]
            await trio.sleep(0.1)
            run = await server.wait_status(run_id, TERMINAL)
            log = (await client.get(f"/api/v1/runs/{run_id}/log")).text
            started.append(float(log.split()[0]) - t0)
            claimed.append(parse_ts(run["started_at"]) - t0)
    return {"POST answered": answered, "claimed (started_at)": claimed, "child running (its own clock)": started}


def print_latencies(database: str, latencies: dict[str, list[float]], target_s: float) -> None:
    for name, values in latencies.items():
        print(f"{database:>10} {name:>30}: p50={ms(percentile(values, 0.5))} p99={ms(percentile(values, 0.99))} "
              f"max={ms(max(values))} (n={len(values)})")
    p50 = percentile(latencies["child running (its own clock)"], 0.5)
    print(f"{database:>10} enqueue → child running p50 {ms(p50)}: {p50 / target_s:.2f} × the target "
          f"({ms(target_s)}, SPEC §10)", flush=True)


async def scheduler(args, tmp: Path) -> None:
    """On SQLite, then (with --database-url) on PostgreSQL in a scratch database: side by side."""
    sqlite = await scheduler_latencies(tmp / "scheduler", args.submissions)
    print_latencies("SQLite", sqlite, SCHEDULER_TARGET_S)
    if args.database_url:
        print(describe_server(args.database_url))
        with scratch_database(args.database_url) as url:
            postgresql = await scheduler_latencies(
                tmp / "scheduler-pg", args.submissions, "--database-url", url
            )
        print_latencies("PostgreSQL", postgresql, SCHEDULER_TARGET_PG_S)
        ratio = percentile(postgresql["child running (its own clock)"], 0.5) / percentile(
            sqlite["child running (its own clock)"], 0.5
        )
        print(f"PostgreSQL / SQLite, enqueue → child running p50: {ratio:.2f}")
    started = sqlite["child running (its own clock)"]
    p50 = percentile(started, 0.5)
    print(f"computed, not measured: a scheduler polling every 250 ms adds a uniform 0..250 ms wait → p50 ≈ "
          f"{ms(p50 + POLL_INTERVAL / 2)}, p99 ≈ {ms(percentile(started, 0.99) + 0.99 * POLL_INTERVAL)}; "
          f"ratio of p50s ≈ {(p50 + POLL_INTERVAL / 2) / p50:.0f}x (SQLite)")


# ---- 6. connections ---------------------------------------------------------------------------------------


async def connections(args, tmp: Path) -> None:
    soft = raise_fd_limit(args.connections + 1000)
    print(f"file descriptor soft limit: {soft}")
    async with subprocess_server(tmp / "connections") as server:
        run_id = await sleeper_run(server)
        await trio.sleep(1)
        before = rss_bytes(server.pid)
        connected, stop, failures, alive = trio.Semaphore(0), trio.Event(), [], []
        handshakes = trio.Semaphore(50)  # in flight at once: a connect storm is not what is measured

        async def watch() -> None:
            try:
                async with handshakes:
                    ws_context = open_ws(server, run_id)
                    ws = await ws_context.__aenter__()
                    await ws.get_message()
            except (OSError, trio_websocket.HandshakeError, trio_websocket.ConnectionClosed) as exc:
                failures.append(repr(exc))  # a refused or dropped connection counts as not held
                connected.release()
                return
            try:
                connected.release()
                await stop.wait()
                alive.append(ws.closed is None)
            finally:
                await ws_context.__aexit__(None, None, None)

        async with trio.open_nursery() as nursery:
            start = time.perf_counter()
            for _ in range(args.connections):
                nursery.start_soon(watch)
            for _ in range(args.connections):
                await connected.acquire()
            print(f"{args.connections - len(failures)} connected in {time.perf_counter() - start:.1f} s, "
                  f"{len(failures)} failed {failures[:3]}")
            await trio.sleep(2)
            held = rss_bytes(server.pid)
            await trio.sleep(args.hold)
            end = rss_bytes(server.pid)
            stop.set()
        per = (held - before) / args.connections
        print(f"after holding {args.hold:g} s: {sum(alive)}/{args.connections} still open")
        print(f"server RSS: before {mib(before)}, all connected {mib(held)}, after the hold {mib(end)}; "
              f"per connection {per / 1024:.1f} KiB (all connected), {(end - before) / args.connections / 1024:.1f} "
              f"KiB (after the hold)")


# ---- main -------------------------------------------------------------------------------------------------

SCENARIOS = {"idle": idle, "fanout": fanout, "catchup": catchup, "slow": slow, "scheduler": scheduler,
             "connections": connections}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=[*SCENARIOS, "all"])
    parser.add_argument("--connections", type=int, help="idle: 1000, connections: 5000")
    parser.add_argument("--seconds", type=float, help="idle: window (30); fanout: production time (10)")
    parser.add_argument("--subscribers", type=int, default=100, help="fanout clients (100)")
    parser.add_argument("--rate", type=float, default=10_000, help="fanout lines per second (10000)")
    parser.add_argument("--client-processes", type=int, default=2, help="fanout: processes the clients are "
                        "spread over (2)")
    parser.add_argument("--bus-tick-s", type=float, help="fanout: the server's --bus-tick-s (its default)")
    parser.add_argument("--bus-tick-max-s", type=float, help="fanout: the server's --bus-tick-max-s (its default)")
    parser.add_argument("--bus-frames-per-s", type=float, help="fanout: the server's --bus-frames-per-s (its default)")
    parser.add_argument("--commit-interval-s", type=float,
                        help="fanout: the server's --commit-interval-s (its default)")
    parser.add_argument("--output-interval-s", type=float,
                        help="fanout: the server's --output-interval-s (its default)")
    parser.add_argument("--no-polling", dest="polling", action="store_false",
                        help="fanout: skip the polling baseline")
    parser.add_argument("--events", type=int, default=1_000_000, help="catchup and slow (1000000)")
    parser.add_argument("--submissions", type=int, default=100, help="scheduler (100)")
    parser.add_argument("--database-url", default="", help="scheduler: also on this PostgreSQL server "
                        "(a scratch database; the role needs CREATEDB)")
    parser.add_argument("--hold", type=float, default=45, help="connections: seconds to hold them (45)")
    return parser.parse_args()


async def main() -> None:
    args = parse_args()
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            scenario_args = argparse.Namespace(**vars(args))
            if scenario_args.connections is None:
                scenario_args.connections = 5000 if name == "connections" else 1000
            if scenario_args.seconds is None:
                scenario_args.seconds = 30 if name == "idle" else 10
            print(f"== {name} ==", flush=True)
            await SCENARIOS[name](scenario_args, Path(tmp))


if __name__ == "__main__":
    trio.run(main)
