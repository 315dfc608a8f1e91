#!/usr/bin/env python3
"""Short runs at spawn speed (SPEC §10, issue 22): runsvc end to end beside bare process spawning.

In one run, on this machine:
1. bare: `trio.run_process(["true"])`, N times, C at a time, in this process (the anchor);
2. runsvc end to end: a real `runsvc serve` subprocess with `--max-concurrent-runs C`; K API clients
   submit N runs of `true` between them; the time from the first POST to the last run terminal (seen on
   the runs feed WebSocket), the ratio to bare, the server's CPU, and SQL statements and commits per run
   (from /metrics). Every run is then checked: succeeded, with its events;
3. submits alone: a second fresh server, the same K clients submitting N runs that no executor can take
   (a label nobody has), so only the submit path is measured;
4. execute alone (`--phases execute`, not in the default set): in this process, N runs of `true` queued
   through the run service before the scheduler starts, then the time until the last is terminal, the
   CPU per run (this process, all threads) and the claim transactions' sizes: the claim and execution
   path without HTTP.

    .venv/bin/python scripts/bench/throughput.py [--runs 1000] [--clients 8] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from live_common import cpu_seconds, subprocess_server  # noqa: E402

from runsvc.wsclient import open_websocket  # noqa: E402

TERMINAL = {"succeeded", "failed", "cancelled", "timed_out", "interrupted"}


async def bare(runs: int, concurrency: int) -> float:
    """Runs per second of `true` spawned and waited for by Trio, `concurrency` at a time."""
    limiter = trio.CapacityLimiter(concurrency)

    async def one() -> None:
        async with limiter:
            await trio.run_process(["true"])

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(runs):
            nursery.start_soon(one)
    return runs / (time.perf_counter() - start)


async def start_profiler(args, server, phase: str) -> trio.Process | None:
    """py-spy recording the server's collapsed stacks during one phase, if asked for (--py-spy)."""
    if not args.py_spy:
        return None
    return await trio.lowlevel.open_process(
        [args.py_spy, "record", "--pid", str(server.pid), "--format", "raw", "--rate", "200",
         "--output", f"{args.profile_prefix}.{phase}.txt", "--nonblocking", *args.py_spy_args.split()],
    )


async def stop_profiler(profiler: trio.Process | None) -> None:
    if profiler is not None:
        profiler.send_signal(2)  # SIGINT: py-spy writes its file and exits
        await profiler.wait()


async def metric(server, name: str) -> float:
    async with server.client() as client:
        text = (await client.get("/metrics")).raise_for_status().text
    match = re.search(rf"^{name}(?:_total)? (\S+)$", text, re.M)
    assert match, name
    return float(match.group(1))


async def submit_all(server, runs: int, clients: int, body: dict) -> list[int]:
    """POST `runs` runs from `clients` concurrent clients (each its own connection); their ids."""
    ids: list[int] = []
    remaining = iter(range(runs))

    async def client_loop() -> None:
        async with server.client() as client:
            for _ in remaining:
                response = await client.post("/api/v1/runs", json=body)
                ids.append(response.raise_for_status().json()["run"]["id"])

    async with trio.open_nursery() as nursery:
        for _ in range(clients):
            nursery.start_soon(client_loop)
    return ids


async def end_to_end(args, tmp: Path) -> None:
    async with subprocess_server(tmp / "e2e", "--max-concurrent-runs", str(args.concurrency),
                                 *args.server_args.split()) as server:
        profiler = await start_profiler(args, server, "e2e")
        statements0 = await metric(server, "runsvc_sql_statements")
        commits0 = await metric(server, "runsvc_event_commits")
        ws_url = server.url.replace("http://", "ws://") + "/api/v1/runs/feed/ws"
        finished: set[int] = set()
        all_done = trio.Event()
        expected: set[int] = set()
        headers = [("Cookie", f"runsvc_session={server.cookie}"), ("Origin", server.url)]
        async with open_websocket(ws_url, extra_headers=headers, message_queue_size=100_000,
                                  max_message_size=2**20) as feed:

            async def follow() -> None:
                while True:
                    frame = json.loads(await feed.get_message())
                    run = frame.get("run")
                    if run and run["status"] in TERMINAL:
                        finished.add(run["id"])
                        if expected and expected <= finished:
                            all_done.set()
                            return

            async with trio.open_nursery() as nursery:
                nursery.start_soon(follow)
                cpu0, start, own0 = cpu_seconds(server.pid), time.perf_counter(), cpu_seconds()
                ids = await submit_all(server, args.runs, args.clients, {"command": ["true"]})
                submitted = time.perf_counter() - start
                done_by_then = len(finished)
                expected.update(ids)
                if expected <= finished:
                    all_done.set()
                with trio.fail_after(600):
                    await all_done.wait()
                elapsed, cpu = time.perf_counter() - start, cpu_seconds(server.pid) - cpu0
                own = cpu_seconds() - own0
                nursery.cancel_scope.cancel()
        await stop_profiler(profiler)
        statements = await metric(server, "runsvc_sql_statements") - statements0
        commits = await metric(server, "runsvc_event_commits") - commits0
        bad = 0
        async with server.client() as client:
            for run_id in ids:
                run = (await client.get(f"/api/v1/runs/{run_id}")).json()["run"]
                events = (await client.get(f"/api/v1/runs/{run_id}/events")).json()
                kinds = [e["data"]["status"] for e in events["events"] if e["kind"] == "state"]
                if run["status"] != "succeeded" or kinds != ["queued", "running", "succeeded"]:
                    bad += 1
    rate = args.runs / elapsed
    tail = (args.runs - done_by_then) / max(elapsed - submitted, 1e-9)
    print(f"runsvc end to end: {rate:,.0f} runs/s ({args.runs} runs in {elapsed:.2f} s; submits took "
          f"{submitted:.2f} s, {done_by_then} runs done by then, the rest at {tail:,.0f} runs/s), "
          f"server CPU {cpu:.2f} s ({cpu / elapsed:.0%} of a core), "
          f"{statements / args.runs:.1f} SQL statements and {commits / args.runs:.2f} commits per run; "
          f"runs not recorded right: {bad}; bench client CPU {own:.2f} s")
    args.results["e2e"] = rate


