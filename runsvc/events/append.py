"""Appending run events: seq assignment, group commit across all runs, publish after commit.

Every append from every run lands in one pending buffer. The first append into an empty buffer queues
ONE write request with the store; until the writer takes that request into a batch, later appends join
the same buffer. The writer then assigns seqs (per run: 1, 2, 3, … from `runs.last_seq`, read and written
for all the buffer's runs in one statement each), inserts all rows in one call (store/events.py),
commits, and on the Trio thread publishes one batch per run to the bus and wakes every appender. So N
concurrent appends cost one transaction and one thread hop, not N.

Group commits are at least `commit_interval_s` apart: an append that opens a buffer within that time of
the previous buffer's write request waits for the rest of it before queueing the request (others join
the buffer meanwhile). A child that writes a line every millisecond is read about as often, and each read
is an append; without the interval each of them cost a transaction and a thread hop (~700 commits/s for
1,000 lines/s), with it they share a few. An append after a quiet spell is queued at once.

Output is also paced from the reader's side (`wait_turn`, used by the run recorder): after an append of
output commits, its reader waits until `output_interval_s` after that commit's request before it reads
again, so a chatty run's lines wait in its pipe and go into one append that commits at once, rather than
being read early and waiting in a buffer for the next commit.

An append can carry a `transition`: a function run in the same transaction before its events are
numbered (e.g. "UPDATE runs SET status = 'succeeded' …"). If it raises, that append is dropped and the
exception goes to its caller; the other appends commit.

Likewise an append the database refuses (a string with a lone surrogate, an integer past 2^63; on
PostgreSQL a NUL character too): the buffer's rows go in with one insert, so such an append would fail
every run's appends in the buffer, and a run that was finishing then had nothing to record its end with.
When that insert fails with anything but a storage fault, the buffer is undone and written again one
append per savepoint: the bad append's caller gets the exception, every other append commits. (A storage
fault — locked, full, I/O — fails the whole write, which the store retries: SPEC §14.)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import attrs
import trio

from ..model import Event, EventBatch, RunNotFound
from ..store import Store, StoreClosedError, is_transient
from ..store import events as sql
from ..store.dialect import Connection
from ..timeutil import now_ts
from .bus import RunEventBus

Transition = Callable[[Connection], None]


@attrs.define(eq=False)
class _Append:
    items: Sequence[tuple[str, Any]]  # (kind, data)
    transition: Transition | None
    events: list[Event] = attrs.Factory(list)
    error: Exception | None = None


@attrs.define(eq=False)
class _Buffer:
    by_run: dict[int, list[_Append]] = attrs.Factory(dict)
    batches: list[EventBatch] = attrs.Factory(list)  # one per run, serialized in the writer thread
    done: trio.Event = attrs.Factory(trio.Event)
    error: BaseException | None = None


@attrs.frozen
class EventLogStatistics:
    appends: int  # append() calls
    waiting_appends: int  # in the buffer the writer has not taken yet
    buffers_committed: int  # group commits; appends / buffers_committed is the grouping factor
    events_committed: int


class EventLog:
    def __init__(self, store: Store, bus: RunEventBus, *, commit_interval_s: float = 0.0):
        self._store = store
        self._bus = bus
        self._commit_interval_s = commit_interval_s
        self._last_request_at = -math.inf  # trio time the previous buffer's write request was queued
        self._open: _Buffer | None = None  # the buffer the queued write request will take
        self._appends = 0
        self._buffers_committed = 0
        self._events_committed = 0

    async def append(
        self, run_id: int, items: Sequence[tuple[str, Any]], *, transition: Transition | None = None
    ) -> list[Event]:
        """Append `items` ((kind, data) pairs) to the run; return them as committed events.

        Raises RunNotFound if the run does not exist, or whatever `transition` raised.
        """
        buffer = self._open
        opened = buffer is None
        if buffer is None:
            buffer = self._open = _Buffer()
        append = _Append(items, transition)
        buffer.by_run.setdefault(run_id, []).append(append)
        self._appends += 1
        if opened:
            await self._queue_write(buffer)
        await buffer.done.wait()
        if buffer.error is not None:
            raise buffer.error
        if append.error is not None:
            raise append.error
        return append.events

    async def wait_turn(self, interval_s: float) -> None:
        """Return once `interval_s` has passed since the latest group commit's write request (at once if
        it has): an append made then is committed without waiting for the commit interval."""
        due = self._last_request_at + interval_s
        if trio.current_time() < due:
            await trio.sleep_until(due)

    async def _queue_write(self, buffer: _Buffer) -> None:
        """Queue the buffer's write request, no sooner than `commit_interval_s` after the previous one.
        Queued even if this appender is cancelled while it waits: the buffer holds others' appends too."""
        try:
            due = self._last_request_at + self._commit_interval_s
            if trio.current_time() < due:
                await trio.sleep_until(due)
        finally:
            self._last_request_at = trio.current_time()
            try:
                self._store.submit_write(
                    _write_buffer,
                    prepare=self._take_open_buffer,
                    on_commit=self._publish,
                    on_error=partial(self._fail, buffer),
                    retry=True,  # a transient storage fault holds the appenders (and runs) until it passes
                )
            except StoreClosedError as exc:
                self._fail(buffer, exc)  # the appenders that joined meanwhile get the error too
                raise

    def statistics(self) -> EventLogStatistics:
        waiting = sum(len(appends) for appends in self._open.by_run.values()) if self._open else 0
        return EventLogStatistics(self._appends, waiting, self._buffers_committed, self._events_committed)

    def _take_open_buffer(self) -> tuple[_Buffer, str, frozenset[int]]:
        buffer, self._open = self._open, None
        assert buffer is not None  # queued together with the buffer; taken once
        watched = frozenset(run_id for run_id in buffer.by_run if self._bus.subscriber_count(run_id))
        return buffer, now_ts(), watched

    def _fail(self, buffer: _Buffer, exc: BaseException) -> None:
        if self._open is buffer:  # never taken by the writer (store closing)
            self._open = None
        buffer.error = exc
        buffer.done.set()

    def _publish(self, buffer: _Buffer) -> None:
        self._buffers_committed += 1
        for batch in buffer.batches:
            self._events_committed += len(batch)
            self._bus.publish(batch)
        buffer.done.set()


