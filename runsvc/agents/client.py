"""The agent process (`python -m runsvc agent`): holds a WebSocket to the server and runs what it is
assigned with the local executor — the same process rules as the server's own runs.

It may be given several servers (replicas of one service on one database): it holds one connection at a
time, to the first it reaches, and moves on to the next whenever a connection is refused or lost
(servers.py). A switch is a reconnect like any other: `hello` names the runs held here, and whatever the
server has not acknowledged is sent again on the new connection.

Output goes out in numbered chunks (one per read of the child's pipes) and stays in memory until the
server acknowledges it; after a reconnect every unacknowledged chunk is sent again, in order, and the
server stores each chunk once. The buffer is bounded: when it is full, `emit` waits, the executor stops
reading the child's pipes, and the child blocks on its writes (backpressure reaches the process).

Runs get none of the agent's powers (SPEC §14): their directories are under the work dir, outside the
state dir that holds agent.json, and with `run_as` they run as another user. The executor's `system`
lines ("sent SIGTERM", "spawn failed: …") are the agent's own words, which the server does not take as
output: they go to the server in `finished.reason` instead.
"""

from __future__ import annotations

import json
import shutil
import signal
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import trio
import trio_websocket

from ..executors import LocalExecutor, Outcome, RunAs, RunSpec, StopRequest
from ..executors.orphans import kill_orphans
from ..log import get_logger
from ..wsclient import open_websocket
from .protocol import dumps
from .servers import BACKOFF_MAX_S, ServerRotation

log = get_logger("runsvc.agent")

UNACKED_BYTES = 8 * 1024 * 1024  # 8 MiB of output per run waiting for the server's ack
FINISH_WAIT_S = 10.0  # on SIGTERM, after stopping the runs: wait this long for the server's acks
MAX_MESSAGE = 64 * 1024 * 1024  # 64 MiB: an assignment carries command and env of at most 64 KiB each


class AgentRefused(Exception):
    """The server refused the agent's secret (revoked): exit 1 with one line. Replicas share one
    database, so a secret one of them refuses is refused by all: the agent does not try the others."""


@attrs.define(eq=False)
class _Chunk:
    number: int
    frame: str
    sent_on: int = -1  # generation of the connection it was last sent on


@attrs.define(eq=False)
class _HeldRun:
    run_id: int
    attempt: int
    kill_grace_s: float = 10.0
    stop: StopRequest = attrs.Factory(StopRequest)
    next_chunk: int = 1
    acked: int = 0
    unacked: deque[_Chunk] = attrs.Factory(deque)
    unacked_bytes: int = 0
    room: trio.Event = attrs.Factory(trio.Event)
    finished: _Chunk | None = None  # the `finished` report, kept until acknowledged
    notes: list[str] = attrs.Factory(list)  # the executor's `system` lines, sent in finished.reason
    done: trio.Event = attrs.Factory(trio.Event)  # the server acknowledged `finished` (or said forget)


