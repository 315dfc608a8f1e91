"""The sessions table: only the sha256 of a session token is stored."""

from __future__ import annotations

from .dialect import Connection, Row
from .users import USER_COLUMNS

_USER_COLUMNS_OF_U = ", ".join(f"u.{name.strip()}" for name in USER_COLUMNS.split(","))


def insert_session(
    conn: Connection, token_hash: bytes, user_id: int, created_at: str, expires_at: str
) -> None:
    conn.execute(
        "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
        (token_hash, user_id, created_at, expires_at),
    )


def get_session_user(conn: Connection, token_hash: bytes, now: str) -> Row | None:
    """The user of a live session: not expired, user not disabled. Columns: the user's, expires_at."""
    return conn.execute(
        f"SELECT {_USER_COLUMNS_OF_U}, s.expires_at FROM sessions AS s JOIN users AS u ON u.id = s.user_id "
        f"WHERE s.token_hash = ? AND s.expires_at > ? AND u.disabled = 0",
        (token_hash, now),
    ).fetchone()


def delete_session(conn: Connection, token_hash: bytes) -> bool:
    return conn.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,)).rowcount == 1


def count_user_sessions(conn: Connection, user_id: int) -> int:
    return conn.execute("SELECT count(*) FROM sessions WHERE user_id = ?", (user_id,)).fetchone()[0]