def _write_buffer(conn: Connection, buffer: _Buffer, ts: str, watched: frozenset[int]) -> _Buffer:
    """Writer thread, inside the group transaction. `watched`: the runs that had subscribers when the
    writer took the buffer; only their batches are worth serializing here."""
    buffer.batches.clear()  # this may be a retry of a write that met a storage fault at COMMIT
    conn.execute("SAVEPOINT buffer")
    try:
        rows: list[sql.Row] = []
        seqs = sql.last_seqs(conn, list(buffer.by_run))
        for run_id, appends in buffer.by_run.items():
            _number_run(run_id, seqs, conn, appends, ts, rows)
        sql.insert_rows_and_set_last_seqs(conn, rows, seqs)
    except Exception as exc:
        if is_transient(exc):
            raise  # the store retries the whole write
        conn.execute("ROLLBACK TO buffer")
        conn.execute("RELEASE buffer")
        seqs = sql.last_seqs(conn, list(buffer.by_run))
        for run_id, appends in buffer.by_run.items():
            _number_run(run_id, seqs, conn, appends, ts, None)
        sql.set_last_seqs(conn, seqs)
    else:
        conn.execute("RELEASE buffer")
    # The JSON of watched runs' batches is built here too, not on the Trio thread (≈ 30 ms for 10,000
    # events); a run nobody watches never needs it. (Someone who subscribes during this write gets a
    # batch serialized on first use.) If the commit fails, on_error runs instead of _publish and these
    # batches are dropped.
    for run_id, appends in buffer.by_run.items():
        events = [event for append in appends for event in append.events]
        if events:
            make = EventBatch.serialized if run_id in watched else EventBatch
            buffer.batches.append(make(run_id, events))
    return buffer


def _number_run(
    run_id: int,
    seqs: dict[int, int],
    conn: Connection,
    appends: list[_Append],
    ts: str,
    rows: list[sql.Row] | None,
) -> None:
    """Run the transitions and number the events of one run's appends, from its last seq in `seqs`
    (read for the whole buffer at once), adding their rows to `rows` for the caller's one insert and
    leaving the run's new last seq in `seqs` (the caller writes them all at once); with `rows` None,
    each append is inserted alone in a savepoint of its own, so an append that fails is dropped alone.
    A run missing from `seqs` does not exist: its appends fail with RunNotFound."""
    if run_id not in seqs:
        for append in appends:
            append.events = []
            append.error = RunNotFound(f"no run {run_id}")
        return
    start = seq = seqs.pop(run_id)
    for append in appends:
        append.events, append.error = [], None  # this may be a retry of a batch that met a fault
        if rows is None:
            events = _insert_alone(conn, run_id, seq, append, ts)
        elif append.transition is None or _transition(conn, append):
            events = sql.number(run_id, seq, append.items, ts, rows)
        else:
            continue
        append.events = events
        seq += len(events)
    if seq != start:
        seqs[run_id] = seq


def _transition(conn: Connection, append: _Append) -> bool:
    """Run the append's transition in a savepoint; if it raises, undo it and keep the error."""
    assert append.transition is not None
    conn.execute("SAVEPOINT transition")
    try:
        append.transition(conn)
    except Exception as exc:
        if is_transient(exc):
            raise  # a storage fault is not the append's: the store retries the whole write
        conn.execute("ROLLBACK TO transition")
        conn.execute("RELEASE transition")
        append.error = exc
        return False
    conn.execute("RELEASE transition")
    return True


def _insert_alone(conn: Connection, run_id: int, seq: int, append: _Append, ts: str) -> list[Event]:
    """The append's transition and its rows in one savepoint: its events, or [] and its error."""
    conn.execute("SAVEPOINT append")
    try:
        if append.transition is not None:
            append.transition(conn)
        rows: list[sql.Row] = []
        events = sql.number(run_id, seq, append.items, ts, rows)
        sql.insert_rows(conn, rows)
    except Exception as exc:
        if is_transient(exc):
            raise
        conn.execute("ROLLBACK TO append")
        conn.execute("RELEASE append")
        append.error = exc
        return []
    conn.execute("RELEASE append")
    return events
