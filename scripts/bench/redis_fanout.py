#!/usr/bin/python3
"""The fan-out workload of `live.py fanout`, served by Redis Streams instead, as a peer to compare with.

    /usr/bin/python3 scripts/bench/redis_fanout.py [--subscribers 100] [--rate 1000] [--seconds 10]
                                                   [--client-processes 2]

Needs Debian's `redis-server` and `python3-redis` (apt; for this benchmark only, never a runsvc
dependency), so it runs with the system Python, not the venv. It starts its own redis-server (AOF on,
fsync every second: durable like runsvc's WAL with synchronous=NORMAL) on 127.0.0.1, one producer that
XADDs `rate` entries/s (every millisecond, the entries due, each "<time.time()> <i>", like live.py's
child), and N readers spread over P processes, each looping on XREAD BLOCK from its last id. Like
fanout_worker.py, a reader checks that each reply continues its sequence and records the latency of each
reply's OLDEST entry. Prints the same figures as `live.py fanout`: p50/p99 of those latencies, and
redis-server's CPU (from /proc) per million delivered entries.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STREAM = "run"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


async def reader(port: int, total: int, result: dict, latencies: list[float]) -> None:
    import redis.asyncio as redis

    client = redis.Redis(host="127.0.0.1", port=port)
    last_id, expected, in_order = "0-0", 0, True
    while expected < total:
        reply = await client.xread({STREAM: last_id}, count=100_000, block=0)
        now = time.time()
        entries = reply[0][1]
        stamp, first = entries[0][1][b"d"].split(b" ")
        latencies.append(now - float(stamp))
        last = int(entries[-1][1][b"d"].split(b" ")[1])
        if int(first) != expected or last - int(first) + 1 != len(entries):
            in_order = False
        expected = last + 1
        last_id = entries[-1][0]
    result.update(received=expected, in_order=in_order)
    await client.close()  # redis-py 4.3 (Debian 12) has close(), not aclose()


def client_process(port: int, count: int, total: int, result_file: str) -> None:
    """A process of `count` readers: prints "ready", reads `total` entries each, writes a summary."""

    async def main() -> None:
        results = [{} for _ in range(count)]
        latencies: list[float] = []
        print("ready", flush=True)
        start = time.process_time()
        await asyncio.gather(*(reader(port, total, r, latencies) for r in results))
        Path(result_file).write_text(json.dumps(
            {"readers": results, "latencies": latencies, "cpu_s": time.process_time() - start}))

    asyncio.run(main())


async def produce(port: int, rate: float, total: int) -> None:
    import redis.asyncio as redis

    client = redis.Redis(host="127.0.0.1", port=port)
    sent, start = 0, time.time()
    while sent < total:
        now = time.time()
        due = min(total, int((now - start) * rate))
        if due > sent:
            pipe = client.pipeline(transaction=False)
            for i in range(sent, due):
                pipe.xadd(STREAM, {"d": f"{now:.6f} {i}"})
            await pipe.execute()
            sent = due
        await asyncio.sleep(0.001)
    await client.close()


def free_port() -> int:
    # Bind-then-release: redis-server has no "port 0, tell me which"; a race here only fails the run.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--client", nargs=4, help=argparse.SUPPRESS)  # internal: port count total file
    args = parser.parse_args()
    if args.client:
        port, count, total, file = args.client
        client_process(int(port), int(count), int(total), file)
        return
    total = int(args.rate * args.seconds)
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        server = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", tmp, "--save", "",
             "--appendonly", "yes", "--appendfsync", "everysec"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            counts = [args.subscribers // args.client_processes + (i < args.subscribers % args.client_processes)
                      for i in range(args.client_processes)]
            files = [f"{tmp}/client-{i}.json" for i in range(len(counts))]
            clients = [
                subprocess.Popen([sys.executable, __file__, "--client", str(port), str(n), str(total), f],
                                 stdout=subprocess.PIPE)
                for n, f in zip(counts, files, strict=True)
            ]
            for client in clients:
                assert client.stdout.readline().strip() == b"ready"
            time.sleep(0.5)  # let every reader issue its first XREAD BLOCK
            cpu, start = cpu_seconds(server.pid), time.perf_counter()
            asyncio.run(produce(port, args.rate, total))
            produced = time.perf_counter() - start
            for client in clients:
                client.wait()
            elapsed = time.perf_counter() - start
            server_cpu = cpu_seconds(server.pid) - cpu
        finally:
            server.terminate()
            server.wait()
        results = [json.loads(Path(f).read_text()) for f in files]
    readers = [r for res in results for r in res["readers"]]
    latencies = [lat for res in results for lat in res["latencies"]]
    delivered = sum(r["received"] for r in readers)
    ok = sum(r["in_order"] and r["received"] == total for r in readers)
    print(f"redis: {total} entries at {args.rate:,.0f}/s (producer took {produced:.1f} s); {ok}/{len(readers)} "
          f"readers received all in order; {len(latencies):,} replies, {delivered:,} entries delivered")
    print(f"redis latency of each reply's oldest entry over {len(latencies):,} replies: "
          f"p50={percentile(latencies, 0.5) * 1000:.1f} ms p99={percentile(latencies, 0.99) * 1000:.1f} ms "
          f"max={max(latencies) * 1000:.1f} ms")
    print(f"redis: last reader done {elapsed:.1f} s after the start; redis-server CPU "
          f"{server_cpu / elapsed:.0%} of a core, {server_cpu / delivered * 1e6:.2f} CPU-s per million "
          f"delivered entries; readers {sum(r['cpu_s'] for r in results) / elapsed:.0%} over "
          f"{args.client_processes} processes")


if __name__ == "__main__":
    main()