class Agent:
    """`servers`: base URLs (http or https), tried in turn; `workdirs`: where runs get their directories
    (outside the state dir, see cli/agent.py);
    `legacy_workdirs`: where earlier versions put them (inside the state dir), swept at start; `run_as`:
    the user runs run as (--run-as-user)."""

    def __init__(
        self, *, servers: Sequence[str], secret: str, workdirs: Path, max_runs: int, drain_s: float = 10.0,
        run_as: RunAs | None = None, legacy_workdirs: Path | None = None,
    ):
        self._servers = ServerRotation([server.rstrip("/") for server in servers])
        self._secret = secret
        self._workdirs = workdirs
        self._legacy_workdirs = legacy_workdirs
        self._run_as = run_as
        self._max_runs = max_runs
        self._drain_s = drain_s
        self._runs: dict[int, _HeldRun] = {}
        self._ws: trio_websocket.WebSocketConnection | None = None
        self._generation = 0
        self._send_lock = trio.Lock()
        self._draining = False
        self._changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.connected = trio.Event()  # set on each welcome (tests wait on it)

    # ---- main loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Until SIGTERM/SIGINT (drain, then exit) or a refused secret (AgentRefused)."""
        killed = await trio.to_thread.run_sync(self._kill_leftovers)
        if killed:
            log.warning("killed processes of runs an earlier agent process left behind", groups=killed)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                async def hold_connection() -> None:
                    await self._hold_connection()
                    nursery.cancel_scope.cancel()

                async def on_signal() -> None:
                    async for _ in signals:
                        break
                    log.info("signal received: draining")
                    await self._drain()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(hold_connection)
                nursery.start_soon(on_signal)

    def _kill_leftovers(self) -> int:
        """Processes of runs a killed agent left behind; then their directories (and the old ones in the
        state dir) go."""
        roots = [root for root in (self._workdirs, self._legacy_workdirs) if root is not None and root.exists()]
        killed = sum(len(kill_orphans(root)) for root in roots)
        for child in self._workdirs.iterdir() if self._workdirs.exists() else ():
            shutil.rmtree(child, ignore_errors=True)
        if self._legacy_workdirs is not None:
            shutil.rmtree(self._legacy_workdirs, ignore_errors=True)
        return killed

    async def _hold_connection(self) -> None:
        while True:
            server = self._servers.current
            try:
                async with open_websocket(
                    _agent_socket_url(server),
                    extra_headers=[(b"Authorization", f"Bearer {self._secret}".encode())],
                    max_message_size=MAX_MESSAGE,
                    # A handshake that hangs (a half-open path) must not outlast the reconnect budget.
                    connect_timeout=max(1.0, min(10.0, self._lease_s / 4)),
                ) as ws:
                    await self._serve(ws, server)
            except trio_websocket.ConnectionClosed as exc:
                if exc.reason is not None and exc.reason.code == 4401:
                    raise AgentRefused(f"the server refused this agent's secret ({exc.reason.reason})") from None
                if self._welcomed:
                    self._servers.welcomed()
                log.info("connection closed", server=server, code=exc.reason.code if exc.reason else None)
            except (trio_websocket.HandshakeError, OSError) as exc:
                log.info("cannot reach the server", server=server, error=str(exc) or type(exc).__name__)
            finally:
                self._ws = None
            # Within a quarter of the lease, so a server restart (or a dead replica) does not cost the runs
            # held here.
            await trio.sleep(self._servers.next_attempt(cap_s=self._lease_s / 4))

    _welcomed = False
    _lease_s = 4 * BACKOFF_MAX_S  # until a welcome says otherwise

    async def _serve(self, ws: trio_websocket.WebSocketConnection, server: str) -> None:
        self._welcomed = False
        while True:
            message = json.loads(await ws.get_message())
            kind = message.get("type")
            if kind == "welcome":
                await self._on_welcome(ws, message, server)
            elif kind == "assign":
                self._on_assign(message)
            elif kind == "ack":
                self._on_ack(message)
            elif kind == "cancel":
                self._on_cancel(message)

    async def _on_welcome(self, ws: trio_websocket.WebSocketConnection, welcome: dict[str, Any], server: str) -> None:
        """Say hello (capacity, the runs held), then send again whatever the server has not acknowledged."""
        self._welcomed = True
        self._lease_s = float(welcome.get("lease_s", self._lease_s))
        async with self._send_lock:
            self._generation += 1
            self._ws = ws
            held = [{"run_id": r.run_id, "attempt": r.attempt, "acked_chunk": r.acked} for r in self._runs.values()]
            await ws.send_message(dumps({"type": "hello", "capacity": self._capacity(), "runs": held}))
            if self._draining:
                await ws.send_message(dumps({"type": "drain"}))
            for run in list(self._runs.values()):
                for chunk in [*run.unacked, *([run.finished] if run.finished else [])]:
                    await self._send_chunk(chunk)
        assert self._nursery is not None
        self._nursery.start_soon(self._ping, ws, float(welcome.get("ping_interval_s", 15.0)))
        log.info("connected", agent=welcome.get("agent", {}).get("name"), server=server)
        self.connected.set()

    def _capacity(self) -> int:
        return 0 if self._draining else self._max_runs

    async def _ping(self, ws: trio_websocket.WebSocketConnection, interval: float) -> None:
        try:
            while not ws.closed:
                await trio.sleep(interval)
                await ws.send_message('{"type":"ping"}')
        except trio_websocket.ConnectionClosed:
            pass

    async def _send_chunk(self, chunk: _Chunk) -> None:
        """With the send lock held: send `chunk` unless the current connection has it already."""
        if self._ws is None or chunk.sent_on == self._generation:
            return
        try:
            await self._ws.send_message(chunk.frame)
            chunk.sent_on = self._generation
        except trio_websocket.ConnectionClosed:
            self._ws = None  # resent after the reconnect

    async def _send_frame(self, chunk: _Chunk) -> None:
        async with self._send_lock:
            await self._send_chunk(chunk)

    # ---- runs ------------------------------------------------------------------------------------

    def _on_assign(self, message: dict[str, Any]) -> None:
        run_id, attempt = message["run_id"], message["attempt"]
        if run_id in self._runs:
            return  # a duplicate (it cannot be another attempt: the server fences those)
        run = self._runs[run_id] = _HeldRun(run_id, attempt, float(message.get("kill_grace_s", 10.0)))
        spec = RunSpec(
            id=run_id, command=tuple(message["command"]), env=dict(message["env"]),
            timeout_s=float(message["timeout_s"]), workdir=self._workdirs / str(run_id), attempt=attempt,
            kill_grace_s=run.kill_grace_s,
            # Variables holding secrets: masked as lines are assembled here (the server masks again).
            masked=tuple(name for name in message.get("masked", ()) if isinstance(name, str)),
        )
        if self._draining:
            run.stop.request("interrupted", "agent shutting down")
        assert self._nursery is not None
        self._nursery.start_soon(self._execute, run, spec, name=f"run {run_id}")

    async def _execute(self, run: _HeldRun, spec: RunSpec, *, name: str = "") -> None:
        log.info("run started", run_id=run.run_id, attempt=run.attempt)

        async def emit(items: Any, transition: Any = None) -> None:
            lines = []
            for kind, text in items:
                if kind == "system":
                    run.notes.append(text)  # the agent's own words: in finished.reason, not in the output
                else:
                    lines.append((kind, text))
            if not lines:
                return
            items = lines
            frame = dumps({"type": "output", "run_id": run.run_id, "attempt": run.attempt,
                           "chunk": run.next_chunk, "lines": items})  # tuples encode as arrays
            chunk = _Chunk(run.next_chunk, frame)
            run.next_chunk += 1
            run.unacked.append(chunk)
            run.unacked_bytes += len(frame)
            await self._send_frame(chunk)
            while run.unacked_bytes > UNACKED_BYTES and not run.done.is_set():
                run.room = trio.Event()
                await run.room.wait()  # the executor stops reading the pipes meanwhile

        async with trio.open_nursery() as nursery:
            nursery.start_soon(_time_out, run.stop, spec.timeout_s)
            executor = LocalExecutor(kill_grace_s=spec.kill_grace_s, run_as=self._run_as)
            outcome: Outcome = await executor.execute(spec, emit, run.stop)
            nursery.cancel_scope.cancel()
        if run.stop.requested:
            outcome = Outcome(run.stop.status or "cancelled", outcome.exit_code, run.stop.reason)
        log.info("run finished", run_id=run.run_id, status=outcome.status, exit_code=outcome.exit_code)
        run.finished = _Chunk(run.next_chunk - 1, dumps({
            "type": "finished", "run_id": run.run_id, "attempt": run.attempt, "last_chunk": run.next_chunk - 1,
            "status": outcome.status, "exit_code": outcome.exit_code, "reason": _reason(outcome.reason, run.notes),
        }))
        await self._send_frame(run.finished)
        await run.done.wait()
        if self._runs.get(run.run_id) is run:
            del self._runs[run.run_id]
        self._changed.set()

    def _on_ack(self, message: dict[str, Any]) -> None:
        run = self._runs.get(message["run_id"])
        if run is None or run.attempt != message["attempt"]:
            return
        run.acked = max(run.acked, message["chunk"])
        while run.unacked and run.unacked[0].number <= run.acked:
            run.unacked_bytes -= len(run.unacked.popleft().frame)
        run.room.set()
        if message.get("finished") and run.finished is not None:
            run.done.set()

    def _on_cancel(self, message: dict[str, Any]) -> None:
        run = self._runs.get(message["run_id"])
        if run is None or run.attempt != message["attempt"]:
            return
        run.stop.request("cancelled", "cancelled by the server")
        if message.get("forget"):
            # Not current on the server any more: nothing of it will be stored or acknowledged.
            run.unacked.clear()
            run.unacked_bytes = 0
            run.room.set()
            run.done.set()

    # ---- shutdown --------------------------------------------------------------------------------

    async def _drain(self) -> None:
        """SIGTERM: take no new runs, let running ones finish for drain_s, stop the rest, report."""
        self._draining = True
        async with self._send_lock:
            if self._ws is not None:
                try:
                    await self._ws.send_message(dumps({"type": "drain"}))
                except trio_websocket.ConnectionClosed:
                    pass
        with trio.move_on_after(self._drain_s):
            await self._wait_no_runs()
        for run in self._runs.values():
            run.stop.request("interrupted", "agent shutting down")
        grace = max((run.kill_grace_s for run in self._runs.values()), default=0.0)
        with trio.move_on_after(grace + FINISH_WAIT_S):
            await self._wait_no_runs()

    async def _wait_no_runs(self) -> None:
        while self._runs:
            self._changed = trio.Event()
            await self._changed.wait()


def _agent_socket_url(server: str) -> str:
    """The agent socket's ws:// or wss:// URL on the server at base URL `server`."""
    return server.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + "/api/v1/agents/ws"


def _reason(reason: str | None, notes: list[str]) -> str | None:
    """The outcome's reason and what the executor said along the way ("timed out after 5s; sent SIGTERM;
    sent SIGKILL"), each once."""
    parts = [reason] if reason else []
    parts += [note for note in dict.fromkeys(notes) if note != reason]
    return "; ".join(parts) or None


async def _time_out(stop: StopRequest, timeout_s: float) -> None:
    await trio.sleep(timeout_s)
    stop.request("timed_out", f"timed out after {timeout_s:g}s")
