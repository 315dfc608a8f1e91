"""Recording what happens to runs: status transitions with their `state` events, and output.

The scheduler (which executes runs) and the run service (which submits and cancels them) both record
through this one object, so neither needs the other: the run service reaches the scheduler only through
the narrow `Scheduling` interface it is given at construction.
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Sequence
from typing import Any

from .events import EventLog, RunEventBus, RunFeed
from .events.append import Transition
from .model import EventBatch, state_data
from .store import runs as sql
from .timeutil import now_ts


class RunRecorder:
    def __init__(self, eventlog: EventLog, bus: RunEventBus, feed: RunFeed):
        self._eventlog = eventlog
        self._bus = bus
        self.feed = feed
        self.finished: collections.Counter[str] = collections.Counter()  # runs finished by status, /metrics

    def published(self, result: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
        """on_commit for writes that change a run and append its events directly (create, claim)."""
        run, events = result
        self._bus.publish(EventBatch(run["id"], events))
        self.feed.publish(run)

    async def append_output(
        self, run_id: int, items: Sequence[tuple[str, str]], *, transition: Transition | None = None
    ) -> None:
        """stdout/stderr/system events of a running run; `transition` runs in the same transaction."""
        await self._eventlog.append(run_id, items, transition=transition)

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
        """Move a run to a terminal status: `system` messages, then the terminal `state` event, in the
        transaction that changes the status.

        Raises StatusConflict if the run is not in `from_status`, RunNotFound if it is gone.
        """
        changed: dict[str, Any] = {}

        def transition(conn: sqlite3.Connection) -> None:
            changed["run"] = sql.finish(
                conn, run_id, from_status=from_status, status=status, exit_code=exit_code, ts=now_ts()
            )

        items: list[tuple[str, Any]] = [("system", message) for message in messages]
        items.append(("state", state_data(status, exit_code, reason)))
        events = await self._eventlog.append(run_id, items, transition=transition)
        run = changed["run"]
        run["last_seq"] = events[-1]["seq"]
        self.finished[status] += 1
        self.feed.publish(run)
        return run
