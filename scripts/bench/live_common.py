"""Shared helpers of scripts/bench/live.py: a server (subprocess or in-process), logging in, WebSocket
clients that check order and measure latency, the polling baseline, RSS sampling, percentiles."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import httpx
import trio
import trio_websocket

from runsvc.wsclient import open_websocket

ROOT = Path(__file__).resolve().parents[2]
ADMIN_PASSWORD = "bench-admin-password-1"
SEQ = re.compile(r'"seq":(\d+)')
STAMP = re.compile(r'"kind":"stdout","data":"(\d+\.\d+) ')  # the time CHATTY wrote the line
POLL_SQL = "SELECT seq, ts, kind, data FROM run_events WHERE run_id = ? AND seq > ? ORDER BY seq"

# The child that produces output: waits for GO_FILE, then prints RATE lines/s for SECONDS (RATE 0: as
# fast as it can, TOTAL lines). Each line is "<time.time() when written> <i>".
CHATTY = r"""
import os, sys, time
rate, seconds, total, go = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
while not os.path.exists(go):
    time.sleep(0.001)
write, flush = sys.stdout.write, sys.stdout.flush
sent, start = 0, time.time()
while sent < total:
    now = time.time()
    due = min(total, sent + 10000) if rate <= 0 else min(total, int((now - start) * rate))
    if due > sent:
        stamp = f"{now:.6f} "
        write("".join(stamp + str(i) + "\n" for i in range(sent, due)))
        flush()
        sent = due
    if rate > 0:
        time.sleep(0.001)
"""
SLEEPER = [sys.executable, "-c", "import time; time.sleep(3600)"]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def rss_bytes(pid: int) -> int:
    """VmRSS of a process, from /proc (psutil is not a dependency)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU time of a process (default: this one), from /proc."""
    fields = Path(f"/proc/{pid or 'self'}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mib(size: float) -> str:
    return f"{size / 2**20:.1f} MiB"


class RssSampler:
    """Samples a process's RSS every `interval` seconds while running; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.pid, self.interval, self.peak = pid, interval, 0

    def sample(self) -> int:
        value = rss_bytes(self.pid)
        self.peak = max(self.peak, value)
        return value

    async def run(self) -> None:
        while True:
            self.sample()
            await trio.sleep(self.interval)


def raise_fd_limit(needed: int) -> int:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        soft = min(hard, needed) if hard != resource.RLIM_INFINITY else needed
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


# ---- servers ------------------------------------------------------------------------------------------


@attrs.define
class Server:
    url: str
    cookie: str = ""
    csrf: str = ""
    pid: int | None = None  # the server process (subprocess mode)
    data_dir: Path | None = None
    services: object = None  # in-process mode: runsvc's Services

    @property
    def db_path(self) -> Path:
        return self.data_dir / "runsvc.db"

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, cookies={"runsvc_session": self.cookie},
                                 headers={"X-CSRF-Token": self.csrf}, timeout=30)

    async def submit(self, command: list[str], **extra) -> dict:
        async with self.client() as client:
            response = await client.post("/api/v1/runs", json={"command": command, **extra})
            response.raise_for_status()
            return response.json()["run"]

    async def get_run(self, run_id: int) -> dict:
        async with self.client() as client:
            return (await client.get(f"/api/v1/runs/{run_id}")).raise_for_status().json()["run"]

    async def wait_status(self, run_id: int, statuses: tuple[str, ...], every: float = 0.02) -> dict:
        while (run := await self.get_run(run_id))["status"] not in statuses:
            await trio.sleep(every)
        return run

    async def cancel(self, run_id: int) -> None:
        async with self.client() as client:
            (await client.post(f"/api/v1/runs/{run_id}/cancel")).raise_for_status()


async def login(server: Server, username: str = "admin", password: str = ADMIN_PASSWORD) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        response = await client.post("/api/v1/auth/login", json={"username": username, "password": password})
        response.raise_for_status()
        server.cookie, server.csrf = client.cookies["runsvc_session"], response.json()["csrf_token"]


# Every benchmark watches as one user (the admin), with up to 5,000 sockets at once: far past the
# per-user cap a real server keeps (max_websockets_per_user), which is not what is measured here.
BENCH_SOCKETS_PER_USER = 100_000
BENCH_CAPS = ("--max-websockets-per-user", str(BENCH_SOCKETS_PER_USER))


