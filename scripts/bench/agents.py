#!/usr/bin/env python3
"""Remote agents against the local executor: a real `runsvc serve` and a real `runsvc agent`, on 127.0.0.1.

Prints, for an idle connected agent and for the local executor side by side:
- enqueue → child started: POST /runs until the child's first instruction (`date +%s%N`), p50/p90;
- one run printing flat out (`seq 1 N`): lines stored per second (running → terminal, every line read back);
- lines lost or repeated across K cuts of a TCP proxy between agent and server (agent only).

    .venv/bin/python scripts/bench/agents.py [--starts 50] [--lines 1000000] [--cuts 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.e2e.agent_helpers import (  # noqa: E402
    CuttableProxy,
    admin_client,
    all_events,
    new_token,
    start_agent,
    submit,
    wait_status,
)
from tests.helpers import TERMINAL, start_server  # noqa: E402


async def start_latency(client, labels: list[str], count: int) -> list[float]:
    """ms from just before POST /runs to the child's first instruction, for runs one after another."""
    samples = []
    for _ in range(count):
        before = time.time_ns()
        run = await submit(client, ["date", "+%s%N"], labels=labels)
        await wait_status(client, run["id"], TERMINAL)
        out = [e["data"] for e in await all_events(client, run["id"]) if e["kind"] == "stdout"]
        samples.append((int(out[0]) - before) / 1e6)
    return samples


async def flat_out(client, labels: list[str], lines: int) -> tuple[float, int]:
    """(lines stored per second from `running` to the terminal state, lines read back)."""
    run = await submit(client, ["seq", "1", str(lines)], labels=labels)
    done = await wait_status(client, run["id"], TERMINAL)
    events = await all_events(client, run["id"])
    stamps = {e["data"]["status"]: e["ts"] for e in events if e["kind"] == "state"}
    from runsvc.timeutil import parse_ts

    seconds = (parse_ts(stamps[done["status"]]) - parse_ts(stamps["running"])).total_seconds()
    stored = sum(1 for e in events if e["kind"] == "stdout")
    return stored / seconds, stored


async def cuts(client, proxy: CuttableProxy, agent, labels: list[str], count: int, tmp: Path) -> tuple[int, int]:
    """(lines lost, lines repeated) of a run printing 100,000 lines while the connection is cut `count` times."""
    gate = tmp / "gate"
    script = ("import os, sys, time\nfor i in range(100000):\n    print(f'line {i}')\n"
              "    if i % 1000 == 0: sys.stdout.flush(); time.sleep(0.1)\n"
              f"    if i == 99000:\n        while not os.path.exists({str(gate)!r}): time.sleep(0.05)\n")
    run = await submit(client, [sys.executable, "-c", script], labels=labels)
    connects = sum("msg=connected" in line for line in agent.lines)
    for cut in range(count):
        seen = (await client.get(f"/api/v1/runs/{run['id']}")).json()["run"]["last_seq"]
        # Cut only after more output arrived since the last reconnect (the run is ~10 s long).
        while (await client.get(f"/api/v1/runs/{run['id']}")).json()["run"]["last_seq"] < min(seen + 500, 98000):
            await trio.sleep(0.01)
        await proxy.cut()
        await agent.wait_for("msg=connected", connects + cut + 1)
    gate.touch()
    await wait_status(client, run["id"], TERMINAL)
    got = [e["data"] for e in await all_events(client, run["id"]) if e["kind"] == "stdout"]
    expected = [f"line {i}" for i in range(100000)]
    lost = len(set(expected) - set(got))
    repeated = len(got) - len(set(got))
    return lost, repeated


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[int(len(ordered) * 0.9) - 1]
    return f"p50 {statistics.median(samples):6.1f} ms   p90 {p90:6.1f} ms   (n={len(samples)})"


async def main(args: argparse.Namespace) -> None:
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="runsvc-bench-agents-"))
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, tmp / "data", "--local-labels", "local")
        port = int(server.url.rsplit(":", 1)[1])
        proxy = CuttableProxy(port)
        await nursery.start(proxy.serve)
        async with admin_client(server.url) as client:
            token = await new_token(client, labels=["remote"])
            agent = await start_agent(nursery, f"http://127.0.0.1:{proxy.port}", tmp / "agent", "--enroll", "-",
                                      "--name", "bench", stdin=token.encode())
            await agent.wait_for("msg=connected")
            await start_latency(client, ["remote"], 3)  # warm up both paths
            await start_latency(client, ["local"], 3)
            agent_starts = await start_latency(client, ["remote"], args.starts)
            local_starts = await start_latency(client, ["local"], args.starts)
            print("enqueue -> child started")
            print(f"  agent  {summary(agent_starts)}")
            print(f"  local  {summary(local_starts)}")
            agent_rate, agent_lines = await flat_out(client, ["remote"], args.lines)
            local_rate, local_lines = await flat_out(client, ["local"], args.lines)
            print(f"one run printing flat out (seq 1 {args.lines})")
            print(f"  agent  {agent_rate:10,.0f} lines/s stored ({agent_lines:,} lines read back)")
            print(f"  local  {local_rate:10,.0f} lines/s stored ({local_lines:,} lines read back)")
            lost, repeated = await cuts(client, proxy, agent, ["remote"], args.cuts, tmp)
            print(f"agent run of 100,000 lines, connection cut {args.cuts} times: lost {lost}, repeated {repeated}")
        server.send_signal()
        await server.wait()
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--starts", type=int, default=50)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--cuts", type=int, default=10)
    trio.run(main, parser.parse_args())
