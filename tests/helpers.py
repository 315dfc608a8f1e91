"""Test helpers: a real `python -m runsvc serve` subprocess, and log-line parsing."""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import argon2
import attrs
import httpx
import trio

from runsvc import wsclient
from runsvc.model import TERMINAL_STATUSES

# argon2id with the cheapest parameters: tests log in hundreds of times. The server's default is
# argon2-cffi's (t=3, m=64 MiB, p=4), which subprocess tests use.
FAST_HASHER = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)

LISTENING = re.compile(r'listening on (http://[^\s"]+)')


@attrs.define
class ServerProcess:
    """`python -m runsvc serve` started exactly as a user would, bound to 127.0.0.1 port 0."""

    process: trio.Process
    url: str
    stderr_lines: list[str]

    def send_signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    async def wait(self) -> int:
        return await self.process.wait()

    def log_text(self) -> str:
        return "\n".join(self.stderr_lines)


# The database of the servers start_server() starts: "" (SQLite in their data dir) unless a test module
# runs on both backends (the `server_backend` fixture of tests/e2e/conftest.py sets it per test).
SERVER_DATABASE = {"url": ""}


def server_db_rows(data_dir: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Rows of `sql` (SQLite's spelling, `?` placeholders) from the database of the servers this test
    started: their data dir's SQLite file, or SERVER_DATABASE's PostgreSQL database."""
    if SERVER_DATABASE["url"]:
        from runsvc.store import postgres

        raw = postgres.connect(SERVER_DATABASE["url"])
        try:
            return [tuple(row) for row in raw.execute(postgres.translate(sql), params).fetchall()]
        finally:
            raw.close()
    conn = sqlite3.connect(data_dir / "runsvc.db")
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


@contextmanager
def database_of(settings) -> Iterator[Any]:
    """A connection of its own (autocommit) to the database of `settings`: SQLite or PostgreSQL."""
    from runsvc.store import connections, postgres

    if settings.database_url:
        conn: Any = postgres.PgConnection(postgres.connect(settings.database_url), connections.StatementCounter(-1))
    else:
        conn = connections.connect(settings.database_path)
    try:
        yield conn
    finally:
        conn.close()


def all_rows_as_text(conn) -> str:
    """PostgreSQL: every row of every table of the current schema, as the text of the row."""
    tables = [row[0] for row in conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
    )]
    return "\n".join(row[0] for table in tables for row in conn.execute(f'SELECT t::text FROM "{table}" AS t'))


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a runsvc child process: ours without RUNSVC_* settings, plus `extra`, plus the
    database of this test (as RUNSVC_DATABASE_URL: a password never on a command line)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSVC_")}
    if SERVER_DATABASE["url"]:
        env["RUNSVC_DATABASE_URL"] = SERVER_DATABASE["url"]
    env.update(extra)
    return env


async def _pump_stderr(stream: trio.abc.ReceiveStream, lines: list[str], found: trio.Event) -> None:
    buffer = b""
    async for chunk in stream:
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for raw in complete:
            line = raw.decode("utf-8", "replace")
            lines.append(line)
            if LISTENING.search(line):
                found.set()
    found.set()  # stream closed: the process died before listening


async def _kill_when_cancelled(process: trio.Process) -> None:
    """If the test fails (its nursery is cancelled) while the server still runs, kill the server."""
    try:
        await process.wait()
    finally:
        if process.returncode is None:
            process.kill()


ADMIN_PASSWORD = "admin-password-1"  # the first admin's, on servers from start_server


@asynccontextmanager
async def admin_login(url: str) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    """An HTTP client logged in as start_server's first admin, with the CSRF header set on it, and that
    header (for requests that pass their own headers)."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        response = await client.post("/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
        assert response.status_code == 200, response.text
        csrf = {"X-CSRF-Token": response.json()["csrf_token"]}
        client.headers.update(csrf)
        yield client, csrf


async def start_server(
    nursery: trio.Nursery,
    data_dir: Path,
    *args: str,
    env: dict[str, str] | None = None,
) -> ServerProcess:
    """Start the server in `nursery`; return once it logs its URL (fails if it dies first)."""
    command = [sys.executable, "-m", "runsvc", "serve", "--host", "127.0.0.1", "--port", "0",
               "--data-dir", str(data_dir), *args]
    process = await trio.lowlevel.open_process(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env=env or child_env(RUNSVC_ADMIN_PASSWORD=ADMIN_PASSWORD),
    )
    lines: list[str] = []
    found = trio.Event()
    nursery.start_soon(_pump_stderr, process.stderr, lines, found)
    nursery.start_soon(_kill_when_cancelled, process)
    with trio.fail_after(20):
        await found.wait()
    for line in lines:
        match = LISTENING.search(line)
        if match:
            return ServerProcess(process, match.group(1), lines)
    raise AssertionError("server exited before listening:\n" + "\n".join(lines))


def unused_port() -> int:
    """A port of 127.0.0.1 nothing listens on, below the kernel's ephemeral range: no socket the kernel
    numbers itself (port 0, outgoing connections) takes it meanwhile. For a URL that must refuse
    connections, or a server that must come back on the port it had (`start_server(..., "--port", N)`)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(100):
        port = random.randrange(min(10_000, low // 2), low)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise AssertionError("no unused port below the ephemeral range")


# ---- accounts ---------------------------------------------------------------------------------------

PASSWORD = "correct-horse-1"  # the password of every user the tests create with add_user()


@asynccontextmanager
async def running_server(settings) -> AsyncIterator:
    """An in-process server (cheap argon2 parameters) for the duration of the block."""
    from runsvc.server import serve

    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(serve, settings, password_hasher=FAST_HASHER))
        try:
            yield server
        finally:
            server.request_shutdown()


async def add_user(server, username: str, role: str, password: str = PASSWORD):
    """Create a user directly through the server's accounts service."""
    return await server.services.auth.create_user(username, password, role)


async def login(client, username: str, password: str = PASSWORD) -> str:
    """Log `client` in (its cookie jar keeps the session); return the CSRF token."""
    response = await client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return response.json()["csrf_token"]


def set_cookie_attributes(response, name: str) -> dict[str, str]:
    """The attributes of the Set-Cookie header for `name`, keys lowercased; the value under "value"."""
    for header in response.headers.get_list("set-cookie"):
        first, *attributes = [part.strip() for part in header.split(";")]
        cookie_name, _, value = first.partition("=")
        if cookie_name == name:
            parsed = {"value": value}
            for attribute in attributes:
                key, _, attr_value = attribute.partition("=")
                parsed[key.lower()] = attr_value
            return parsed
    raise AssertionError(f"no Set-Cookie for {name}: {response.headers.get_list('set-cookie')}")


def assert_error(response, status: int, code: str, message: str | None = None) -> None:
    """A JSON error answer of the documented shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code, body
    if message is not None:
        assert body["error"]["message"] == message, body


async def raw_request(
    url: str, method: str, path: str, headers: dict[str, str], body_chunks: list[bytes]
) -> tuple[bytes, bytes]:
    """An HTTP/1.1 request over a plain socket that sends the body while reading the answer (a server
    may answer before reading the whole body, e.g. 413); return the answer's head and body.

    httpx cannot be used for this: when the answer comes first it abandons its body generator, which
    trio reports as a ResourceWarning."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    head_lines = [f"{method} {path} HTTP/1.1", "Host: x", "Content-Type: application/json",
                  "Connection: close", *(f"{k}: {v}" for k, v in headers.items())]
    answer = bytearray()
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(("\r\n".join(head_lines) + "\r\n\r\n").encode("latin-1"))

        async def send_body() -> None:
            try:
                for chunk in body_chunks:
                    await stream.send_all(chunk)
            except trio.BrokenResourceError:
                return  # the server answered and closed before taking it all: fine
            await trio.sleep_forever()  # the answer must not wait for anything more

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_body)
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                data = await stream.receive_some()
                if not data:
                    break
                answer += data
            nursery.cancel_scope.cancel()
    head, _, body = bytes(answer).partition(b"\r\n\r\n")
    return head, body


