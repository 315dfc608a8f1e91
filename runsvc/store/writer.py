"""The store's one writer: write requests queued to ONE task that group-commits them, and what it does
when the database stops taking writes.

The task takes whatever is pending, runs all of it in one transaction in one thread hop (each request
inside its own SAVEPOINT, so one failing request does not undo the others), commits, and only then runs
each request's `on_commit` callback on the Trio thread. That is where the event bus publishes: after the
commit, never before, and only for requests that committed. The thread hop is never abandoned, even when
the task is cancelled: the transaction commits or rolls back in its thread, then the callbacks say which.

One bad request fails only itself: an exception in it rolls back its savepoint; a COMMIT that fails for
a reason other than a storage fault (a deferred constraint one request broke) makes the group run again
one request per transaction, so only the culprit gets the error.

Faults (see faults.py): a batch that meets a transient fault (another process holds the write lock
past the busy timeout, a full disk, an I/O error) is rolled back as a whole. Requests submitted with
`retry=True` go back to the queue and the writer tries again after a backoff, for as long as it takes;
the others fail with `StoreUnavailable`. Meanwhile the writer reports `unavailable` (for /healthz), new
non-retrying writes fail at once, and an idle writer probes the database until a write works again.

A COMMIT whose answer never came (the connection broke, the server was killed) may have committed or
not. Where the database can say which afterwards (PostgreSQL: the transaction's id, taken before the
COMMIT, and `pg_xact_status` on the next connection), the batch's retrying requests keep that id and the
writer asks before running them again: committed, they are done (on_commit with their first result) and
are not written twice, which would store a run's lines twice; not committed, they run again. SQLite has
no such doubt: its COMMIT is a call into the same process. A non-retrying request in such a batch fails
with StoreUnavailable, as after any fault (it may have committed).

A read that meets a fault of the database's (not a time limit) asks the writer to probe at once
(`suspect`): a server that went away while nothing was written is then reported (`unavailable`, hence
/healthz) and watched until it is back, as if a write had failed. A healthy database is never polled.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, Protocol

import attrs
import trio

from ..log import get_logger
from . import faults as storage_faults
from .dialect import BEGIN_WRITE, Connection
from .errors import StoreClosedError
from .faults import FaultInjector, StoreUnavailable

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
    committed: bool = False  # set in the writer thread once the request's work is durable
    in_doubt: Any = None  # its COMMIT got no answer: the token to ask whether it committed (module docstring)
    result: Any = None
    error: BaseException | None = None


class WriterConnection(Protocol):
    """The writer's database connection, of either dialect (connections.SqliteWriter,
    postgres.PgWriter). Every method but `interrupt` runs in the writer's worker thread."""

    errors: tuple[type[BaseException], ...]  # the driver's exception classes

    def connection(self) -> Connection: ...  # may reconnect, and fail with a transient error
    def rollback_quietly(self) -> None: ...
    def probe(self) -> None: ...  # a write that changes nothing: does the database take writes again?
    def is_transient(self, exc: BaseException) -> bool: ...
    def describe(self, exc: BaseException) -> str: ...
    def interrupt(self) -> None: ...  # Trio thread: stop the statement in progress
    def close(self) -> None: ...
    # In a write transaction, before its COMMIT: what identifies it later, or None (no doubt possible).
    def commit_token(self, conn: Connection) -> Any: ...
    def committed(self, token: Any) -> bool: ...  # did the transaction of `token` commit? May fail transiently


class _CommitInDoubt(Exception):
    """A transient fault at COMMIT of a transaction that may have committed (see the module docstring)."""

    def __init__(self, fault: BaseException, token: Any, group: list[WriteRequest]):
        super().__init__(str(fault))
        self.fault, self.token, self.group = fault, token, group


