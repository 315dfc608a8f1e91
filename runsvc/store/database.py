"""An open database of either dialect, as the store runs reads and writes on it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import attrs

from .connections import StatementCounter
from .writer import WriterConnection


class Reader(Protocol):
    """One read slot of either dialect (connections.SqliteReader, postgres.PgReader)."""

    errors: tuple[type[BaseException], ...]

    def run(self, fn: Callable[..., Any], args: tuple[Any, ...], timeout_s: float) -> Any: ...
    def timed_out(self, exc: BaseException) -> bool: ...
    def is_transient(self, exc: BaseException) -> bool: ...
    def describe(self, exc: BaseException) -> str: ...
    def interrupt(self) -> None: ...
    def close(self) -> None: ...


@attrs.define
class Database:
    """An open database: its writer connection, its read slots and their statement counters."""

    dialect: str
    writer: WriterConnection
    readers: list[Reader]
    counters: list[StatementCounter]
    path: Path | None = None  # SQLite's file
    url: str | None = None  # PostgreSQL's URL (with its password: never logged)
    close_rest: Callable[[], None] = lambda: None  # worker thread: what else to close (a pool)
    # A new connection of its own, outside the store's (tools and tests that must see what is committed).
    connect: Callable[[], Any] = lambda: None
