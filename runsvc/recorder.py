"""Recording what happens to runs: status transitions with their `state` events, and output.

The scheduler (which executes runs) and the run service (which submits and cancels them) both record
through this one object, so neither needs the other: the run service reaches the scheduler only through
the narrow `Scheduling` interface it is given at construction.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from .events import EventLog, RunEventBus, RunFeed
from .events.append import Transition
from .model import Event, EventBatch, Run, state_data
from .retries import next_try_fields, retry_delay_s, wants_retry
from .store import runs as sql
from .store.dialect import Connection
from .timeutil import now_ts, parse_ts, ts_after
from .webhooks.outbox import Outbox, no_outbox


def _waits_for_nothing(run: Run) -> str | None:
    return None


class RunRecorder:
    def __init__(
        self, eventlog: EventLog, bus: RunEventBus, feed: RunFeed,
        waiting_for: Callable[[Run], str | None] = _waits_for_nothing,
        output_interval_s: float = 0.0,
        outbox: Outbox | None = None,
    ):
        # Told of every run's end inside the transaction that records it (store/runs.py finish), and
        # after its commit (`committed`, which wakes the webhook sender when deliveries were written).
        self.outbox = outbox if outbox is not None else Outbox(summary=lambda run: {})
        self._eventlog = eventlog
        self._output_interval_s = output_interval_s
        self._bus = bus
        self.feed = feed
        self._waiting_for = waiting_for  # the executor pool's: what a queued run waits for
        self.finished: collections.Counter[str] = collections.Counter()  # runs finished by status, /metrics
        self.retried = 0  # next tries queued for runs that failed or timed out, /metrics

    def with_waiting_for(self, run: Run) -> Run:
        """`run` with `waiting_for`: for a queued run, what it waits for (its time, its concurrency group,
        an executor that can take it). Computed when the run is read or published (it depends on the
        time, on what runs and on which agents are connected now), never stored."""
        return attrs.evolve(run, waiting_for=self._waiting_for(run) if run.status == "queued" else None)

    def published(self, result: tuple[Run, list[Event]]) -> None:
        """on_commit for writes that change a run and append its events directly (create, claim)."""
        run, events = result
        self._bus.publish(EventBatch(run.id, events))
        self.feed.publish(self.with_waiting_for(run))

    def ended(self, result: tuple[Run, list[Event]]) -> None:
        """on_commit for writes that end a run and append its terminal `state` event directly, in a
        transaction of their own making (a deleted job's queued runs, cancelled with it): published and
        counted like `finish`. Their ends went through `self.outbox` in that transaction."""
        self.finished[result[0].status] += 1
        self.outbox.committed()
        self.published(result)

    async def append_output(
        self, run_id: int, items: Sequence[tuple[str, str]], *, transition: Transition | None = None
    ) -> None:
        """stdout/stderr/system events of a running run; `transition` runs in the same transaction.

        Returns no sooner than `output_interval_s` after the commit's request: the caller reads the
        run's next output only then, so a run that keeps printing is committed (and its watchers get a
        frame) about once per interval, each time with everything it printed meanwhile, and each line
        waits at most the interval (events/append.py). A line after a quiet spell is committed at once."""
        await self._eventlog.append(run_id, items, transition=transition)
        await self._eventlog.wait_turn(self._output_interval_s)

    async def finish(
        self,
        run_id: int,
        *,
        from_status: str,
        status: str,
        exit_code: int | None = None,
        reason: str | None = None,
        messages: Sequence[str] = (),
    ) -> Run:
        """Move a run to a terminal status: `system` messages, then the terminal `state` event, in the
        transaction that changes the status; when the run's `retries` ask for it, that transaction also
        queues its next try (retries.py), published once committed.

        Raises StatusConflict if the run is not in `from_status`, RunNotFound if it is gone.
        """
        changed: dict[str, Any] = {}

        def transition(conn: Connection) -> None:
            # This may run again if the write is retried after a storage fault: it starts afresh.
            changed["run"], changed["retry"] = record_end(
                conn, run_id, from_status=from_status, status=status, exit_code=exit_code, ts=now_ts(),
                outbox=self.outbox, appending=len(items),
            )

        items: list[tuple[str, Any]] = [("system", message) for message in messages]
        items.append(("state", state_data(status, exit_code, reason)))
        events = await self._eventlog.append(run_id, items, transition=transition)
        run = attrs.evolve(changed["run"], last_seq=events[-1]["seq"])
        self.finished[status] += 1
        self.outbox.committed()
        self.feed.publish(self.with_waiting_for(run))
        if changed["retry"] is not None:
            # Published like a submit; the scheduler wakes after every run it finishes, which is where
            # retried statuses come from (cancelling and recovery record statuses never retried).
            self.retried += 1
            self.published(changed["retry"])
        return run


def record_end(
    conn: Connection, run_id: int, *, from_status: str, status: str, exit_code: int | None, ts: str,
    outbox: sql.RunEnded = no_outbox, appending: int = 1,
) -> tuple[Run, tuple[Run, list[Event]] | None]:
    """In the caller's transaction: the run's terminal status (told to `outbox`, see store/runs.py
    finish) and, when its `retries` ask for it (retries.py), its next try, queued with `not_before` its
    delay after `ts`. Returns the ended run and the next try with its first event, or None. One
    transaction, so a crash keeps both or neither.

    Raises StatusConflict if the run is not in `from_status`."""
    run = sql.finish(
        conn, run_id, from_status=from_status, status=status, exit_code=exit_code, ts=ts, outbox=outbox,
        appending=appending,
    )
    if not wants_retry(run):
        return run, None
    assert run.retries is not None
    not_before = ts_after(retry_delay_s(run.retries, run.try_number), start=parse_ts(ts))
    return run, sql.create_run(conn, ts=ts, **next_try_fields(run, not_before=not_before))
