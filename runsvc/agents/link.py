"""An agent as the scheduler sees it: the executor named "agent:<name>" (see hub.py for the whole story).

`AgentLink.execute()` sends `assign`, stores the agent's `output` chunks through the EventLog's group
commit (fenced by attempt, each chunk once) and acknowledges them after the commit, forwards a stop as
`cancel`, and returns when the agent reports `finished` — or when the agent is lost (no frame for
`agent_lease_s`) or revoked. A link outlives its connections; `hello` settles what happened meanwhile.

Liveness is the socket's: any frame counts, and so does a reader that stopped reading because a run's
inbox is full (backpressure, e.g. while storage is failing and appends wait): the agent is not silent, the
server is not listening. SPEC §14: a storage outage never ends a run.

An agent's output is hostile input shaped like local output: `system` lines are the server's own (an
agent's are dropped), and each line is split exactly as the local executor's splitter would (`\n`, and
16 KiB pieces), so the output cap, /log and watchers see the same kind of lines from both executors.

Secrets (SPEC §17): the server masks their values in every line an agent sends, whole, before it is
split, stored or sent anywhere — whatever the agent did. The assignment also names the variables that
hold secrets (`masked`), so the agent masks them as it assembles lines too: that is what catches a value
cut by the agent's own 16 KiB split of a longer line, which the server no longer sees whole.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from ..executors import Outcome, OutputSink, RunSpec, StopRequest
from ..executors.lines import split_text
from ..executors.pool import ExecutorPool, agent_executor_name
from ..log import get_logger
from ..model import RunNotFound, StaleReport
from ..secrets.masking import Masker
from ..store import agents as sql
from ..timeutil import now_ts
from .protocol import dumps

log = get_logger(__name__)

CANCEL_MARGIN_S = 10.0  # after a cancel, the agent's `finished` is awaited kill grace + this long
INBOX_FRAMES = 64  # frames of one run queued on the server before the connection stops reading
MAX_STALE_REPORTS = 1024  # distinct stale (run, attempt) pairs one connection may report before it is closed
STALE_WARNINGS = 10  # stale reports logged per connection; the rest are counted, not logged
MAX_REASON_CHARS = 1024  # an agent's `finished.reason` is cut to this many characters

# Close codes of the agent socket.
NORMAL = 1000
GOING_AWAY = 1001
POLICY_VIOLATION = 1008
UNAUTHENTICATED = 4401
REPLACED = 4409  # the agent opened a newer connection
SILENT = 4408  # nothing arrived for agent_lease_s


@attrs.define(eq=False)
class Connection:
    send_text: Callable[[str], Awaitable[None]]
    closed: trio.Event = attrs.Factory(trio.Event)
    close_code: int = NORMAL
    close_reason: str = ""
    told_stale: set[tuple[int, int]] = attrs.Factory(set)  # (run, attempt) the agent was told to forget
    ready: bool = False  # the agent's hello has been read: assignments may go out

    async def send(self, message: dict[str, Any]) -> None:
        try:
            await self.send_text(dumps(message))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # gone; the agent's next hello settles whatever this message was about

    def close(self, code: int, reason: str) -> None:
        if not self.closed.is_set():
            self.close_code, self.close_reason = code, reason
            self.closed.set()


@attrs.define(eq=False)
class _HeldRun:
    """A run current on an agent, as the server sees it."""

    spec: RunSpec
    stored_chunk: int
    assigned: bool
    send: trio.MemorySendChannel[tuple[str, Any]]
    receive: trio.MemoryReceiveChannel[tuple[str, Any]]
    queued_frames: int = 0
    room: trio.Event = attrs.Factory(trio.Event)
    stash: list[tuple[str, Any]] = attrs.Factory(list)
    masker: Masker = attrs.Factory(lambda self: self.spec.masker(), takes_self=True)

    def notify(self, kind: str, payload: Any = None) -> None:
        try:
            self.send.send_nowait((kind, payload))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the run's execution is over


class AgentLink:
    """One agent: its connection (if any) and its current runs. The executor named "agent:<name>"."""

    def __init__(self, name: str, pool: ExecutorPool, lease_s: float):
        self._pool = pool
        self._lease_s = lease_s
        self.name = name
        self.executor_name = agent_executor_name(name)
        self.agent_id: int | None = None
        self.labels: list[str] = []
        self.connection: Connection | None = None
        self.last_frame_at = trio.current_time()
        self.last_seen_at: str | None = None
        self.runs: dict[int, _HeldRun] = {}
        self.revoked = False
        self._parked_readers = 0  # readers waiting for room in a run's inbox (backpressure)
        self._unparked = trio.Event()  # set when the last of them reads again

    @property
    def connected(self) -> bool:
        return self.connection is not None

    @property
    def parked_readers(self) -> int:
        return self._parked_readers

    # ---- the Executor interface -------------------------------------------------------------------

    async def execute(self, spec: RunSpec, emit: OutputSink, stop: StopRequest) -> Outcome:
        send, receive = trio.open_memory_channel[tuple[str, Any]](math.inf)
        adopted = spec.adopted_chunk is not None
        held = _HeldRun(spec, spec.adopted_chunk or 0, adopted, send, receive)
        self.runs[spec.id] = held
        try:
            async with send, receive, trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_lease, held)
                nursery.start_soon(self._watch_stop, held, stop)
                if not adopted and self.connection is not None and self.connection.ready:
                    await self._assign(held, self.connection)  # else the next hello's settlement assigns it
                outcome = await self._serve_run(held, emit, stop)
                nursery.cancel_scope.cancel()
            return outcome
        finally:
            held.room.set()  # a reader waiting for room must not wait for a run that is over
            if self.runs.get(spec.id) is held:
                del self.runs[spec.id]

    async def _assign(self, held: _HeldRun, connection: Connection) -> None:
        spec = held.spec
        held.assigned = True
        await connection.send({
            "type": "assign", "run_id": spec.id, "attempt": spec.attempt, "command": list(spec.command),
            "env": spec.env, "timeout_s": spec.timeout_s, "kill_grace_s": spec.kill_grace_s,
            "masked": list(spec.masked),
        })

    async def _watch_lease(self, held: _HeldRun) -> None:
        lease = self._lease_s
        while True:
            if self._parked_readers:
                await self._unparked.wait()  # not silent: the server stopped reading (see the module doc)
                continue
            deadline = self.last_frame_at + lease
            if trio.current_time() >= deadline:
                held.notify("lost", "agent lost")
                return
            await trio.sleep_until(deadline)

    async def _watch_stop(self, held: _HeldRun, stop: StopRequest) -> None:
        await stop.event.wait()
        if self.connection is not None and held.assigned:
            await self.connection.send({"type": "cancel", "run_id": held.spec.id, "attempt": held.spec.attempt})
        held.notify("stop")

    async def _next(self, held: _HeldRun) -> tuple[str, Any]:
        if held.stash:
            return held.stash.pop(0)
        item = await held.receive.receive()
        self._took(held, item)
        return item

    def _took(self, held: _HeldRun, item: tuple[str, Any]) -> None:
        if item[0] in ("output", "finished"):
            held.queued_frames -= 1
            if held.queued_frames < INBOX_FRAMES:
                held.room.set()

    async def _serve_run(self, held: _HeldRun, emit: OutputSink, stop: StopRequest) -> Outcome:
        spec = held.spec
        stop_deadline = math.inf
        while True:
            with trio.move_on_at(stop_deadline):
                kind, payload = await self._next(held)
            if trio.current_time() >= stop_deadline:
                return Outcome(stop.status or "cancelled", None, stop.reason)
            if kind == "output":
                await self._store_output(held, emit, self._coalesce(held, payload))
            elif kind == "finished":
                outcome = self._finished(held, payload, stop)
                if outcome is not None:
                    return outcome
            elif kind in ("lost", "revoked"):
                log.warning(f"{payload}: run interrupted", run_id=spec.id, agent=self.name)
                await emit([("system", payload)])
                return Outcome("interrupted", None, payload)
            elif kind in ("stop", "disconnected") and stop.requested:
                if self.connection is None or not held.assigned:
                    # The agent cannot be told now; its next hello gets `cancel` (the run is no longer current).
                    return Outcome(stop.status or "cancelled", None, stop.reason)
                stop_deadline = min(stop_deadline, trio.current_time() + spec.kill_grace_s + CANCEL_MARGIN_S)

    def _coalesce(self, held: _HeldRun, first: dict[str, Any]) -> list[dict[str, Any]]:
        """The output frame and the consecutive ones already queued behind it: one append, one commit."""
        frames = [first]
        while not held.stash:
            try:
                item = held.receive.receive_nowait()
            except trio.WouldBlock:
                break
            self._took(held, item)
            kind, payload = item
            last = frames[-1]
            if kind == "output" and payload["attempt"] == last["attempt"] and payload["chunk"] == last["chunk"] + 1:
                frames.append(payload)
            else:
                held.stash.append(item)
        return frames

    async def _store_output(self, held: _HeldRun, emit: OutputSink, frames: list[dict[str, Any]]) -> None:
        spec = held.spec
        fresh = [frame for frame in frames if frame["chunk"] > held.stored_chunk]
        if not fresh:
            await self._ack(held, held.stored_chunk)  # a resend after a cut: stored already
            return
        first, last = fresh[0]["chunk"], fresh[-1]["chunk"]
        if first != held.stored_chunk + 1:
            log.warning("output chunk out of order ignored", run_id=spec.id, chunk=first, stored=held.stored_chunk)
            return
        masker = held.masker
        items = [(kind, line) for frame in fresh for kind, text in frame["lines"] if kind != "system"
                 for line in split_text(text, masker=masker)]

        def fence(conn: Any) -> None:
            sql.store_chunks(conn, spec.id, spec.attempt, first, last)

        try:
            await emit(items, transition=fence)
        except StaleReport as exc:
            log.warning("stale output ignored", run_id=spec.id, error=str(exc))
            return
        except sql.ChunkOutOfOrder as exc:
            held.stored_chunk = exc.stored
        except RunNotFound:
            return
        else:
            held.stored_chunk = last
        await self._ack(held, held.stored_chunk)

    async def _ack(self, held: _HeldRun, chunk: int, finished: bool = False) -> None:
        if self.connection is not None:
            message = {"type": "ack", "run_id": held.spec.id, "attempt": held.spec.attempt, "chunk": chunk}
            if finished:
                message["finished"] = True
            await self.connection.send(message)

    def _finished(self, held: _HeldRun, report: dict[str, Any], stop: StopRequest) -> Outcome | None:
        if report["last_chunk"] != held.stored_chunk:
            log.warning("finished refused: output before it is not stored", run_id=held.spec.id,
                        last_chunk=report["last_chunk"], stored=held.stored_chunk)
            return None
        status, reason = report["status"], report["reason"]
        if reason is not None and len(reason) > MAX_REASON_CHARS:
            reason = reason[: MAX_REASON_CHARS - 1] + "…"
        if stop.requested:
            status, reason = stop.status or "cancelled", stop.reason

        async def recorded() -> None:
            await self._ack(held, held.stored_chunk, finished=True)

        return Outcome(status, report["exit_code"], reason, recorded=recorded)

    # ---- frames from the agent ---------------------------------------------------------------------

    async def received(self, message: dict[str, Any], connection: Connection) -> None:
        kind = message["type"]
        if kind in ("output", "finished"):
            held = self.runs.get(message["run_id"])
            if held is None or held.spec.attempt != message["attempt"]:
                await self._forget(connection, message["run_id"], message["attempt"])
                return
            held.queued_frames += 1
            held.notify(kind, message)
            if held.queued_frames >= INBOX_FRAMES:
                await self._wait_for_room(held)
        elif kind == "hello":
            await self._settle(message, connection)
        elif kind == "drain":
            self._pool.set_capacity(self.executor_name, 0)

    async def _wait_for_room(self, held: _HeldRun) -> None:
        """Backpressure: stop reading the socket until the run catches up (or is over). Meanwhile the
        agent counts as alive, and its lease runs again from the moment reading resumes."""
        if self._parked_readers == 0:
            self._unparked = trio.Event()
        self._parked_readers += 1
        try:
            while held.queued_frames >= INBOX_FRAMES and self.runs.get(held.spec.id) is held:
                if held.room.is_set():
                    held.room = trio.Event()
                await held.room.wait()
        finally:
            self._parked_readers -= 1
            self.frame_arrived()
            if self._parked_readers == 0:
                self._unparked.set()

    async def _settle(self, hello: dict[str, Any], connection: Connection) -> None:
        """The agent's view of its runs against ours: lost, stale, or carried on."""
        holds = {held["run_id"]: held["attempt"] for held in hello["runs"]}
        # From here on a run handed to this agent is assigned at once: the hello it could miss is read.
        connection.ready = True
        for run_id, held in list(self.runs.items()):
            if not held.assigned:
                await self._assign(held, connection)
            elif holds.get(run_id) != held.spec.attempt:
                held.notify("lost", "agent lost")
        for run_id, attempt in holds.items():
            current = self.runs.get(run_id)
            if current is None or current.spec.attempt != attempt:
                await self._forget(connection, run_id, attempt)
        self._pool.connect(self.executor_name, self.labels, hello["capacity"], self)

    async def _forget(self, connection: Connection, run_id: int, attempt: int) -> None:
        """Fencing: reports for an attempt that is not current are ignored, and the agent is told (once
        per connection) to drop that run."""
        if (run_id, attempt) in connection.told_stale or connection.closed.is_set():
            return
        if len(connection.told_stale) >= MAX_STALE_REPORTS:
            log.warning("agent closed: too many reports for runs it does not hold", agent=self.name,
                        stale=len(connection.told_stale))
            connection.close(POLICY_VIOLATION, "too many reports for runs this agent does not hold")
            return
        connection.told_stale.add((run_id, attempt))
        if len(connection.told_stale) <= STALE_WARNINGS:
            log.warning("reports for a stale attempt ignored", run_id=run_id, attempt=attempt, agent=self.name)
            if len(connection.told_stale) == STALE_WARNINGS:
                log.warning("further stale attempts of this connection are not logged", agent=self.name)
        await connection.send({"type": "cancel", "run_id": run_id, "attempt": attempt, "forget": True})

    def kill_all_now(self) -> None:
        """Nothing to kill here: the processes run on the agent's machine. When this server exits at
        once, the agent keeps them; a restarted server adopts them within the lease, or they end
        interrupted ("agent lost")."""

    def attach(self, connection: Connection) -> None:
        if self.connection is not None:
            self.connection.close(REPLACED, "replaced by a newer connection")
        self.connection = connection
        self.frame_arrived()

    def detach(self, connection: Connection) -> None:
        if self.connection is connection:
            self.connection = None
            self._pool.disconnect(self.executor_name)
            for held in self.runs.values():
                held.notify("disconnected")

    def frame_arrived(self) -> None:
        self.last_frame_at = trio.current_time()
        self.last_seen_at = now_ts()

    def revoke(self) -> None:
        self.revoked = True
        if self.connection is not None:
            self.connection.close(UNAUTHENTICATED, "agent revoked")
        for held in self.runs.values():
            held.notify("revoked", "agent revoked")
