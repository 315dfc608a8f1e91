"""The api_tokens table: only the sha256 of a token's secret is stored.

Plain functions of a connection; the caller picks read() or write(). A token row answered to the API
never carries the hash.
"""

from __future__ import annotations

from .dialect import Connection, Row
from .users import USER_COLUMNS

# What the API shows of a token, with its owner's username.
TOKEN_COLUMNS = "t.id, t.name, u.username, t.role, t.created_at, t.expires_at, t.last_used_at"
_USER_COLUMNS_OF_U = ", ".join(f"u.{name.strip()}" for name in USER_COLUMNS.split(","))
_FROM = "FROM api_tokens AS t JOIN users AS u ON u.id = t.user_id"

# The hot query of every bearer request (its plan is pinned by tests/store/test_query_plans.py).
SELECT_LIVE_TOKEN = (
    f"SELECT {_USER_COLUMNS_OF_U}, t.id AS token_id, t.name AS token_name, t.role AS token_role, "
    f"t.created_at AS token_created_at, t.expires_at AS token_expires_at, "
    f"t.last_used_at AS token_last_used_at {_FROM} "
    "WHERE t.token_hash = :hash AND (t.expires_at IS NULL OR t.expires_at > :now) AND u.disabled = 0"
)
DELETE_EXPIRED_API_TOKENS = (
    "DELETE FROM api_tokens WHERE id IN "
    "(SELECT id FROM api_tokens WHERE expires_at <= :now LIMIT :limit)"
)


def insert_token(
    conn: Connection,
    token_hash: bytes,
    user_id: int,
    name: str,
    role: str,
    created_at: str,
    expires_at: str | None,
) -> Row:
    token_id = conn.execute(
        "INSERT INTO api_tokens (token_hash, user_id, name, role, created_at, expires_at) "
        "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        (token_hash, user_id, name, role, created_at, expires_at),
    ).fetchone()[0]
    return conn.execute(f"SELECT {TOKEN_COLUMNS} {_FROM} WHERE t.id = ?", (token_id,)).fetchone()


def get_live_token(conn: Connection, token_hash: bytes, now: str) -> Row | None:
    """The token and its user, if the token is not expired and the user not disabled.
    Columns: the user's, then token_id, token_name, token_role, token_created_at, token_expires_at,
    token_last_used_at."""
    return conn.execute(SELECT_LIVE_TOKEN, {"hash": token_hash, "now": now}).fetchone()


def list_tokens(conn: Connection, user_id: int | None) -> list[Row]:
    """The tokens of `user_id`, or of everybody when None; oldest first."""
    if user_id is None:
        return conn.execute(f"SELECT {TOKEN_COLUMNS} {_FROM} ORDER BY t.id").fetchall()
    return conn.execute(
        f"SELECT {TOKEN_COLUMNS} {_FROM} WHERE t.user_id = ? ORDER BY t.id", (user_id,)
    ).fetchall()


def delete_token(conn: Connection, token_id: int, user_id: int | None) -> int | None:
    """Delete the token `token_id` (only if it belongs to `user_id`, unless that is None); return its
    owner's user id, or None if no such token was deleted."""
    if user_id is None:
        row = conn.execute("DELETE FROM api_tokens WHERE id = ? RETURNING user_id", (token_id,)).fetchone()
    else:
        row = conn.execute(
            "DELETE FROM api_tokens WHERE id = ? AND user_id = ? RETURNING user_id", (token_id, user_id)
        ).fetchone()
    return None if row is None else row[0]


def touch_token(conn: Connection, token_id: int, now: str, not_since: str) -> bool:
    """Set last_used_at = now unless it was already set at or after `not_since`."""
    return conn.execute(
        "UPDATE api_tokens SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)",
        (now, token_id, not_since),
    ).rowcount == 1


def delete_expired_tokens(conn: Connection, now: str, limit: int) -> int:
    return conn.execute(DELETE_EXPIRED_API_TOKENS, {"now": now, "limit": limit}).rowcount
