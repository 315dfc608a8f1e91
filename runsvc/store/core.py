"""The SQLite store: one writer connection with group commit, a small pool of readers, all in threads.

Every sqlite3 call runs in a worker thread under the store's own CapacityLimiter, never on the Trio
thread. Writes are requests queued to ONE writer task: it takes whatever is pending, runs all of it in
one transaction in one thread hop (each request inside its own SAVEPOINT, so one failing request does not
undo the others), commits, and only then runs each request's `on_commit` callback on the Trio thread.
That is where the event bus publishes: after the commit, never before.

Faults (see faults.py): a batch that meets a transient fault (another process holds the write lock
past the busy timeout, a full disk, an I/O error) is rolled back as a whole. Requests submitted with
`retry=True` go back to the queue and the writer tries again after a backoff, for as long as it takes;
the others fail with `StoreUnavailable`. Meanwhile the store reports `unavailable` (for /healthz), new
non-retrying writes fail at once, and an idle writer probes the database until a write works again.
Reads run under a time limit enforced by SQLite's progress handler, as Datasette does.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import attrs
import trio

from ..log import get_logger
from .errors import StoreClosedError
from .faults import FaultInjector, ReadTimedOut, StoreUnavailable, describe, is_transient
from .migrations import migrate

T = TypeVar("T")
log = get_logger(__name__)

RETRY_FIRST_S = 0.05  # backoff before the first retry of a batch that met a transient fault…
RETRY_MAX_S = 2.0  # …doubling up to this
PROBE_INTERVAL_S = 1.0  # an idle writer probes an unavailable database this often
PROGRESS_STEPS = 10_000  # SQLite VM steps between two checks of a read's time limit


@attrs.frozen
class StoreStatistics:
    statements: int  # execute/executemany/executescript calls, on every connection (not rows)
    statements_on_trio_thread: int  # must stay 0: sqlite3 never runs on the Trio thread
    transactions: int  # write transactions committed
    write_requests: int  # write() calls executed
    write_batches: int  # writer thread hops; requests / batches is the group-commit factor
    pending_writes: int
    unavailable: str | None  # why writes fail right now; None when the database is writable
    write_faults: int  # batches and probes that met a transient fault


@attrs.define(eq=False)
class _WriteRequest:
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


class Store:
    """Use `open_store()`; it runs the writer task and closes the store on exit."""

    def __init__(
        self,
        path: Path,
        connections: list[sqlite3.Connection],
        counters: list[_StatementCounter],
        limiter: trio.CapacityLimiter,
        *,
        read_timeout_s: float = 30.0,
        close_timeout_s: float = 10.0,
    ):
        self.path = path
        writer, *readers = connections
        self._counters = counters
        self._writer = writer
        self._readers = readers
        self._free_send, self._free_receive = trio.open_memory_channel[sqlite3.Connection](len(readers))
        for conn in readers:
            self._free_send.send_nowait(conn)
        self._limiter = limiter  # SQLite's own worker threads, apart from trio's default pool
        self._pending: list[_WriteRequest] = []
        self._wakeup = trio.Event()
        self._writer_exited = trio.Event()
        self._closing = False
        self._closed = False
        self._transactions = 0
        self._write_requests = 0
        self._write_batches = 0
        self._write_faults = 0
        self._unavailable: str | None = None
        self._close_requested = trio.Event()
        self._read_timeout_s = read_timeout_s
        self._close_timeout_s = close_timeout_s
        self._read_deadlines: dict[int, float] = {}  # id(conn) -> time.monotonic() deadline
        for conn in readers:
            conn.set_progress_handler(partial(self._read_over_time, id(conn)), PROGRESS_STEPS)
        self.faults = FaultInjector()

    @property
    def unavailable(self) -> str | None:
        """Why the database cannot be written right now, or None."""
        return self._unavailable

    def inject_write_faults(self, count: int, kind: str = "locked") -> None:
        """Test hook: the next `count` write attempts fail as if the file were locked ("locked"), the
        disk full ("full") or failing ("ioerr"). See faults.FaultInjector."""
        self.faults.arm(count, kind)
        self._wakeup.set()

    # ---- reads -------------------------------------------------------------------------------------

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(conn, *args)` on a reader connection in a worker thread and return its result."""
        if self._closing:
            raise StoreClosedError("store is closed")
        conn = await self._free_receive.receive()
        try:
            return await trio.to_thread.run_sync(self._timed_read, conn, fn, args, limiter=self._limiter)
        finally:
            self._free_send.send_nowait(conn)

    def _timed_read(self, conn: sqlite3.Connection, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        """Worker thread: `fn` under the read time limit; transient faults become StoreUnavailable."""
        self._read_deadlines[id(conn)] = time.monotonic() + self._read_timeout_s
        try:
            return fn(conn, *args)
        except sqlite3.Error as exc:
            if self._closing:
                raise StoreClosedError("store closed during the read") from None
            if not is_transient(exc):
                raise
            if time.monotonic() >= self._read_deadlines[id(conn)]:
                raise ReadTimedOut(f"a read took longer than {self._read_timeout_s:g} s") from None
            raise StoreUnavailable(describe(exc)) from None
        finally:
            if conn.in_transaction:  # fn left a read transaction open (an error mid-way)
                conn.rollback()

    def _read_over_time(self, conn_id: int) -> int:
        """SQLite progress handler of a reader: non-zero interrupts the statement."""
        return int(self._closing or time.monotonic() >= self._read_deadlines.get(conn_id, float("inf")))

    # ---- writes ------------------------------------------------------------------------------------

    async def write(
        self,
        fn: Callable[..., T],
        *args: Any,
        on_commit: Callable[[T], None] | None = None,
        transaction: bool = True,
        retry: bool = False,
    ) -> T:
        """Run `fn(conn, *args)` on the writer, group-committed with whatever else is pending.

        `on_commit(result)` runs on the Trio thread right after the commit, even if the caller has been
        cancelled meanwhile. `transaction=False` runs `fn` alone outside any transaction (VACUUM,
        checkpoints). On a transient fault, `retry=True` waits and tries again until the write works
        (or the store closes); otherwise StoreUnavailable is raised.
        """
        request = self.submit_write(fn, *args, on_commit=on_commit, transaction=transaction, retry=retry)
        try:
            await request.done.wait()
        except trio.Cancelled:
            if not request.executed and request in self._pending:
                self._pending.remove(request)
            raise
        if request.error is not None:
            raise request.error
        return request.result

    def submit_write(
        self,
        fn: Callable[..., Any],
        *args: Any,
        on_commit: Callable[[Any], None] | None = None,
        transaction: bool = True,
        prepare: Callable[[], tuple[Any, ...]] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        retry: bool = False,
    ) -> _WriteRequest:
        """Queue a write without waiting for it (write() is this plus the wait).

        `prepare()`, if given, runs on the Trio thread at the moment the writer takes the request into
        a batch, and returns the arguments for `fn`: a caller can keep adding to a buffer until then.
        `on_error(exc)` runs on the Trio thread if the request failed or never ran. While the database
        is unavailable a request without `retry` fails at once with StoreUnavailable.
        """
        if self._closing:
            raise StoreClosedError("store is closed")
        if self._unavailable is not None and not retry:
            raise StoreUnavailable(self._unavailable)
        request = _WriteRequest(fn, args, transaction, on_commit, prepare, on_error, retry)
        self._pending.append(request)
        self._wakeup.set()
        return request

    async def _run_writer(self) -> None:
        backoff = RETRY_FIRST_S
        try:
            while True:
                if not self._pending:
                    if self._closing:
                        return
                    self._wakeup = trio.Event()
                    if self._unavailable is None:
                        await self._wakeup.wait()
                        continue
                    with trio.move_on_after(PROBE_INTERVAL_S):
                        await self._wakeup.wait()
                    if not self._pending and not self._closing:
                        await self._probe()
                    continue
                batch, self._pending = self._pending, []
                for request in batch:
                    if request.prepare is not None:
                        request.args, request.prepare = request.prepare(), None
                stopped: tuple[BaseException, int] | None = None
                try:
                    stopped = await trio.to_thread.run_sync(
                        self._execute_batch, batch, limiter=self._limiter, abandon_on_cancel=True
                    )
                finally:
                    self._write_batches += 1
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
            leftover, self._pending = self._pending, []
            self._finish_batch(leftover)
            self._writer_exited.set()

    def _requeue_or_fail(self, batch: list[_WriteRequest], fault: BaseException) -> None:
        """After a transient fault nothing of `batch` committed: retrying requests queue again (ahead of
        newer ones, keeping their order); the others fail."""
        again: list[_WriteRequest] = []
        failed: list[_WriteRequest] = []
        for request in batch:
            request.executed, request.result, request.error = False, None, None
            if request.retry and not self._closing:
                again.append(request)
            else:
                request.executed = True  # it ran, and failed: not "closed before it ran"
                request.error = StoreUnavailable(describe(fault))
                failed.append(request)
        self._pending[:0] = again
        self._finish_batch(failed)

    def _fault(self, exc: BaseException) -> None:
        self._write_faults += 1
        reason = describe(exc)
        if self._unavailable is None:
            log.warning("database writes failing; retrying with backoff", error=reason)
        self._unavailable = reason

    def _writable_again(self) -> None:
        if self._unavailable is not None:
            log.warning("database writable again", after=self._unavailable)
            self._unavailable = None

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
        conn = self._writer
        try:
            self.faults.check()
            conn.execute("BEGIN IMMEDIATE")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            conn.execute(f"PRAGMA user_version = {int(version)}")
            conn.execute("COMMIT")
        finally:
            _rollback_quietly(conn)

    def _execute_batch(self, batch: list[_WriteRequest]) -> tuple[BaseException, int] | None:
        """Worker thread: consecutive transactional requests share one transaction.

        Returns None, or the transient fault that stopped the batch with the number of requests before
        it that are done (committed, or failed on their own); none of the others committed.
        """
        conn = self._writer
        done = 0
        try:
            self.faults.check()
            group: list[_WriteRequest] = []
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
            _rollback_quietly(conn)
            return exc, done
        return None

    def _execute_one(self, conn: sqlite3.Connection, request: _WriteRequest) -> None:
        request.executed = True
        try:
            request.result = request.fn(conn, *request.args)
        except sqlite3.Error as exc:
            if is_transient(exc):
                raise  # the whole batch meets the fault
            request.error = exc
        except Exception as exc:  # delivered to the caller of write()
            request.error = exc

    def _execute_group(self, conn: sqlite3.Connection, group: list[_WriteRequest]) -> None:
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
            _rollback_quietly(conn)
            for request in group:
                request.executed, request.result, request.error = True, None, exc
            return
        self._transactions += 1

    def _finish_batch(self, batch: list[_WriteRequest]) -> None:
        """Trio thread, after the commit: publish, then wake the callers."""
        for request in batch:
            if not request.executed:
                request.error = StoreClosedError("store closed before the write ran")
            else:
                self._write_requests += 1
            callback, value = request.on_commit, request.result
            if request.error is not None:
                callback, value = request.on_error, request.error
            if callback is not None:
                try:
                    callback(value)
                except Exception:
                    log.exception("write callback failed", fn=getattr(request.fn, "__name__", "?"))
            request.done.set()

    # ---- lifecycle ---------------------------------------------------------------------------------

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(
            statements=sum(counter.statements for counter in self._counters),
            statements_on_trio_thread=sum(counter.on_trio_thread for counter in self._counters),
            transactions=self._transactions,
            write_requests=self._write_requests,
            write_batches=self._write_batches,
            pending_writes=len(self._pending),
            unavailable=self._unavailable,
            write_faults=self._write_faults,
        )

    async def aclose(self) -> None:
        """Finish pending writes, wait for reads in flight, close every connection. Idempotent.

        Bounded: reads in flight are interrupted at once (the progress handler sees the store closing);
        writes still pending get `close_timeout_s` (retrying ones stop retrying), then the writer's
        statement is interrupted too. A connection still busy after that (a thread stuck outside
        SQLite) is left open rather than closed under its thread, and the store is closed anyway.
        """
        if self._closed:
            return
        self._closing = True
        self._close_requested.set()
        self._wakeup.set()
        with trio.CancelScope(shield=True):
            for conn in self._readers:
                conn.interrupt()
            free: list[sqlite3.Connection] = []
            with trio.move_on_after(self._close_timeout_s) as waited:
                await self._writer_exited.wait()
                for _ in self._readers:
                    free.append(await self._free_receive.receive())
            if waited.cancelled_caught:
                self._writer.interrupt()
                with trio.move_on_after(1.0):
                    await self._writer_exited.wait()
                while True:
                    try:
                        free.append(self._free_receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                stuck = len(self._readers) - len(free) + (0 if self._writer_exited.is_set() else 1)
                log.warning("database closed with connections still busy", busy=stuck)
            if self._writer_exited.is_set():
                free.append(self._writer)
            with trio.move_on_after(self._close_timeout_s):
                await trio.to_thread.run_sync(_close_all, free, limiter=self._limiter, abandon_on_cancel=True)
        self._closed = True


@attrs.define
class _StatementCounter:
    trio_thread: int
    statements: int = 0
    on_trio_thread: int = 0

    def count(self) -> None:
        # One connection is used by one thread at a time, so plain increments are safe.
        self.statements += 1
        if threading.get_ident() == self.trio_thread:
            self.on_trio_thread += 1


class _CountingConnection(sqlite3.Connection):
    """A connection that counts its execute/executemany/executescript calls, and those made on the Trio
    thread (which must stay 0). One count per call, not per statement run: an executemany of 10,000
    rows is one. (sqlite3's set_trace_callback counted every row of an executemany, and calling back
    into Python once per row cost a quarter to 40 % of insert throughput.)"""

    counter: _StatementCounter

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        self.counter.count()
        return super().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
        self.counter.count()
        return super().executemany(sql, parameters)

    def executescript(self, sql_script: str, /) -> sqlite3.Cursor:
        self.counter.count()
        return super().executescript(sql_script)


def _rollback_quietly(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # SQLite rolls back by itself when it cannot (e.g. after an I/O error)


def _close_all(connections: list[sqlite3.Connection]) -> None:
    for conn in connections:
        conn.close()


def _connect(path: Path, busy_timeout_ms: int, counter: _StatementCounter) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path,
        isolation_level=None,
        check_same_thread=False,
        cached_statements=256,
        factory=_CountingConnection,
    )
    assert isinstance(conn, _CountingConnection)
    conn.counter = counter
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def _open_connections(
    path: Path, readers: int, busy_timeout_ms: int, trio_thread: int
) -> tuple[list[sqlite3.Connection], list[_StatementCounter]]:
    counters = [_StatementCounter(trio_thread) for _ in range(readers + 1)]
    writer = _connect(path, busy_timeout_ms, counters[0])
    try:
        # Only takes effect on a new, empty file, and must precede WAL mode, which writes the header.
        writer.execute("PRAGMA auto_vacuum = INCREMENTAL")
        mode = writer.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise sqlite3.OperationalError(f"cannot switch {path} to WAL mode (got {mode})")
        migrate(writer)
        conns = [writer] + [_connect(path, busy_timeout_ms, c) for c in counters[1:]]
    except BaseException:
        writer.close()
        raise
    return conns, counters


@asynccontextmanager
async def open_store(
    path: str | os.PathLike[str],
    *,
    readers: int = 4,
    busy_timeout_ms: int = 5000,
    read_timeout_s: float = 30.0,
    close_timeout_s: float = 10.0,
) -> AsyncIterator[Store]:
    """Open (creating or upgrading) the database at `path`; close it when the block exits.

    A new database file is created mode 0600, and an existing one (with its -wal and -shm files) is
    narrowed to 0600: it holds password hashes and every run's environment.
    """
    path = Path(path)
    limiter = trio.CapacityLimiter(readers + 1)
    await trio.to_thread.run_sync(_owner_only, path, limiter=limiter)
    conns, counters = await trio.to_thread.run_sync(
        _open_connections, path, readers, busy_timeout_ms, threading.get_ident(), limiter=limiter
    )
    store = Store(
        path, conns, counters, limiter, read_timeout_s=read_timeout_s, close_timeout_s=close_timeout_s
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(store._run_writer)
        try:
            yield store
        finally:
            await store.aclose()
            nursery.cancel_scope.cancel()  # a writer stuck past the close timeout is abandoned


def _owner_only(path: Path) -> None:
    os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
    for suffix in ("", "-wal", "-shm"):
        try:
            os.chmod(f"{path}{suffix}", 0o600)
        except FileNotFoundError:
            pass
