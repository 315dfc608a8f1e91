"""Storage faults: which SQLite errors are the database's condition rather than a bug, and a hook
that makes the next writes fail the way a full disk or another process's lock would.

A transient fault (the file locked by another process past the busy timeout, a full disk, an I/O
error, a read that ran past its time limit) says nothing about the request that met it: the same
request can succeed later. The store retries such writes for callers that asked for it and reports
everything else as `StoreUnavailable`, which the HTTP layer answers with 503.
"""

from __future__ import annotations

import sqlite3

import attrs

from .errors import StoreError

# Primary result codes (https://www.sqlite.org/rescode.html) of conditions outside the request.
SQLITE_BUSY = 5
SQLITE_LOCKED = 6
SQLITE_READONLY = 8
SQLITE_INTERRUPT = 9
SQLITE_IOERR = 10
SQLITE_FULL = 13
SQLITE_CANTOPEN = 14
SQLITE_PROTOCOL = 15
TRANSIENT_CODES = frozenset(
    {SQLITE_BUSY, SQLITE_LOCKED, SQLITE_READONLY, SQLITE_INTERRUPT, SQLITE_IOERR, SQLITE_FULL,
     SQLITE_CANTOPEN, SQLITE_PROTOCOL}
)

FAULT_KINDS = {
    "locked": (SQLITE_BUSY, "database is locked"),
    "full": (SQLITE_FULL, "database or disk is full"),
    "ioerr": (SQLITE_IOERR, "disk I/O error"),
}


class StoreUnavailable(StoreError):
    """The database cannot do this now (locked, full, failing, too slow); trying later may work."""

    def __init__(self, reason: str):
        super().__init__(f"database unavailable: {reason}")
        self.reason = reason


class ReadTimedOut(StoreUnavailable):
    """A read ran past the store's read time limit and was interrupted."""


def is_transient(exc: BaseException) -> bool:
    if not isinstance(exc, sqlite3.Error):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return False
    return (code & 0xFF) in TRANSIENT_CODES


def describe(exc: BaseException) -> str:
    """One line for /healthz and the log: SQLite's message and its error name."""
    name = getattr(exc, "sqlite_errorname", None)
    return f"{exc} ({name})" if name else str(exc)


def fault(kind: str) -> sqlite3.OperationalError:
    code, message = FAULT_KINDS[kind]
    exc = sqlite3.OperationalError(message)
    exc.sqlite_errorcode = code
    exc.sqlite_errorname = f"injected {kind}"
    return exc


@attrs.define
class FaultInjector:
    """Test hook (Store.inject_write_faults): the next `count` write attempts of the writer fail with
    the error of `kind` before touching the database. Used where the real fault (a held lock, a full
    disk) cannot be produced on demand; tests of the real thing exist beside it."""

    count: int = 0
    kind: str = "locked"
    lost_commit_answers: int = 0

    def arm(self, count: int, kind: str) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {', '.join(FAULT_KINDS)}")
        self.count, self.kind = count, kind

    def check(self) -> None:
        """Writer thread, before a write attempt."""
        if self.count > 0:
            self.count -= 1
            raise fault(self.kind)

    def lose_commit_answers(self, count: int) -> None:
        """The next `count` COMMITs that succeed fail afterwards, as if the connection broke before the
        server's answer arrived (the server killed right after committing): the writer cannot tell from
        the error whether they committed."""
        self.lost_commit_answers = count

    def check_commit_answer(self) -> None:
        """Writer thread, right after a COMMIT succeeded."""
        if self.lost_commit_answers > 0:
            self.lost_commit_answers -= 1
            exc = sqlite3.OperationalError("the connection broke before the answer to COMMIT (injected)")
            exc.sqlite_errorcode = SQLITE_IOERR
            exc.sqlite_errorname = "injected lost answer"
            raise exc