class GroupCommitWriter:
    """The writer connection, its queue of requests and the task (`run`) that commits them."""

    def __init__(self, link: WriterConnection, limiter: trio.CapacityLimiter, faults: FaultInjector):
        self.link = link
        # Injected faults (faults.FaultInjector) are sqlite3 errors whatever the dialect.
        self._errors: tuple[type[BaseException], ...] = (sqlite3.Error, *link.errors)
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
        self._probe_requested = False  # a read met a fault: probe now, even if no write is pending

    def wake(self) -> None:
        self._wakeup.set()

    def suspect(self) -> None:
        """A read met a fault that may be the database's: probe it now (see the module docstring)."""
        if self.unavailable is None and not self._closing:
            self._probe_requested = True
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
                    if self._probe_requested:
                        self._probe_requested = False
                        await self._probe()
                        continue
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
                # Never abandoned, even when this task is cancelled: the transaction commits or rolls
                # back in its thread, and only then does anyone hear about it. (An abandoned batch once
                # ran on_commit for requests its thread had not committed, and the bus published them.)
                # A cancelled writer is still bounded: aclose() interrupts the statement after its
                # close timeout, and an interrupted batch rolls back and fails like any fault.
                stopped: tuple[BaseException, int] | None = None
                try:
                    stopped = await trio.to_thread.run_sync(self._execute_batch, batch, limiter=self._limiter)
                finally:  # also when cancelled before the thread started: then nothing of it ran
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
            request.executed, request.committed = False, False
            if request.in_doubt is None:  # else its result stands if its transaction did commit
                request.result, request.error = None, None
            if request.retry and not self._closing:
                again.append(request)
            else:
                request.executed = True  # it ran, and failed: not "closed before it ran"
                request.error = StoreUnavailable(self._describe(fault))
                failed.append(request)
        self.pending[:0] = again
        self._finish_batch(failed)

    def _fault(self, exc: BaseException) -> None:
        self.write_faults += 1
        reason = self._describe(exc)
        if self.unavailable is None:
            log.warning("database writes failing; retrying with backoff", error=reason)
        self.unavailable = reason

    def _writable_again(self) -> None:
        if self.unavailable is not None:
            log.warning("database writable again", after=self.unavailable)
            self.unavailable = None

    async def _probe(self) -> None:
        """An idle writer's test of an unavailable database (WriterConnection.probe)."""
        try:
            await trio.to_thread.run_sync(self._probe_sync, limiter=self._limiter)  # never abandoned
        except self._errors as exc:
            if not self._is_transient(exc):
                raise
            self._fault(exc)
        else:
            self._writable_again()

    def _probe_sync(self) -> None:
        self.faults.check()
        self.link.probe()

    def _is_transient(self, exc: BaseException) -> bool:
        return storage_faults.is_transient(exc) or self.link.is_transient(exc)

    def _describe(self, exc: BaseException) -> str:
        return storage_faults.describe(exc) if isinstance(exc, sqlite3.Error) else self.link.describe(exc)

    def _execute_batch(self, batch: list[WriteRequest]) -> tuple[BaseException, int] | None:
        """Worker thread: consecutive transactional requests share one transaction.

        Returns None, or the transient fault that stopped the batch with the number of requests before
        it that are done (committed, or failed on their own); none of the others committed.
        """
        done = 0
        try:
            self.faults.check()
            conn = self.link.connection()
            done = self._resolve_doubt(batch)
            for group in _groups(batch[done:]):
                if not group[0].transaction:
                    self._execute_one(conn, group[0])
                elif not self._execute_group(conn, group):
                    # The group failed as a whole, not through a storage fault and not inside one
                    # request's savepoint (a deferred constraint at COMMIT): it cannot be pinned on one
                    # request, so each runs again in a transaction of its own and only the culprit
                    # fails. Counted one by one: a fault meanwhile must not re-run the committed ones.
                    for request in group:
                        self._execute_group(conn, [request])
                        done += 1
                    continue
                done += len(group)
        except _CommitInDoubt as doubt:
            for request in doubt.group:
                request.in_doubt = doubt.token
            self.link.rollback_quietly()
            return doubt.fault, done
        except self._errors as exc:
            if not self._is_transient(exc):
                raise
            self.link.rollback_quietly()
            return exc, done
        return None

    def _resolve_doubt(self, batch: list[WriteRequest]) -> int:
        """Worker thread: the requests at the head of `batch` whose COMMIT got no answer are done if their
        transaction committed (returns how many), else they run again (returns 0)."""
        doubtful = 0
        while doubtful < len(batch) and batch[doubtful].in_doubt is not None:
            doubtful += 1
        if not doubtful:
            return 0
        committed = self.link.committed(batch[0].in_doubt)  # a transient fault: still in doubt, retried
        for request in batch[:doubtful]:
            request.in_doubt = None
            request.executed = committed
            request.committed = committed and request.error is None
        if committed:
            self.transactions += 1
            return doubtful
        return 0

    def _execute_one(self, conn: Connection, request: WriteRequest) -> None:
        request.executed, request.committed, request.result, request.error = True, False, None, None
        try:
            request.result = request.fn(conn, *request.args)
        except self._errors as exc:
            if self._is_transient(exc):
                raise  # the whole batch meets the fault
            request.error = exc
        except Exception as exc:  # delivered to the caller of write()
            request.error = exc
        if not request.transaction:
            # Alone and outside a transaction: what it did is done. A failed one may have left its own
            # transaction open, which would fail the next group's BEGIN for its neighbours.
            if request.error is not None:
                self.link.rollback_quietly()
            request.committed = request.error is None

    def _execute_group(self, conn: Connection, group: list[WriteRequest]) -> bool:
        """One transaction, each request in its own SAVEPOINT, so a request that raises is undone
        alone. A transient fault propagates (the caller rolls back). Any other failure of BEGIN or
        COMMIT rolls back and returns False, for a group of several requests (the caller runs them
        one by one); a lone request gets it as its error."""
        try:
            conn.execute(BEGIN_WRITE)
            for request in group:
                conn.execute("SAVEPOINT request")
                self._execute_one(conn, request)
                if request.error is not None:
                    conn.execute("ROLLBACK TO request")
                conn.execute("RELEASE request")
            token = self.link.commit_token(conn)
            try:
                conn.execute("COMMIT")
                self.faults.check_commit_answer()
            except self._errors as exc:
                if token is not None and self._is_transient(exc):
                    raise _CommitInDoubt(exc, token, group) from exc
                raise
        except self._errors as exc:
            if self._is_transient(exc):
                raise
            self.link.rollback_quietly()
            if len(group) > 1:
                return False
            request = group[0]
            request.executed, request.committed, request.result, request.error = True, False, None, exc
            return True
        for request in group:
            request.committed = request.error is None
        self.transactions += 1
        return True

    def _finish_batch(self, batch: list[WriteRequest]) -> None:
        """Trio thread, after the commit: publish, then wake the callers."""
        for request in batch:
            if not request.executed:
                request.error = StoreClosedError("store closed before the write ran")
            else:
                self.write_requests += 1
                if request.error is None and not request.committed:
                    # Only what committed is published: a batch whose thread raised (a bug, never a
                    # storage fault) ends here with requests that ran but did not commit.
                    request.result, request.error = None, StoreClosedError("the write did not commit")
            callback, value = request.on_commit, request.result
            if request.error is not None:
                callback, value = request.on_error, request.error
            if callback is not None:
                try:
                    callback(value)
                except Exception:
                    log.exception("write callback failed", fn=getattr(request.fn, "__name__", "?"))
            request.done.set()


def _groups(batch: list[WriteRequest]) -> list[list[WriteRequest]]:
    """Consecutive transactional requests form one group (one transaction); a non-transactional
    request is a group of its own."""
    groups: list[list[WriteRequest]] = []
    for request in batch:
        if request.transaction and groups and groups[-1][0].transaction:
            groups[-1].append(request)
        else:
            groups.append([request])
    return groups