@asynccontextmanager
async def subprocess_server(data_dir: Path, *args: str) -> AsyncIterator[Server]:
    """`python -m runsvc serve --port 0` of this worktree, logged in as admin; SIGTERM at the end."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSVC_")}
    env.update(RUNSVC_ADMIN_PASSWORD=ADMIN_PASSWORD, PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "runsvc", "serve", "--host", "127.0.0.1", "--port", "0",
               "--data-dir", str(data_dir), "--drain-s", "0.5", "--kill-grace-s", "1", *BENCH_CAPS, *args]
    process = await trio.lowlevel.open_process(command, cwd=str(ROOT), env=env, stdin=subprocess.DEVNULL,
                                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url: list[str] = []
    listening = trio.Event()

    async def pump() -> None:  # drain stderr for the whole life of the server, or it blocks
        buffer = b""
        async for chunk in process.stderr:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if not url and b"listening on http://" in line:
                    url.append(line.split(b"listening on ")[1].split()[0].strip(b'"').decode())
                    listening.set()
        listening.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump)
        with trio.fail_after(30):
            await listening.wait()
        if not url:
            raise RuntimeError("server exited before listening")
        server = Server(url=url[0], pid=process.pid, data_dir=data_dir)
        await login(server)
        try:
            yield server
        finally:
            process.terminate()
            with trio.move_on_after(30):
                await process.wait()
            process.kill()


@asynccontextmanager
async def inprocess_server(data_dir: Path, **overrides) -> AsyncIterator[Server]:
    """runsvc's `serve()` in this process (so its statement counter can be read), logged in as admin."""
    from runsvc.config import Settings
    from runsvc.server import serve

    os.environ["RUNSVC_ADMIN_PASSWORD"] = ADMIN_PASSWORD
    data_dir.mkdir(parents=True, exist_ok=True)
    overrides = {"max_websockets_per_user": BENCH_SOCKETS_PER_USER, **overrides}
    settings = Settings(host="127.0.0.1", port=0, data_dir=data_dir, drain_s=0.5, kill_grace_s=1.0, **overrides)
    async with trio.open_nursery() as nursery:
        runsvc_server = await nursery.start(serve, settings)
        server = Server(url=runsvc_server.url, data_dir=data_dir, services=runsvc_server.services)
        await login(server)
        try:
            yield server
        finally:
            runsvc_server.request_shutdown()


# ---- WebSocket clients ----------------------------------------------------------------------------------


@asynccontextmanager
async def open_ws(server: Server, run_id: int, after_seq: int = 0, queue: int = 1):
    url = server.url.replace("http://", "ws://") + f"/api/v1/runs/{run_id}/events/ws?after_seq={after_seq}"
    headers = [(b"Cookie", f"runsvc_session={server.cookie}".encode())]
    async with open_websocket(url, extra_headers=headers, message_queue_size=queue, max_message_size=2**24) as ws:
        yield ws


@attrs.define
class Watcher:
    """What one client saw: the last seq, whether every frame continued the sequence with no gap or
    duplicate, the end frame and close code, and (if asked) append→receive latencies of stdout lines."""

    last: int = 0
    in_order: bool = True
    frames: int = 0
    end: int | None = None
    code: int | None = None
    measure: bool = False
    latencies: list[float] = attrs.Factory(list)

    def take(self, message: str, now: float) -> None:
        # Regular expressions instead of json.loads: parsing 1,000,000 events/s into dicts costs more
        # than a core, and this process shares the machine with the server. (Event data cannot contain
        # a bare `"seq":`: quotes inside strings are escaped.)
        if not message.startswith('{"type":"events"'):
            frame = json.loads(message)
            assert frame["type"] == "end", frame
            self.end = frame["last_seq"]
            return
        seqs = list(map(int, SEQ.findall(message)))
        self.frames += 1
        if seqs != list(range(self.last + 1, self.last + 1 + len(seqs))):
            self.in_order = False
        self.last = seqs[-1]
        if self.measure:
            self.latencies.extend(now - float(stamp) for stamp in STAMP.findall(message))

    async def read(self, ws, until_seq: int | None = None) -> None:
        """Read frames until the server closes (or `until_seq` has been received)."""
        try:
            while until_seq is None or self.last < until_seq:
                message = await ws.get_message()
                self.take(message, time.time())
        except trio_websocket.ConnectionClosed as closed:
            self.code = closed.reason.code

    def complete(self, last_seq: int) -> bool:
        return self.in_order and self.last == last_seq


# ---- the polling baseline -------------------------------------------------------------------------------


class Poller:
    """The design the seed replaced: one `SELECT … WHERE seq > ?` every `interval` seconds on the
    poller's own connection, in a worker thread. Checks order and measures latency like Watcher."""

    def __init__(self, db_path: Path, run_id: int, measure: bool = False):
        self.conn = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA busy_timeout = 5000")
        self.run_id, self.measure = run_id, measure
        self.last, self.in_order, self.statements, self.latencies = 0, True, 0, []

    def _select(self) -> list[tuple]:
        return self.conn.execute(POLL_SQL, (self.run_id, self.last)).fetchall()

    async def poll(self, limiter: trio.CapacityLimiter) -> int:
        rows = await trio.to_thread.run_sync(self._select, limiter=limiter)
        now = time.time()
        self.statements += 1
        if rows:
            seqs = [row[0] for row in rows]
            if seqs != list(range(self.last + 1, self.last + 1 + len(seqs))):
                self.in_order = False
            self.last = seqs[-1]
            if self.measure:
                self.latencies.extend(now - float(r[3].split(" ", 1)[0]) for r in rows if r[2] == "stdout")
        return len(rows)

    async def run(self, interval: float, deadline: float, limiter: trio.CapacityLimiter, phase: float) -> None:
        """Poll every `interval` until trio time `deadline`, starting `phase` seconds in."""
        next_at = trio.current_time() + phase
        while next_at < deadline:
            await trio.sleep_until(next_at)
            await self.poll(limiter)
            next_at += interval

    def close(self) -> None:
        self.conn.close()
