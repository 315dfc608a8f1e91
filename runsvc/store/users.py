"""The users table. Plain functions of a connection; the caller picks read() or write().

Usernames are unique without regard to case (the column is COLLATE NOCASE); the case a user was created
with is the case shown.
"""

from __future__ import annotations

from typing import Literal

from .dialect import Connection, Row

# Everything but the password hash: what the API shows of a user.
USER_COLUMNS = "id, username, role, disabled, created_at"


def get_user(conn: Connection, user_id: int) -> Row | None:
    return conn.execute(f"SELECT {USER_COLUMNS} FROM users WHERE id = ?", (user_id,)).fetchone()


def get_user_with_hash(conn: Connection, username: str) -> Row | None:
    """The user named `username` (any case), with its password_hash; for logins."""
    return conn.execute(
        f"SELECT {USER_COLUMNS}, password_hash FROM users WHERE username = ?", (username,)
    ).fetchone()


def list_users(conn: Connection) -> list[Row]:
    return conn.execute(f"SELECT {USER_COLUMNS} FROM users ORDER BY id").fetchall()


def count_users(conn: Connection) -> int:
    return conn.execute("SELECT count(*) FROM users").fetchone()[0]


def insert_user(
    conn: Connection, username: str, password_hash: str, role: str, created_at: str
) -> Row | None:
    """Create a user; None if the username (in any case) is taken."""
    return conn.execute(
        f"INSERT INTO users (username, password_hash, role, created_at) VALUES (?, ?, ?, ?) "
        f"ON CONFLICT (username) DO NOTHING RETURNING {USER_COLUMNS}",
        (username, password_hash, role, created_at),
    ).fetchone()


def insert_first_user(
    conn: Connection, username: str, password_hash: str, role: str, created_at: str
) -> Row | None:
    """Create a user only if there are no users at all; None if there are."""
    return conn.execute(
        f"INSERT INTO users (username, password_hash, role, created_at) "
        f"SELECT ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM users) RETURNING {USER_COLUMNS}",
        (username, password_hash, role, created_at),
    ).fetchone()


UpdateOutcome = Literal["ok", "not_found", "last_admin"]


def update_user(
    conn: Connection,
    user_id: int,
    role: str | None,
    password_hash: str | None,
    disabled: bool | None,
) -> tuple[UpdateOutcome, Row | None]:
    """Change what is not None. Refuses to demote or disable the last enabled admin.

    A new password or disabling deletes the user's sessions in the same transaction.
    """
    row = get_user(conn, user_id)
    if row is None:
        return "not_found", None
    demoting = role is not None and role != "admin"
    if row["role"] == "admin" and not row["disabled"] and (demoting or disabled is True):
        others = conn.execute(
            "SELECT count(*) FROM users WHERE role = 'admin' AND disabled = 0 AND id != ?", (user_id,)
        ).fetchone()[0]
        if others == 0:
            return "last_admin", row
    row = conn.execute(
        f"UPDATE users SET role = coalesce(?, role), password_hash = coalesce(?, password_hash), "
        f"disabled = coalesce(?, disabled) WHERE id = ? RETURNING {USER_COLUMNS}",
        (role, password_hash, None if disabled is None else int(disabled), user_id),
    ).fetchone()
    if password_hash is not None or disabled is True:
        conn.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))
    return "ok", row


def replace_password_hash(conn: Connection, user_id: int, old_hash: str, new_hash: str) -> bool:
    """Swap in a rehash of the same password, unless the password changed meanwhile. Sessions stay."""
    cursor = conn.execute(
        "UPDATE users SET password_hash = ? WHERE id = ? AND password_hash = ?",
        (new_hash, user_id, old_hash),
    )
    return cursor.rowcount == 1