async def submits_alone(args, tmp: Path) -> None:
    async with subprocess_server(tmp / "submits", "--max-concurrent-runs", str(args.concurrency),
                                 *args.server_args.split()) as server:
        profiler = await start_profiler(args, server, "submits")
        cpu0, start, own0 = cpu_seconds(server.pid), time.perf_counter(), cpu_seconds()
        await submit_all(server, args.runs, args.clients, {"command": ["true"], "labels": ["bench-nobody"]})
        elapsed, cpu = time.perf_counter() - start, cpu_seconds(server.pid) - cpu0
        own = cpu_seconds() - own0
        await stop_profiler(profiler)
    print(f"submits alone: {args.runs / elapsed:,.0f} POST /runs per second from {args.clients} clients "
          f"(server CPU {cpu:.2f} s, {cpu / elapsed:.0%} of a core; bench client CPU {own:.2f} s)")


async def execute_only(args, tmp: Path) -> None:
    from runsvc.accounts import Auth, Passwords
    from runsvc.config import Settings
    from runsvc.services import build_services
    from runsvc.store import open_store
    from runsvc.store import runs as run_sql

    sizes: collections.Counter[int] = collections.Counter()
    claim_batch = run_sql.claim_batch

    def counted(conn, ts, slots):
        claimed = claim_batch(conn, ts, slots)
        sizes[len(claimed[0])] += 1
        return claimed

    run_sql.claim_batch = counted  # the scheduler calls it through the module
    settings = Settings(data_dir=tmp / "execute", work_dir=tmp / "execute-work", max_concurrent_runs=args.concurrency)
    settings.data_dir.mkdir()
    async with open_store(settings.database_path) as store:
        services = build_services(settings, store, Auth(store=store, passwords=Passwords(), session_ttl_s=60))
        for _ in range(args.runs):
            await services.runs.submit(command=["true"], env={}, timeout_s=60, name=None, created_by="bench")
        watcher = services.feed.watch()
        done = 0
        start, cpu0, commits0 = time.perf_counter(), time.process_time(), store.statistics().transactions
        async with trio.open_nursery() as nursery:
            await nursery.start(services.scheduler.run)
            while done < args.runs:
                done += json.loads(await watcher.receive())["run"]["status"] in TERMINAL
            nursery.cancel_scope.cancel()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
        commits = store.statistics().transactions - commits0
    run_sql.claim_batch = claim_batch
    print(f"execute alone: {args.runs / elapsed:,.0f} runs/s, CPU {cpu / args.runs * 1000:.2f} ms per run, "
          f"{commits / args.runs:.2f} commits per run; claims by runs claimed: {dict(sorted(sizes.items()))}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--phases", default="bare,e2e,submits",
                        help="which of bare, e2e, submits, execute to run (comma-separated)")
    parser.add_argument("--server-args", default="", help="more `runsvc serve` options for both servers")
    parser.add_argument("--py-spy", help="path of a py-spy binary: profile the server in each phase")
    parser.add_argument("--py-spy-args", default="",
                        help="more py-spy record options, e.g. --gil (only the thread holding the GIL)")
    parser.add_argument("--profile-prefix", default="throughput.profile",
                        help="py-spy writes <prefix>.e2e.txt and <prefix>.submits.txt")
    args = parser.parse_args()
    args.results = {}
    phases = set(args.phases.split(","))
    if "bare" in phases:
        args.results["bare"] = await bare(args.runs, args.concurrency)
        print(f"bare trio.run_process(['true']), {args.concurrency} at a time: {args.results['bare']:,.0f} runs/s")
    with tempfile.TemporaryDirectory(prefix="runsvc-bench-") as tmp:
        if "e2e" in phases:
            await end_to_end(args, Path(tmp))
        if "submits" in phases:
            await submits_alone(args, Path(tmp))
        if "execute" in phases:
            await execute_only(args, Path(tmp))
    if "bare" in args.results and "e2e" in args.results:
        print(f"ratio end to end / bare: {args.results['e2e'] / args.results['bare']:.2f} (SPEC §10: ≥ 0.5)")


if __name__ == "__main__":
    trio.run(main)
