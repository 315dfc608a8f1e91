"""Helpers for agent tests: a real `python -m runsvc agent` subprocess, and a TCP proxy that can cut."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

from tests.helpers import admin_login, child_env

PY = sys.executable


@asynccontextmanager
async def admin_client(url: str):
    """An HTTP client logged in as the first admin, with its CSRF header set on every request."""
    async with admin_login(url) as (client, _):
        yield client


async def new_token(client, **body) -> str:
    response = await client.post("/api/v1/enrollment-tokens", json=body)
    assert response.status_code == 201, response.text
    return response.json()["token"]


@attrs.define
class AgentProcess:
    process: trio.Process
    lines: list[str]
    changed: trio.Event

    async def wait_for(self, text: str, count: int = 1) -> None:
        """Until `text` occurs in `count` log lines (fails if the agent exits first)."""
        while sum(text in line for line in self.lines) < count:
            if self.process.returncode is not None and self.changed.is_set():
                raise AssertionError(f"agent exited before {text!r}:\n" + "\n".join(self.lines))
            self.changed = trio.Event()
            with trio.move_on_after(0.5):
                await self.changed.wait()

    def log_text(self) -> str:
        return "\n".join(self.lines)


async def _pump(agent: AgentProcess, stream) -> None:
    buffer = b""
    async for chunk in stream:
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        agent.lines.extend(raw.decode("utf-8", "replace") for raw in complete)
        agent.changed.set()
    agent.changed.set()


async def _reap(process: trio.Process) -> None:
    try:
        await process.wait()
    finally:
        if process.returncode is None:
            process.kill()


async def start_agent(
    nursery: trio.Nursery, url: str | Sequence[str] | None, state_dir: Path, *args: str, stdin: bytes | None = None
) -> AgentProcess:
    """`python -m runsvc agent`; `url` None leaves out --server (the servers saved in agent.json are used),
    a list gives one --server per URL; `stdin` is written to its stdin, which is then closed (`--enroll -`)."""
    urls = [] if url is None else [url] if isinstance(url, str) else list(url)
    server = [flag for each in urls for flag in ("--server", each)]
    command = [PY, "-m", "runsvc", "agent", *server, "--state-dir", str(state_dir), *args]
    process = await trio.lowlevel.open_process(
        command, stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, env=child_env(),
    )
    if process.stdin is not None:
        async with process.stdin:
            await process.stdin.send_all(stdin or b"")
    agent = AgentProcess(process, [], trio.Event())
    nursery.start_soon(_pump, agent, process.stderr)
    nursery.start_soon(_reap, process)
    return agent


async def enrolled_agent(
    nursery: trio.Nursery, client, url: str | Sequence[str], state_dir: Path, name: str, *args: str
) -> AgentProcess:
    """A new agent named `name`, enrolled with a fresh token (no labels, given on stdin) and connected to
    `url` (or to one of a list of URLs)."""
    token = await new_token(client)
    agent = await start_agent(nursery, url, state_dir, "--enroll", "-", "--name", name, *args,
                              stdin=f"{token}\n".encode())
    await agent.wait_for("msg=connected")
    return agent


class CuttableProxy:
    """Forwards TCP connections to `target`; `cut()` drops every connection it carries, `hold_replies()`
    stops forwarding target→client until `release_replies()` (the real thing cannot be made to misbehave
    on demand, a proxy in between can)."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self._streams: set[trio.SocketStream] = set()
        self.port = 0
        self.connections = 0
        self._replies_flow = trio.Event()
        self._replies_flow.set()

    def hold_replies(self) -> None:
        """From now on, what the target sends waits in the proxy (the client keeps sending)."""
        if self._replies_flow.is_set():
            self._replies_flow = trio.Event()

    def release_replies(self) -> None:
        self._replies_flow.set()

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        self.connections += 1
        try:
            upstream = await trio.open_tcp_stream("127.0.0.1", self.target_port)
        except OSError:
            await client.aclose()
            return
        self._streams |= {client, upstream}
        try:
            async with trio.open_nursery() as nursery:

                async def pipe(source: trio.SocketStream, sink: trio.SocketStream, replies: bool = False) -> None:
                    try:
                        async for data in source:
                            if replies:
                                await self._replies_flow.wait()
                            await sink.send_all(data)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
                    nursery.cancel_scope.cancel()

                nursery.start_soon(pipe, client, upstream)
                nursery.start_soon(pipe, upstream, client, True)
        finally:
            self._streams -= {client, upstream}
            for stream in (client, upstream):
                with trio.CancelScope(shield=True):
                    await stream.aclose()

    async def cut(self) -> None:
        for stream in list(self._streams):
            await stream.aclose()


async def wait_status(client, run_id: int, statuses) -> dict:
    while True:
        run = (await client.get(f"/api/v1/runs/{run_id}")).json()["run"]
        if run["status"] in statuses:
            return run
        await trio.sleep(0.05)


async def submit(client, command: list[str], **body) -> dict:
    response = await client.post("/api/v1/runs", json={"command": command, **body})
    assert response.status_code == 201, response.text
    return response.json()["run"]


async def all_events(client, run_id: int) -> list[dict]:
    events: list[dict] = []
    after = 0
    while True:
        page = (await client.get(f"/api/v1/runs/{run_id}/events", params={"after_seq": after,
                                                                          "limit": 10_000})).json()
        events.extend(page["events"])
        after = page["last_seq"]
        if not page["events"]:
            return events
