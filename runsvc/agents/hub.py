"""The agent hub: the server's side of remote agents.

Each agent has an `AgentLink` (link.py), which is the run's executor in the scheduler's eyes (same
`Executor` interface as the local one). The hub authenticates agent connections, attaches them to their
links, reads their frames (closing a connection that stays silent for `agent_lease_s`), pings, revokes,
and hands the executor pool the links of runs an earlier server process left on agents (adoption).

Nothing on an agent's connection waits for a database write: `last_seen_at` is written in the background,
retried through a storage outage (SPEC §14), so agents connect and keep their runs while the database
cannot be written.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs
import trio

from ..accounts.service import token_hash
from ..config import Settings
from ..executors.pool import ExecutorPool, agent_executor_name
from ..log import get_logger
from ..store import Store, StoreClosedError
from ..store import agents as sql
from ..timeutil import now_ts
from .link import GOING_AWAY, POLICY_VIOLATION, SILENT, UNAUTHENTICATED, AgentLink, Connection
from .protocol import ProtocolError, parse_agent_message

log = get_logger(__name__)


@attrs.frozen
class AgentHubStatistics:
    connected: int  # agents with a connection
    parked_readers: int  # connections not reading because a run's inbox is full (backpressure)


class AgentHub:
    def __init__(self, settings: Settings, store: Store, pool: ExecutorPool):
        self.settings = settings
        self._store = store
        self.pool = pool
        self._links: dict[str, AgentLink] = {}
        self._closing = trio.Event()
        self._seen: dict[int, str] = {}  # agent id: the last_seen_at to store
        self._seen_pending: set[int] = set()  # agents whose last_seen_at write is in flight

    def adopt(self, executor_name: str) -> AgentLink | None:
        prefix = agent_executor_name("")
        if not executor_name.startswith(prefix):
            return None
        return self.link(executor_name[len(prefix):])

    def link(self, name: str) -> AgentLink:
        link = self._links.get(name)
        if link is None:
            link = self._links[name] = AgentLink(name, self.pool, self.settings.agent_lease_s)
        return link

    def status(self, name: str) -> tuple[bool, list[int], str | None]:
        """(connected, ids of its current runs, last frame time) of an agent."""
        link = self._links.get(name)
        if link is None:
            return False, [], None
        return link.connected, sorted(link.runs), link.last_seen_at

    def revoke(self, name: str) -> None:
        link = self._links.pop(name, None)
        self.pool.forget(agent_executor_name(name))
        if link is not None:
            link.revoke()

    def holds_runs(self) -> bool:
        return any(link.runs for link in self._links.values())

    def connected_count(self) -> int:
        return sum(1 for link in self._links.values() if link.connected)

    def statistics(self) -> AgentHubStatistics:
        links = self._links.values()
        return AgentHubStatistics(
            connected=self.connected_count(), parked_readers=sum(link.parked_readers for link in links),
        )

    def close_all(self) -> None:
        """Server shutdown, after the drain: every agent connection closes with 1001."""
        self._closing.set()

    async def serve_connection(
        self,
        secret: str | None,
        receive: Callable[[], Awaitable[str | bytes]],
        send_text: Callable[[str], Awaitable[None]],
    ) -> tuple[int, str]:
        """One agent WebSocket from authentication to close; returns the close code and reason."""
        agent = await self._store.read(sql.agent_by_secret, token_hash(secret)) if secret else None
        if agent is None:
            return UNAUTHENTICATED, "unknown or revoked agent secret"
        link = self.link(agent["name"])
        link.agent_id, link.labels = agent["id"], agent["labels"]
        connection = Connection(send_text)
        link.attach(connection)
        self._record_seen(agent["id"])
        log.info("agent connected", agent=link.name)
        try:
            await connection.send({
                "type": "welcome", "agent": {"id": agent["id"], "name": agent["name"], "labels": agent["labels"]},
                "lease_s": self.settings.agent_lease_s, "ping_interval_s": self.settings.agent_lease_s / 4,
            })
            async with trio.open_nursery() as nursery:

                async def read() -> None:
                    await self._read_frames(link, connection, receive)
                    nursery.cancel_scope.cancel()

                async def ping() -> None:
                    while True:
                        await trio.sleep(self.settings.agent_lease_s / 4)
                        await connection.send({"type": "ping"})

                async def close_when_asked() -> None:
                    async with trio.open_nursery() as waiters:

                        async def on_shutdown() -> None:
                            await self._closing.wait()
                            connection.close(GOING_AWAY, "server shutting down")

                        waiters.start_soon(on_shutdown)
                        await connection.closed.wait()
                        waiters.cancel_scope.cancel()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(read)
                nursery.start_soon(ping)
                nursery.start_soon(close_when_asked)
            return connection.close_code, connection.close_reason
        finally:
            link.detach(connection)
            log.info("agent disconnected", agent=link.name)
            self._record_seen(agent["id"])

    def _record_seen(self, agent_id: int) -> None:
        """Store now as the agent's `last_seen_at`, without waiting. One retried write per agent at a time:
        a time noted while one is pending is written after it (an outage does not pile up writes)."""
        self._seen[agent_id] = now_ts()
        if agent_id not in self._seen_pending:
            self._write_seen(agent_id)

    def _write_seen(self, agent_id: int) -> None:
        ts = self._seen[agent_id]

        def committed(_: object) -> None:
            self._seen_pending.discard(agent_id)
            if self._seen.get(agent_id) != ts:
                self._write_seen(agent_id)  # a later time was noted meanwhile
            else:
                del self._seen[agent_id]

        def failed(exc: BaseException) -> None:  # the store closing; last_seen_at is only informative
            self._seen_pending.discard(agent_id)
            log.debug("could not record last_seen_at", error=repr(exc))

        try:
            self._store.submit_write(sql.touch_agent, agent_id, ts, on_commit=committed, on_error=failed, retry=True)
        except StoreClosedError as exc:
            failed(exc)
            return
        self._seen_pending.add(agent_id)

    async def _read_frames(
        self, link: AgentLink, connection: Connection, receive: Callable[[], Awaitable[str | bytes]]
    ) -> None:
        while True:
            with trio.move_on_after(self.settings.agent_lease_s) as silent:
                text = await receive()
            if silent.cancelled_caught:
                connection.close(SILENT, "no frame within the lease")
                return
            link.frame_arrived()
            try:
                message = parse_agent_message(text)
            except ProtocolError as exc:
                connection.close(POLICY_VIOLATION, str(exc))
                return
            await link.received(message, connection)
            if connection.closed.is_set():
                return  # closed because of that frame (or by someone else): read nothing more