TERMINAL = TERMINAL_STATUSES


async def wait_status(client, run_id: int, statuses=TERMINAL) -> dict:
    """Poll GET /api/v1/runs/{id} until the run is in one of `statuses` (default: finished)."""
    while True:
        run = (await client.get(f"/api/v1/runs/{run_id}")).json()["run"]
        if run["status"] in statuses:
            return run
        await trio.sleep(0.05)


def open_websocket(url: str, *, max_message_size: int = 2**20, **kwargs):
    """runsvc.wsclient.open_websocket (the project's one WebSocket client: it closes its TCP stream
    whoever closes first, so no test leaks a socket) with trio-websocket's default 1 MiB message limit.
    Takes `extra_headers`, `message_queue_size`, `max_message_size`, `connect_timeout`."""
    return wsclient.open_websocket(url, max_message_size=max_message_size, **kwargs)


def alive(pid: int) -> bool:
    """Whether `pid` is a live process; a zombie (killed, not yet reaped by its parent) counts as gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# A run that leaves a daemon behind: the daemon double-forks, calls setsid and chdir /, closes its stdio,
# writes its pid to argv[1] and sleeps; the run's own process prints "daemon started" once the file is
# there, then ends (or, with run_stays, sleeps too).
_DAEMON = """
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.chdir("/")
        fd = os.open(os.devnull, os.O_RDWR)
        for n in (0, 1, 2):
            os.dup2(fd, n)
        with open(sys.argv[1] + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(sys.argv[1] + ".tmp", sys.argv[1])
        time.sleep(120)
    os._exit(0)
os.wait()
while not os.path.exists(sys.argv[1]):
    time.sleep(0.01)
print("daemon started")
"""


def daemon_command(pid_file: Path, *, run_stays: bool = False) -> list[str]:
    code = _DAEMON
    if run_stays:
        code = code.replace('print("daemon started")', 'print("daemon started", flush=True); time.sleep(120)')
    return [sys.executable, "-c", code, str(pid_file)]


async def wait_until(predicate) -> None:
    """Return once `predicate()` holds: a counter or state of an in-process object that no event announces
    (the caller's deadline bounds the wait)."""
    while not predicate():
        await trio.sleep(0.01)
