"""Run services: submit, read, list, cancel, events and log; the status transitions with their events.

HTTP handlers and the CLI call these; these call the store and the event log; the scheduler executes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import attrs

from .eventlog import EventLog
from .events import TERMINAL_STATUSES, EventBatch, RunEventBus
from .feed import RunFeed
from .store import Store
from .store import runs as sql
from .store.events import RunNotFound
from .store.runs import StatusConflict
from .timeutil import now_ts

if TYPE_CHECKING:
    from .scheduler import Scheduler

STATUSES = ("queued", "running", *sorted(TERMINAL_STATUSES))
LOG_PAGE = 5000  # events read per SQLite query while streaming a log

__all__ = ["RunNotFound", "RunService", "STATUSES", "StatusConflict"]


@attrs.frozen
class EventsPage:
    events_json: str  # the events as JSON array items without brackets, as SQLite built them
    last_seq: int
    complete: bool


class RunService:
    def __init__(self, store: Store, eventlog: EventLog, bus: RunEventBus, feed: RunFeed):
        self._store = store
        self._eventlog = eventlog
        self._bus = bus
        self.feed = feed
        self.scheduler: Scheduler | None = None  # wired by the server

    def published(self, result: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
        """on_commit for writes that change a run and append its events directly."""
        run, events = result
        self._bus.publish(EventBatch(run["id"], events))
        self.feed.publish(run)

    async def submit(
        self,
        *,
        command: list[str],
        env: dict[str, str],
        timeout_s: float,
        name: str | None,
        created_by: str | None,
    ) -> dict[str, Any]:
        run, _ = await self._store.write(
            partial(
                sql.create_run, command=command, env=env, timeout_s=timeout_s, name=name,
                created_by=created_by, ts=now_ts(),
            ),
            on_commit=self.published,
        )
        if self.scheduler is not None:
            self.scheduler.wake()
        return run

    async def append_output(self, run_id: int, items: Sequence[tuple[str, str]]) -> None:
        """stdout/stderr/system events of a running run."""
        await self._eventlog.append(run_id, items)

    def runs_deleted(self, run_ids: Sequence[int]) -> None:
        """Retention deleted these runs: their watchers are told (WebSockets close with 4404)."""
        for run_id in run_ids:
            self._bus.run_deleted(run_id)

    async def get(self, run_id: int) -> dict[str, Any]:
        run = await self._store.read(sql.get_run, run_id)
        if run is None:
            raise RunNotFound(f"no run {run_id}")
        return run

    async def list(
        self, statuses: Sequence[str], limit: int, before: int | None
    ) -> tuple[list[dict[str, Any]], int | None]:
        return await self._store.read(sql.list_runs, statuses, limit, before)

    async def finish(
        self,
        run_id: int,
        *,
        from_status: str,
        status: str,
        exit_code: int | None = None,
        reason: str | None = None,
        messages: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Move a run to a terminal status: `system` messages, then the terminal `state` event.

        Raises StatusConflict if the run is not in `from_status`, RunNotFound if it is gone.
        """
        changed: dict[str, Any] = {}

        def transition(conn: sqlite3.Connection) -> None:
            changed["run"] = sql.finish(
                conn, run_id, from_status=from_status, status=status, exit_code=exit_code, ts=now_ts()
            )

        items: list[tuple[str, Any]] = [("system", message) for message in messages]
        items.append(("state", sql.state_data(status, exit_code, reason)))
        events = await self._eventlog.append(run_id, items, transition=transition)
        run = changed["run"]
        run["last_seq"] = events[-1]["seq"]
        self.feed.publish(run)
        return run

    async def cancel(self, run_id: int, *, by: str | None) -> dict[str, Any]:
        """Cancel a queued run at once, or ask the scheduler to stop a running one.

        Raises StatusConflict (409) for a finished run, RunNotFound for an unknown one.
        """
        reason = f"cancelled by {by}" if by else "cancelled"
        try:
            return await self.finish(run_id, from_status="queued", status="cancelled", reason=reason)
        except StatusConflict:
            pass
        run = await self.get(run_id)
        if run["status"] == "running" and self.scheduler is not None:
            if self.scheduler.request_stop(run_id, "cancelled", reason):
                return run
            run = await self.get(run_id)  # it finished meanwhile
        if run["status"] in TERMINAL_STATUSES:
            raise StatusConflict(f"run {run_id} has already finished ({run['status']})")
        raise StatusConflict(f"run {run_id} cannot be cancelled while {run['status']}")

    async def events_page(self, run_id: int, after_seq: int, limit: int) -> EventsPage:
        page = await self._store.read(sql.events_page, run_id, after_seq, limit)
        if page is None:
            raise RunNotFound(f"no run {run_id}")
        status, last_seq, batch = page
        returned_last = batch.last_seq if batch else after_seq
        return EventsPage(
            events_json=batch.json_fragment if batch else "",
            last_seq=returned_last,
            complete=status in TERMINAL_STATUSES and returned_last >= last_seq,
        )

    async def log_lines(self, run_id: int, up_to_seq: int) -> AsyncIterator[str]:
        """The stored stdout/stderr lines up to `up_to_seq` (the run's last_seq when the request came),
        in seq order, newline-terminated, read page by page so a huge log is never held whole."""
        position = 0
        while position < up_to_seq:
            rows = await self._store.read(sql.output_lines, run_id, position, up_to_seq, LOG_PAGE)
            if not rows:
                return
            position = rows[-1][0]
            text = "".join(line + "\n" for _, line in rows if line is not None)
            if text:
                yield text
