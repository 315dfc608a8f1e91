#!/usr/bin/env python3
"""Webhook delivery latency (SPEC §10, §17): a run ends → its delivery reaches a local receiver.

A real `runsvc serve` subprocess, a webhook (or several, `--webhooks`) pointing at a receiver on
127.0.0.1 in this process (h11 over trio, answering 204 at once). `--clients` clients each submit runs of
`true` one after the other until `--runs` runs have been delivered to every webhook. The latency of a
delivery is the time from the run's `ended_at` (set in the transaction that stores the terminal event and
writes the outbox) to the moment the receiver has the whole request; both clocks are this machine's wall
clock. Printed: p50, p90, p99 and max, and the deliveries' attempts (all must be 1).

    .venv/bin/python scripts/bench/webhooks.py [--runs 200] [--clients 1] [--webhooks 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import h11
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from live_common import subprocess_server  # noqa: E402

from runsvc.timeutil import parse_ts  # noqa: E402


class Receiver:
    """Records (arrival wall time, path, body) of every POST and answers 204."""

    def __init__(self) -> None:
        self.url = ""
        self.arrivals: list[tuple[float, str, bytes]] = []
        self.per_run: dict[int, int] = {}  # run id -> deliveries received (the body is parsed once)
        self.changed = trio.Event()

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        target, body = b"", bytearray()
        try:
            async with stream:
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await stream.receive_some()
                        if not data:
                            return
                        conn.receive_data(data)
                    elif isinstance(event, h11.Request):
                        target = event.target
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        self.arrivals.append((time.time(), target.decode(), bytes(body)))
                        run_id = json.loads(body)["run"]["id"]
                        self.per_run[run_id] = self.per_run.get(run_id, 0) + 1
                        self.changed.set()
                        self.changed = trio.Event()
                        await stream.send_all(conn.send(h11.Response(status_code=204, headers=[])))
                        await stream.send_all(conn.send(h11.EndOfMessage()))
                        if conn.our_state is h11.MUST_CLOSE:
                            return
                        conn.start_next_cycle()
                        target, body = b"", bytearray()
                    elif isinstance(event, h11.ConnectionClosed):
                        return
        except trio.BrokenResourceError:
            return


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def main(args: argparse.Namespace) -> None:
    receiver = Receiver()
    async with trio.open_nursery() as nursery:
        await nursery.start(receiver.serve)
        with tempfile.TemporaryDirectory() as data_dir:
            async with subprocess_server(Path(data_dir)) as server, server.client() as client:
                hooks = []
                for index in range(args.webhooks):
                    response = await client.post("/api/v1/webhooks", json={"url": f"{receiver.url}/h{index}"})
                    response.raise_for_status()
                    hooks.append(response.json()["webhook"]["id"])
                remaining = args.runs

                async def submitter() -> None:
                    nonlocal remaining
                    async with server.client() as own:
                        while remaining > 0:
                            remaining -= 1
                            response = await own.post("/api/v1/runs", json={"command": ["true"]})
                            run_id = response.raise_for_status().json()["run"]["id"]
                            while receiver.per_run.get(run_id, 0) < args.webhooks:
                                await receiver.changed.wait()

                started = time.perf_counter()
                async with trio.open_nursery() as clients:
                    for _ in range(args.clients):
                        clients.start_soon(submitter)
                elapsed = time.perf_counter() - started
                latencies = []
                for arrived, _, body in receiver.arrivals:
                    ended_at = parse_ts(json.loads(body)["run"]["ended_at"]).timestamp()
                    latencies.append((arrived - ended_at) * 1000)
                attempts = set()
                for hook in hooks:
                    found = (await client.get(f"/api/v1/webhooks/{hook}/deliveries", params={"limit": 500})).json()
                    attempts |= {delivery["attempts"] for delivery in found["deliveries"]}
        nursery.cancel_scope.cancel()
    print(f"webhooks: {len(latencies)} deliveries of {args.runs} runs to {args.webhooks} webhook(s), "
          f"{args.clients} client(s), in {elapsed:.2f} s; attempts per delivery: {sorted(attempts)}")
    print(f"run ended_at -> receiver has the POST: p50 {statistics.median(latencies):.1f} ms, "
          f"p90 {percentile(latencies, 0.9):.1f} ms, p99 {percentile(latencies, 0.99):.1f} ms, "
          f"max {max(latencies):.1f} ms (SPEC §10: p50 <= 100 ms)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--webhooks", type=int, default=1)
    trio.run(main, parser.parse_args())
