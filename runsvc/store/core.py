"""The SQLite store: one writer connection with group commit, a small pool of readers, all in threads.

Every sqlite3 call runs in a worker thread under the store's own CapacityLimiter, never on the Trio
thread. Writes are requests queued to ONE writer task that group-commits them and handles the
database's faults (writer.py); reads take a free reader connection and run under a time limit enforced
by SQLite's progress handler, as Datasette does. Opening the file — permissions, WAL, migrations, the
statement counters — is connections.py.
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
from .connections import StatementCounter, close_all, open_connections, owner_only
from .errors import StoreClosedError
from .faults import FaultInjector, ReadTimedOut, StoreUnavailable, describe, is_transient
from .writer import PROBE_INTERVAL_S, RETRY_FIRST_S, RETRY_MAX_S, GroupCommitWriter, WriteRequest

__all__ = ["PROBE_INTERVAL_S", "RETRY_FIRST_S", "RETRY_MAX_S", "Store", "StoreStatistics", "open_store"]

T = TypeVar("T")
log = get_logger(__name__)

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


class Store:
    """Use `open_store()`; it runs the writer task and closes the store on exit."""

    def __init__(
        self,
        path: Path,
        connections: list[sqlite3.Connection],
        counters: list[StatementCounter],
        limiter: trio.CapacityLimiter,
        *,
        read_timeout_s: float = 30.0,
        close_timeout_s: float = 10.0,
    ):
        self.path = path
        writer, *readers = connections
        self._counters = counters
        self._readers = readers
        self._free_send, self._free_receive = trio.open_memory_channel[sqlite3.Connection](len(readers))
        for conn in readers:
            self._free_send.send_nowait(conn)
        self._limiter = limiter  # SQLite's own worker threads, apart from trio's default pool
        self.faults = FaultInjector()
        self._writer = GroupCommitWriter(writer, limiter, self.faults)
        self._closing = False
        self._closed = False
        self._read_timeout_s = read_timeout_s
        self._close_timeout_s = close_timeout_s
        self._read_deadlines: dict[int, float] = {}  # id(conn) -> time.monotonic() deadline
        for conn in readers:
            conn.set_progress_handler(partial(self._read_over_time, id(conn)), PROGRESS_STEPS)

    @property
    def unavailable(self) -> str | None:
        """Why the database cannot be written right now, or None."""
        return self._writer.unavailable

    def inject_write_faults(self, count: int, kind: str = "locked") -> None:
        """Test hook: the next `count` write attempts fail as if the file were locked ("locked"), the
        disk full ("full") or failing ("ioerr"). See faults.FaultInjector."""
        self.faults.arm(count, kind)
        self._writer.wake()

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
            self._writer.withdraw(request)
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
    ) -> WriteRequest:
        """Queue a write without waiting for it (write() is this plus the wait).

        `prepare()`, if given, runs on the Trio thread at the moment the writer takes the request into
        a batch, and returns the arguments for `fn`: a caller can keep adding to a buffer until then.
        `on_error(exc)` runs on the Trio thread if the request failed or never ran. While the database
        is unavailable a request without `retry` fails at once with StoreUnavailable.
        """
        return self._writer.submit(
            fn, args, on_commit=on_commit, transaction=transaction, prepare=prepare, on_error=on_error,
            retry=retry,
        )

    # ---- lifecycle ---------------------------------------------------------------------------------

    def statistics(self) -> StoreStatistics:
        writer = self._writer
        return StoreStatistics(
            statements=sum(counter.statements for counter in self._counters),
            statements_on_trio_thread=sum(counter.on_trio_thread for counter in self._counters),
            transactions=writer.transactions,
            write_requests=writer.write_requests,
            write_batches=writer.write_batches,
            pending_writes=len(writer.pending),
            unavailable=writer.unavailable,
            write_faults=writer.write_faults,
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
        self._writer.begin_close()
        writer_exited = self._writer.exited
        with trio.CancelScope(shield=True):
            for conn in self._readers:
                conn.interrupt()
            free: list[sqlite3.Connection] = []
            with trio.move_on_after(self._close_timeout_s) as waited:
                await writer_exited.wait()
                for _ in self._readers:
                    free.append(await self._free_receive.receive())
            if waited.cancelled_caught:
                self._writer.conn.interrupt()
                with trio.move_on_after(1.0):
                    await writer_exited.wait()
                while True:
                    try:
                        free.append(self._free_receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                stuck = len(self._readers) - len(free) + (0 if writer_exited.is_set() else 1)
                log.warning("database closed with connections still busy", busy=stuck)
            if writer_exited.is_set():
                free.append(self._writer.conn)
            with trio.move_on_after(self._close_timeout_s):
                await trio.to_thread.run_sync(close_all, free, limiter=self._limiter, abandon_on_cancel=True)
        self._closed = True


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
    await trio.to_thread.run_sync(owner_only, path, limiter=limiter)
    conns, counters = await trio.to_thread.run_sync(
        open_connections, path, readers, busy_timeout_ms, threading.get_ident(), limiter=limiter
    )
    store = Store(
        path, conns, counters, limiter, read_timeout_s=read_timeout_s, close_timeout_s=close_timeout_s
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(store._writer.run)
        try:
            yield store
        finally:
            await store.aclose()
            # The writer has exited, or its statement was interrupted by aclose(); its thread is never
            # abandoned (writer.py), so only a request stuck outside SQLite could hold this exit.
            nursery.cancel_scope.cancel()
