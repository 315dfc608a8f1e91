"""The store: one writer connection with group commit, a few readers, all in threads; SQLite or PostgreSQL.

Every database call runs in a worker thread under the store's own CapacityLimiter, never on the Trio
thread. Writes are requests queued to ONE writer task that group-commits them and handles the
database's faults (writer.py); reads take a free read slot and run under a time limit (SQLite's
progress handler, as Datasette does; PostgreSQL's statement_timeout). The two dialects differ only in
their connections (connections.py, postgres.py: `Database`) and in the SQL that must differ
(dialect.py); everything here is written once.
"""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import attrs
import trio

from ..log import get_logger
from .connections import SqliteReader, SqliteWriter, connect, open_connections, owner_only
from .database import Database, Reader
from .dialect import SQLITE, Connection
from .errors import StoreClosedError
from .faults import FaultInjector, ReadTimedOut, StoreUnavailable
from .writer import PROBE_INTERVAL_S, RETRY_FIRST_S, RETRY_MAX_S, GroupCommitWriter, WriteRequest

__all__ = [
    "PROBE_INTERVAL_S", "RETRY_FIRST_S", "RETRY_MAX_S", "Database", "Store", "StoreStatistics", "open_store",
]

T = TypeVar("T")
log = get_logger(__name__)



