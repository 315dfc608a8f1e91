"""The store's one writer: write requests queued to ONE task that group-commits them, and what it does
when the database stops taking writes.

The task takes whatever is pending, runs all of it in one transaction in one thread hop (each request
inside its own SAVEPOINT, so one failing request does not undo the others), commits, and only then runs
each request's `on_commit` callback on the Trio thread. That is where the event bus publishes: after the
commit, never before.

Faults (see faults.py): a batch that meets a transient fault (another process holds the write lock
past the busy timeout, a full disk, an I/O error) is rolled back as a whole. Requests submitted with
`retry=True` go back to the queue and the writer tries again after a backoff, for as long as it takes;
the others fail with `StoreUnavailable`. Meanwhile the writer reports `unavailable` (for /healthz), new
non-retrying writes fail at once, and an idle writer probes the database until a write works again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import attrs
import trio

from ..log import get_logger
from .connections import rollback_quietly
from .errors import StoreClosedError
from .faults import FaultInjector, StoreUnavailable, describe, is_transient

log = get_logger("runsvc.store.core")  # the name these log lines have always had

RETRY_FIRST_S = 0.05  # backoff before the first retry of a batch that met a transient fault…
RETRY_MAX_S = 2.0  # …doubling up to this
PROBE_INTERVAL_S = 1.0  # an idle writer probes an unavailable database this often


@attrs.define(eq=False)
class WriteRequest:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    transaction: bool
    on_commit: Callable[[Any], None] | None
    prepare: Callable[[], tuple[Any, ...]] | None = None
    on_error: Callable[[BaseException], None] | None = None
    retry: bool = False
    done: trio.Event = attrs.Factory(trio.Event)
    executed: bool = False
    result: Any = None
    error: BaseException | None = None


class GroupCommitWriter:
    """The writer connection, its queue of requests and the task (`run`) that commits them."""

    def __init__(self, conn: sqlite3.Connection, limiter: trio.CapacityLimiter, faults: FaultInjector):
        self.conn = conn
        self._limiter = limiter
        self.faults = faults
        self.pending: list[WriteRequest] = []
        self._wakeup = trio.Event()
        self.exited = trio.Event()
        self._closing = False
        self._close_requested = trio.Event()
        self.transactions = 0
        self.write_requests = 0
        self.write_batches = 0
        self.write_faults = 0
        self.unavailable: str | None = None  # why writes fail right now; None when the database is writable

    def wake(self) -> None:
        self._wakeup.set()

    def begin_close(self) -> None:
        """Finish what is pending (retrying requests stop retrying), then `run` returns."""
        self._closing = True
        self._close_requested.set()
        self._wakeup.set()

    def submit(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        *,
        on_commit: Callable[[Any], None] | None,
        transaction: bool,
        prepare: Callable[[], tuple[Any, ...]] | None,
        on_error: Callable[[BaseException], None] | None,
        retry: bool,
    ) -> WriteRequest:
        if self._closing:
            raise StoreClosedError("store is closed")
        if self.unavailable is not None and not retry:
            raise StoreUnavailable(self.unavailable)
        request = WriteRequest(fn, args, transaction, on_commit, prepare, on_error, retry)
        self.pending.append(request)
        self._wakeup.set()
        return request

    def withdraw(self, request: WriteRequest) -> None:
        """The caller was cancelled: drop `request` if the writer has not taken it yet."""
        if not request.executed and request in self.pending:
            self.pending.remove(request)

    async def run(self) -> None:
        backoff = RETRY_FIRST_S
        try:
            while True:
                if not self.pending:
                    if self._closing:
                        return
                    self._wakeup = trio.Event()
                    if self.unavailable is None:
                        await self._wakeup.wait()
                        continue
                    with trio.move_on_after(PROBE_INTERVAL_S):
                        await self._wakeup.wait()
                    if not self.pending and not self._closing:
                        await self._probe()
                    continue
                batch, self.pending = self.pending, []
                for request in batch:
                    if request.prepare is not None:
                        request.args, request.prepare = request.prepare(), None
                stopped: tuple[BaseException, int] | None = None
                try:
                    stopped = await trio.to_thread.run_sync(
                        self._execute_batch, batch, limiter=self._limiter, abandon_on_cancel=True
                    )
                finally:
                    self.write_batches += 1
                    self._finish_batch(batch if stopped is None else batch[: stopped[1]])
                if stopped is None:
                    self._writable_again()
                    backoff = RETRY_FIRST_S
                    continue
                fault, done = stopped
                self._fault(fault)
                self._requeue_or_fail(batch[done:], fault)
                if not self._closing:
                    with trio.move_on_after(backoff):
                        await self._close_requested.wait()
                    backoff = min(backoff * 2, RETRY_MAX_S)
        finally:
            leftover, self.pending = self.pending, []
            self._finish_batch(leftover)
            self.exited.set()

    def _requeue_or_fail(self, batch: list[WriteRequest], fault: BaseException) -> None:
        """After a transient fault nothing of `batch` committed: retrying requests queue again (ahead of
        newer ones, keeping their order); the others fail."""
        again: list[WriteRequest] = []
        failed: list[WriteRequest] = []
        for request in batch:
            request.executed, request.result, request.error = False, None, None
            if request.retry and not self._closing:
                again.append(request)
            else:
                request.executed = True  # it ran, and failed: not "closed before it ran"
                request.error = StoreUnavailable(describe(fault))
                failed.append(request)
        self.pending[:0] = again
        self._finish_batch(failed)

    def _fault(self, exc: BaseException) -> None:
        self.write_faults += 1
        reason = describe(exc)
        if self.unavailable is None:
            log.warning("database writes failing; retrying with backoff", error=reason)
        self.unavailable = reason

    def _writable_again(self) -> None:
        if self.unavailable is not None:
            log.warning("database writable again", after=self.unavailable)
            self.unavailable = None

    async def _probe(self) -> None:
        """An idle writer's test of an unavailable database: a write transaction that changes nothing
        visible (it rewrites the schema cookie's neighbour, user_version, with its own value)."""
        try:
            await trio.to_thread.run_sync(self._probe_sync, limiter=self._limiter, abandon_on_cancel=True)
        except sqlite3.Error as exc:
            if not is_transient(exc):
                raise
            self._fault(exc)
        else:
            self._writable_again()

    def _probe_sync(self) -> None:
        conn = self.conn
        try:
            self.faults.check()
            conn.execute("BEGIN IMMEDIATE")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            conn.execute(f"PRAGMA user_version = {int(version)}")
            conn.execute("COMMIT")
        finally:
            rollback_quietly(conn)

    def _execute_batch(self, batch: list[WriteRequest]) -> tuple[BaseException, int] | None:
        """Worker thread: consecutive transactional requests share one transaction.

        Returns None, or the transient fault that stopped the batch with the number of requests before
        it that are done (committed, or failed on their own); none of the others committed.
        """
        conn = self.conn
        done = 0
        try:
            self.faults.check()
            group: list[WriteRequest] = []
            for request in batch:
                if request.transaction:
                    group.append(request)
                    continue
                self._execute_group(conn, group)
                done += len(group)
                group = []
                self._execute_one(conn, request)
                done += 1
            self._execute_group(conn, group)
        except sqlite3.Error as exc:
            if not is_transient(exc):
                raise
            rollback_quietly(conn)
            return exc, done
        return None

    def _execute_one(self, conn: sqlite3.Connection, request: WriteRequest) -> None:
        request.executed = True
        try:
            request.result = request.fn(conn, *request.args)
        except sqlite3.Error as exc:
            if is_transient(exc):
                raise  # the whole batch meets the fault
            request.error = exc
        except Exception as exc:  # delivered to the caller of write()
            request.error = exc

    def _execute_group(self, conn: sqlite3.Connection, group: list[WriteRequest]) -> None:
        """One transaction, each request in its own SAVEPOINT. A transient fault propagates (the
        caller rolls back); any other failure of BEGIN or COMMIT is every request's error."""
        if not group:
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
            for request in group:
                conn.execute("SAVEPOINT request")
                self._execute_one(conn, request)
                if request.error is not None:
                    conn.execute("ROLLBACK TO request")
                conn.execute("RELEASE request")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if is_transient(exc):
                raise
            rollback_quietly(conn)
            for request in group:
                request.executed, request.result, request.error = True, None, exc
            return
        self.transactions += 1

    def _finish_batch(self, batch: list[WriteRequest]) -> None:
        """Trio thread, after the commit: publish, then wake the callers."""
        for request in batch:
            if not request.executed:
                request.error = StoreClosedError("store closed before the write ran")
            else:
                self.write_requests += 1
            callback, value = request.on_commit, request.result
            if request.error is not None:
                callback, value = request.on_error, request.error
            if callback is not None:
                try:
                    callback(value)
                except Exception:
                    log.exception("write callback failed", fn=getattr(request.fn, "__name__", "?"))
            request.done.set()
