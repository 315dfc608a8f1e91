"""The login_throttle table: one row per (normalized username, client address) with recent failures.

The rules (window, lockout lengths) live in runsvc/accounts/throttle.py; this module only reads and writes rows,
and runs a rule's read-modify-write inside the writer's transaction so concurrent failures cannot be lost.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .dialect import Connection

_COLUMNS = "failures, first_failed_at, last_failed_at, locked_until, lockout_s"
_UPSERT = ", ".join(f"{column} = excluded.{column}" for column in _COLUMNS.split(", "))


def get_throttle(conn: Connection, username: str, client: str) -> dict[str, Any] | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM login_throttle WHERE username = ? AND client = ?", (username, client)
    ).fetchone()
    return None if row is None else dict(row)


def record_failure(
    conn: Connection,
    username: str,
    client: str,
    advance: Callable[[dict[str, Any] | None], Mapping[str, Any]],
) -> Mapping[str, Any]:
    """Replace the row with `advance(current row or None)`, a mapping of the row's columns."""
    new = advance(get_throttle(conn, username, client))
    conn.execute(
        f"INSERT INTO login_throttle (username, client, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
        f"ON CONFLICT (username, client) DO UPDATE SET {_UPSERT}",
        (username, client, new["failures"], new["first_failed_at"], new["last_failed_at"],
         new["locked_until"], new["lockout_s"]),
    )
    return new


def clear_throttle(conn: Connection, username: str, client: str) -> None:
    conn.execute("DELETE FROM login_throttle WHERE username = ? AND client = ?", (username, client))
