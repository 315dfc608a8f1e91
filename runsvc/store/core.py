"""The SQLite store: one writer connection with group commit, a small pool of readers, all in threads.

Every sqlite3 call runs in a worker thread under the store's own CapacityLimiter, never on the Trio
thread. Writes are requests queued to ONE writer task: it takes whatever is pending, runs all of it in
one transaction in one thread hop (each request inside its own SAVEPOINT, so one failing request does not
undo the others), commits, and only then runs each request's `on_commit` callback on the Trio thread.
That is where the event bus publishes: after the commit, never before.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import attrs
import trio

from ..log import get_logger
from .errors import StoreClosedError
from .migrations import migrate

T = TypeVar("T")
log = get_logger(__name__)


@attrs.frozen
class StoreStatistics:
    statements: int  # execute/executemany/executescript calls, on every connection (not rows)
    statements_on_trio_thread: int  # must stay 0: sqlite3 never runs on the Trio thread
    transactions: int  # write transactions committed
    write_requests: int  # write() calls executed
    write_batches: int  # writer thread hops; requests / batches is the group-commit factor
    pending_writes: int


@attrs.define(eq=False)
class _WriteRequest:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    transaction: bool
    on_commit: Callable[[Any], None] | None
    prepare: Callable[[], tuple[Any, ...]] | None = None
    on_error: Callable[[BaseException], None] | None = None
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

    # ---- reads -------------------------------------------------------------------------------------

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(conn, *args)` on a reader connection in a worker thread and return its result."""
        if self._closing:
            raise StoreClosedError("store is closed")
        conn = await self._free_receive.receive()
        try:
            return await trio.to_thread.run_sync(fn, conn, *args, limiter=self._limiter)
        finally:
            self._free_send.send_nowait(conn)

    # ---- writes ------------------------------------------------------------------------------------

    async def write(
        self,
        fn: Callable[..., T],
        *args: Any,
        on_commit: Callable[[T], None] | None = None,
        transaction: bool = True,
    ) -> T:
        """Run `fn(conn, *args)` on the writer, group-committed with whatever else is pending.

        `on_commit(result)` runs on the Trio thread right after the commit, even if the caller has been
        cancelled meanwhile. `transaction=False` runs `fn` alone outside any transaction (VACUUM,
        checkpoints).
        """
        request = self.submit_write(fn, *args, on_commit=on_commit, transaction=transaction)
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
    ) -> _WriteRequest:
        """Queue a write without waiting for it (write() is this plus the wait).

        `prepare()`, if given, runs on the Trio thread at the moment the writer takes the request into
        a batch, and returns the arguments for `fn`: a caller can keep adding to a buffer until then.
        `on_error(exc)` runs on the Trio thread if the request failed or never ran.
        """
        if self._closing:
            raise StoreClosedError("store is closed")
        request = _WriteRequest(fn, args, transaction, on_commit, prepare, on_error)
        self._pending.append(request)
        self._wakeup.set()
        return request

    async def _run_writer(self) -> None:
        try:
            while True:
                if not self._pending:
                    if self._closing:
                        return
                    self._wakeup = trio.Event()
                    await self._wakeup.wait()
                    continue
                batch, self._pending = self._pending, []
                for request in batch:
                    if request.prepare is not None:
                        request.args = request.prepare()
                try:
                    await trio.to_thread.run_sync(self._execute_batch, batch, limiter=self._limiter)
                finally:
                    self._write_batches += 1
                    self._finish_batch(batch)
        finally:
            leftover, self._pending = self._pending, []
            self._finish_batch(leftover)
            self._writer_exited.set()

    def _execute_batch(self, batch: list[_WriteRequest]) -> None:
        """Worker thread: consecutive transactional requests share one transaction."""
        conn = self._writer
        group: list[_WriteRequest] = []
        for request in batch:
            if request.transaction:
                group.append(request)
                continue
            self._execute_group(conn, group)
            group = []
            self._execute_one(conn, request)
        self._execute_group(conn, group)

    def _execute_one(self, conn: sqlite3.Connection, request: _WriteRequest) -> None:
        request.executed = True
        try:
            request.result = request.fn(conn, *request.args)
        except Exception as exc:  # delivered to the caller of write()
            request.error = exc

    def _execute_group(self, conn: sqlite3.Connection, group: list[_WriteRequest]) -> None:
        if not group:
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            for request in group:
                request.executed, request.error = True, exc
            return
        for request in group:
            conn.execute("SAVEPOINT request")
            self._execute_one(conn, request)
            if request.error is not None:
                conn.execute("ROLLBACK TO request")
            conn.execute("RELEASE request")
        try:
            conn.execute("COMMIT")
            self._transactions += 1
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for request in group:
                request.result, request.error = None, exc

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
        )

    async def aclose(self) -> None:
        """Finish pending writes, wait for reads in flight, close every connection. Idempotent."""
        if self._closed:
            return
        self._closing = True
        self._wakeup.set()
        with trio.CancelScope(shield=True):
            await self._writer_exited.wait()
            for _ in self._readers:
                await self._free_receive.receive()
            connections = [self._writer, *self._readers]
            await trio.to_thread.run_sync(_close_all, connections, limiter=self._limiter)
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
    path: str | os.PathLike[str], *, readers: int = 4, busy_timeout_ms: int = 5000
) -> AsyncIterator[Store]:
    """Open (creating or upgrading) the database at `path`; close it when the block exits."""
    path = Path(path)
    limiter = trio.CapacityLimiter(readers + 1)
    conns, counters = await trio.to_thread.run_sync(
        _open_connections, path, readers, busy_timeout_ms, threading.get_ident(), limiter=limiter
    )
    store = Store(path, conns, counters, limiter)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(store._run_writer)
        try:
            yield store
        finally:
            await store.aclose()
