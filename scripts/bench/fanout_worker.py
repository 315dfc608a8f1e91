#!/usr/bin/env python3
"""One process of `live.py fanout`'s clients: N WebSocket watchers of one run, with cheap checks.

    fanout_worker.py URL COOKIE RUN_ID CLIENTS RESULT_FILE

Prints "ready" once every watcher has its first frame, then reads until the server closes every socket
and writes a JSON summary to RESULT_FILE. Per frame it only looks at a few places of the text (C-speed
string searches, no JSON decoding, no regular expression over every event): the first and last seq and
the number of events, which must continue the sequence exactly (no gap, no duplicate, in order); and the
stamp of the frame's OLDEST stdout line (the time the child wrote it), so the latency recorded for a
frame is that of the line that waited longest in it.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import AsyncExitStack

import trio
import trio_websocket

from runsvc.wsclient import open_websocket

EVENT = '{"seq":'
STDOUT = '"kind":"stdout","data":"'


class Watcher:
    def __init__(self) -> None:
        self.last = 0
        self.in_order = True
        self.events = 0
        self.frames = 0
        self.end: int | None = None
        self.code: int | None = None

    def take(self, message: str, now: float, latencies: list[float]) -> None:
        if not message.startswith('{"type":"events"'):
            frame = json.loads(message)
            self.end = frame["last_seq"]
            return
        first_at = message.find(EVENT)
        last_at = message.rfind(EVENT)
        first = int(message[first_at + 7 : message.find(",", first_at)])
        last = int(message[last_at + 7 : message.find(",", last_at)])
        count = message.count(EVENT)
        if first != self.last + 1 or last - first + 1 != count:
            self.in_order = False
        self.last = last
        self.events += count
        self.frames += 1
        stamp_at = message.find(STDOUT)
        if stamp_at != -1:
            start = stamp_at + len(STDOUT)
            latencies.append(now - float(message[start : message.find(" ", start)]))


async def main() -> None:
    url, cookie, run_id, clients, result_file = sys.argv[1:6]
    ws_url = url.replace("http://", "ws://") + f"/api/v1/runs/{run_id}/events/ws"
    headers = [(b"Cookie", f"runsvc_session={cookie}".encode())]
    watchers = [Watcher() for _ in range(int(clients))]
    latencies: list[float] = []
    connected = trio.Semaphore(0)
    handshakes = trio.CapacityLimiter(20)

    async def watch(watcher: Watcher) -> None:
        async with AsyncExitStack() as stack:
            async with handshakes:
                ws = await stack.enter_async_context(
                    open_websocket(ws_url, extra_headers=headers, message_queue_size=64, max_message_size=2**24)
                )
            watcher.take(await ws.get_message(), time.time(), [])
            connected.release()
            try:
                while True:
                    message = await ws.get_message()
                    watcher.take(message, time.time(), latencies)
            except trio_websocket.ConnectionClosed as closed:
                watcher.code = closed.reason.code

    cpu_start = time.process_time()
    async with trio.open_nursery() as nursery:
        for watcher in watchers:
            nursery.start_soon(watch, watcher)
        for _ in watchers:
            await connected.acquire()
        print("ready", flush=True)
        cpu_start = time.process_time()
    summary = {
        "watchers": [
            {"last": w.last, "in_order": w.in_order, "events": w.events, "frames": w.frames, "end": w.end,
             "code": w.code}
            for w in watchers
        ],
        "latencies": latencies,
        "cpu_s": time.process_time() - cpu_start,
    }
    await trio.Path(result_file).write_text(json.dumps(summary))


if __name__ == "__main__":
    trio.run(main)