@attrs.frozen
class StoreStatistics:
    statements: int  # execute/executemany/executescript calls, on every connection (not rows)
    statements_on_trio_thread: int  # must stay 0: the database is never used on the Trio thread
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
        database: Database,
        limiter: trio.CapacityLimiter,
        *,
        read_timeout_s: float = 30.0,
        close_timeout_s: float = 10.0,
    ):
        self.database = database
        self.dialect = database.dialect
        self.path = database.path
        self._counters = database.counters
        self._readers = database.readers
        self._free_send, self._free_receive = trio.open_memory_channel[Reader](len(self._readers))
        for reader in self._readers:
            self._free_send.send_nowait(reader)
        self._limiter = limiter  # the database's own worker threads, apart from trio's default pool
        self.faults = FaultInjector()
        self._writer = GroupCommitWriter(database.writer, limiter, self.faults)
        self._closing = False
        self._closed = False
        self._read_timeout_s = read_timeout_s
        self._close_timeout_s = close_timeout_s

    def connect(self) -> Connection:
        """A new connection outside the store, for tools and tests (the caller closes it; never use it
        on the Trio thread in the server)."""
        conn: Connection = self.database.connect()
        return conn

    @property
    def unavailable(self) -> str | None:
        """Why the database cannot be written right now, or None."""
        return self._writer.unavailable

    def inject_write_faults(self, count: int, kind: str = "locked") -> None:
        """Test hook: the next `count` write attempts fail as if the file were locked ("locked"), the
        disk full ("full") or failing ("ioerr"). See faults.FaultInjector."""
        self.faults.arm(count, kind)
        self._writer.wake()

    def inject_lost_commit_answers(self, count: int) -> None:
        """Test hook: the next `count` COMMITs succeed but fail afterwards, as if the connection broke
        before the server's answer (see faults.FaultInjector.lose_commit_answers)."""
        self.faults.lose_commit_answers(count)

    # ---- reads -------------------------------------------------------------------------------------

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(conn, *args)` on a reader connection in a worker thread and return its result."""
        if self._closing:
            raise StoreClosedError("store is closed")
        reader = await self._free_receive.receive()
        try:
            return await trio.to_thread.run_sync(self._timed_read, reader, fn, args, limiter=self._limiter)
        except ReadTimedOut:
            raise  # a slow read says nothing about the database
        except StoreUnavailable:
            # The database may be gone (PostgreSQL stopped) with no write to notice: the writer finds out
            # and watches it until it is back, so /healthz says degraded meanwhile (writer.py).
            self._writer.suspect()
            raise
        finally:
            self._free_send.send_nowait(reader)

    def _timed_read(self, reader: Reader, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        """Worker thread: `fn` under the read time limit; transient faults become StoreUnavailable."""
        try:
            result: T = reader.run(fn, args, self._read_timeout_s)
            return result
        except reader.errors as exc:
            if self._closing:
                raise StoreClosedError("store closed during the read") from None
            if not reader.is_transient(exc):
                raise
            if reader.timed_out(exc):
                raise ReadTimedOut(f"a read took longer than {self._read_timeout_s:g} s") from None
            raise StoreUnavailable(reader.describe(exc)) from None

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
            for reader in self._readers:
                reader.interrupt()
            free: list[Reader] = []
            with trio.move_on_after(self._close_timeout_s) as waited:
                await writer_exited.wait()
                for _ in self._readers:
                    free.append(await self._free_receive.receive())
            if waited.cancelled_caught:
                self._writer.link.interrupt()
                with trio.move_on_after(1.0):
                    await writer_exited.wait()
                while True:
                    try:
                        free.append(self._free_receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                stuck = len(self._readers) - len(free) + (0 if writer_exited.is_set() else 1)
                log.warning("database closed with connections still busy", busy=stuck)
            closers: list[Callable[[], None]] = [reader.close for reader in free]
            if writer_exited.is_set():
                closers.append(self._writer.link.close)
            closers.append(self.database.close_rest)
            with trio.move_on_after(self._close_timeout_s):
                await trio.to_thread.run_sync(_close_all, closers, limiter=self._limiter, abandon_on_cancel=True)
        self._closed = True


@asynccontextmanager
async def open_store(
    path: str | os.PathLike[str] | None = None,
    *,
    database_url: str = "",
    readers: int = 4,
    busy_timeout_ms: int = 5000,
    read_timeout_s: float = 30.0,
    close_timeout_s: float = 10.0,
    exclusive: bool = False,
) -> AsyncIterator[Store]:
    """Open (creating or upgrading) the database — PostgreSQL at `database_url` if given, else the SQLite
    file at `path` — and close it when the block exits.

    A new SQLite file is created mode 0600, and an existing one (with its -wal and -shm files) is
    narrowed to 0600: it holds password hashes and every run's environment. PostgreSQL failures to
    start are DatabaseSettingError (fix the setting) or DatabaseUnreachable (try again later);
    `exclusive` (the server) also refuses a PostgreSQL database another server uses (DatabaseInUse).
    (A SQLite file is the server's through its data dir's lock.)
    """
    limiter = trio.CapacityLimiter(readers + 1)
    if database_url:
        from .postgres import open_database  # psycopg only for a PostgreSQL store (importing it costs 0.2 s)

        database = await trio.to_thread.run_sync(
            open_database, database_url, readers, read_timeout_s, threading.get_ident(), exclusive,
            limiter=limiter,
        )
    else:
        if path is None:
            raise ValueError("open_store needs a SQLite path or a database_url")
        database = await trio.to_thread.run_sync(
            _open_sqlite, Path(path), readers, busy_timeout_ms, threading.get_ident(), limiter=limiter
        )
    store = Store(database, limiter, read_timeout_s=read_timeout_s, close_timeout_s=close_timeout_s)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(store._writer.run)
        try:
            yield store
        finally:
            await store.aclose()
            # The writer has exited, or its statement was interrupted by aclose(); its thread is never
            # abandoned (writer.py), so only a request stuck outside the database could hold this exit.
            nursery.cancel_scope.cancel()


def _open_sqlite(path: Path, readers: int, busy_timeout_ms: int, trio_thread: int) -> Database:
    """Worker thread: the file made owner-only, then its writer (WAL, migrated) and readers."""
    owner_only(path)
    conns, counters = open_connections(path, readers, busy_timeout_ms, trio_thread)
    writer, *reader_conns = conns
    return Database(
        SQLITE, SqliteWriter(writer), [SqliteReader(conn) for conn in reader_conns], counters, path=path,
        connect=partial(connect, path, busy_timeout_ms),
    )


def _close_all(closers: list[Callable[[], None]]) -> None:
    for close in closers:
        close()
