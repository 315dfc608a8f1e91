"""The run service: submit, read, list, cancel, watch, events page and log — what handlers and the CLI call.

It records through the RunRecorder and reaches the scheduler only through `Scheduling`, given at
construction.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import aclosing
from functools import partial
from typing import Any, Protocol

import attrs

from .events import DirectSink, RunEventBus, RunFeed, Subscription, stream_run_events
from .model import TERMINAL_STATUSES, Event, EventBatch, Run, RunGone, RunNotFound, StatusConflict
from .recorder import RunRecorder
from .store import Store, StoreUnavailable
from .store import runs as sql
from .store.dialect import Connection
from .store.secrets import check_secrets_exist
from .timeutil import now_ts

LOG_PAGE = 5000  # events read per SQLite query while streaming a log


class Scheduling(Protocol):
    """What the run service needs of the scheduler."""

    def wake(self) -> None:
        """A run was queued: claim it if there is a free slot."""

    def request_stop(self, run_id: int, status: str, reason: str) -> bool:
        """Stop a running run; False if the scheduler is not running it (it finished meanwhile)."""


@attrs.frozen
class EventsPage:
    events_json: str  # the events as JSON array items without brackets, as SQLite built them
    last_seq: int
    complete: bool


class RunService:
    def __init__(self, store: Store, recorder: RunRecorder, bus: RunEventBus, scheduling: Scheduling):
        self._store = store
        self._recorder = recorder
        self._bus = bus
        self._scheduling = scheduling
        self._fenced: set[int] = set()  # runs retention is deleting: gone for readers already

    @property
    def feed(self) -> RunFeed:
        return self._recorder.feed

    async def submit(
        self,
        *,
        command: list[str],
        env: dict[str, str],
        timeout_s: float,
        name: str | None,
        created_by: str | None,
        labels: Sequence[str] = (),
        retries: dict[str, Any] | None = None,
        concurrency: dict[str, Any] | None = None,
        not_before: str | None = None,
        secrets: dict[str, str] | None = None,
    ) -> Run:
        """Queue a plain run (`trigger: "api"`); `retries` and `concurrency` normalised, `concurrency`
        with its key, `not_before` as timeutil's text. Raises UnknownSecret for a secret of `secrets`
        that does not exist (checked in the transaction that creates the run)."""
        create = partial(
            sql.create_run, command=command, env=env, timeout_s=timeout_s, name=name,
            created_by=created_by, ts=now_ts(), labels=labels, retries=retries, concurrency=concurrency,
            not_before=not_before, secrets=secrets or {},
        )

        def write(conn: Connection) -> tuple[Run, list[Event]]:
            check_secrets_exist(conn, (secrets or {}).values())
            return create(conn)

        return await self.create(write)

    async def create(self, write: Callable[[Connection], tuple[Run, list[Event]]]) -> Run:
        """Queue a run made by `write`, which runs on the store's writer and creates it with
        store.runs.create_run (perhaps with more in the same transaction: reading its job first).
        Published after the commit, then the scheduler is woken (it may claim the run)."""
        run, _ = await self._store.write(write, on_commit=self._recorder.published)
        self._scheduling.wake()
        return self._with_waiting_for(run)

    async def rerun(self, run_id: int, *, created_by: str | None) -> Run:
        """A new run like run `run_id`, finished or not (SPEC §15): `trigger: "rerun"`, a first try.
        Raises RunNotFound for an unknown run."""
        self._check_fence(run_id)
        created = await self._store.write(
            partial(sql.rerun, run_id=run_id, created_by=created_by, ts=now_ts()),
            on_commit=self._published_if_created,
        )
        if created is None:
            raise RunNotFound(f"no run {run_id}")
        self._scheduling.wake()
        return self._with_waiting_for(created[0])

    def _published_if_created(self, created: tuple[Run, list[Event]] | None) -> None:
        if created is not None:
            self._recorder.published(created)

    def _with_waiting_for(self, run: Run) -> Run:
        return self._recorder.with_waiting_for(run)  # the same as the runs feed's frames carry

    def fence(self, run_ids: Sequence[int]) -> None:
        """Retention is about to delete events of these runs: from now on they are gone for readers
        (404, watchers close with 4404), so nobody reads a run with part of its events deleted."""
        for run_id in run_ids:
            self._fenced.add(run_id)
            self._bus.run_deleted(run_id)

    def runs_deleted(self, run_ids: Sequence[int]) -> None:
        """Retention deleted these runs: their watchers are told (WebSockets close with 4404)."""
        for run_id in run_ids:
            self._fenced.discard(run_id)  # the row is gone: plain "no run" from here on
            self._bus.run_deleted(run_id)

    def _check_fence(self, run_id: int) -> None:
        if run_id in self._fenced:
            raise RunNotFound(f"no run {run_id} (being deleted)")

    def subscribe(self, run_id: int, direct: DirectSink | None = None) -> Subscription:
        """The run's live events as they are published (use as `with`): give it to `watch` when a task
        other than the one reading `watch` must be able to end the subscription. `direct`: a direct sink
        (events/bus.py); `fence` drops the run from the bus, so it gets none of a fenced run's batches."""
        return self._bus.subscribe(run_id, direct)

    async def watch(
        self, run_id: int, after_seq: int, subscription: Subscription | None = None
    ) -> AsyncGenerator[EventBatch, None]:
        """The run's events after `after_seq`: stored ones, then live, each once, in order, ending with
        the terminal one (see events/stream.py). Raises RunNotFound, or RunGone once deleted (or fenced
        for deletion: every batch is checked after its read, so none comes from a half-deleted run)."""
        self._check_fence(run_id)
        stream = stream_run_events(self._store, self._bus, run_id, after_seq, subscription=subscription)
        async with aclosing(stream) as batches:
            async for batch in batches:
                if run_id in self._fenced:
                    raise RunGone(f"run {run_id} was deleted")
                yield batch  # noqa: ASYNC119 (callers close this generator with aclosing)

    async def get(self, run_id: int) -> Run:
        self._check_fence(run_id)
        run = await self._store.read(sql.get_run, run_id)
        if run is None:
            raise RunNotFound(f"no run {run_id}")
        return self._with_waiting_for(run)

    async def list(
        self, statuses: Sequence[str], limit: int, before: int | None, job_id: int | None = None
    ) -> tuple[list[Run], int | None]:
        runs, next_before = await self._store.read(sql.list_runs, statuses, limit, before, job_id)
        return [self._with_waiting_for(run) for run in runs], next_before

    async def cancel(self, run_id: int, *, by: str | None) -> Run:
        """Cancel a queued run at once, or ask the scheduler to stop a running one.

        Raises StatusConflict (409) for a finished run, RunNotFound for an unknown one.
        """
        reason = f"cancelled by {by}" if by else "cancelled"
        if self._store.unavailable is not None:
            # Recording goes through the event log, which waits out storage faults; a request answers
            # 503 instead of hanging until the database is back.
            raise StoreUnavailable(self._store.unavailable)
        try:
            return self._with_waiting_for(
                await self._recorder.finish(run_id, from_status="queued", status="cancelled", reason=reason)
            )
        except StatusConflict:
            pass
        run = await self.get(run_id)
        if run.status == "running":
            if self._scheduling.request_stop(run_id, "cancelled", reason):
                return run
            run = await self.get(run_id)  # it finished meanwhile
        if run.status in TERMINAL_STATUSES:
            raise StatusConflict(f"run {run_id} has already finished ({run.status})")
        raise StatusConflict(f"run {run_id} cannot be cancelled while {run.status}")

    async def events_page(self, run_id: int, after_seq: int, limit: int) -> EventsPage:
        self._check_fence(run_id)
        page = await self._store.read(sql.events_page, run_id, after_seq, limit)
        if page is None or run_id in self._fenced:
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
        in seq order, newline-terminated, read page by page so a huge log is never held whole.

        Raises RunGone if retention fences the run meanwhile: the answer then breaks off (no final
        chunk) instead of ending as if the log were complete."""
        self._check_fence(run_id)
        position = 0
        while position < up_to_seq:
            rows = await self._store.read(sql.output_lines, run_id, position, up_to_seq, LOG_PAGE)
            if not rows or run_id in self._fenced:
                # Events up to up_to_seq existed when the request came: none left means deleted.
                raise RunGone(f"run {run_id} was deleted while its log was read")
            position = rows[-1][0]
            text = "".join(line + "\n" for _, line in rows if line is not None)
            if text:
                yield text
