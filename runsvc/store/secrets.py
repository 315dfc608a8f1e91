"""SQL for secrets (SPEC §17): names and their sealed values. A value is only ever stored sealed
(crypto.seal: nonce + AES-GCM ciphertext and tag); what lists and answers read never includes it.

Plain functions of a connection; the caller picks read() or write(). Portable SQL (RETURNING, coalesce).
"""

from __future__ import annotations

from collections.abc import Iterable

from ..model import Secret, UnknownSecret
from .dialect import Connection, Row

SECRET_COLUMNS = "name, created_at, updated_at, updated_by"


def _secret(row: Row | tuple) -> Secret:
    name, created_at, updated_at, updated_by = row
    return Secret(name=name, created_at=created_at, updated_at=updated_at, updated_by=updated_by)


def insert_secret(conn: Connection, name: str, sealed: bytes, *, by: str | None, ts: str) -> Secret | None:
    """A new secret; None if one of that name exists already (nothing changes then)."""
    row = conn.execute(
        "INSERT INTO secrets (name, value, created_at, updated_at, updated_by) VALUES (?, ?, ?, ?, ?) "
        f"ON CONFLICT (name) DO NOTHING RETURNING {SECRET_COLUMNS}",
        (name, sealed, ts, ts, by),
    ).fetchone()
    return None if row is None else _secret(row)


def replace_secret(conn: Connection, name: str, sealed: bytes, *, by: str | None, ts: str) -> Secret | None:
    """The secret with its new value; None if there is no such secret (nothing is created)."""
    row = conn.execute(
        f"UPDATE secrets SET value = ?, updated_at = ?, updated_by = ? WHERE name = ? RETURNING {SECRET_COLUMNS}",
        (sealed, ts, by, name),
    ).fetchone()
    return None if row is None else _secret(row)


def delete_secret(conn: Connection, name: str) -> bool:
    return conn.execute("DELETE FROM secrets WHERE name = ?", (name,)).rowcount == 1


def list_secrets(conn: Connection) -> list[Secret]:
    """Every secret, by name (byte order: names are ASCII and case-sensitive)."""
    return [_secret(row) for row in conn.execute(f"SELECT {SECRET_COLUMNS} FROM secrets ORDER BY name")]


def sealed_values(conn: Connection, names: Iterable[str]) -> dict[str, bytes]:
    """The sealed values of those of `names` that exist."""
    wanted = sorted(set(names))
    if not wanted:
        return {}
    rows = conn.execute(
        f"SELECT name, value FROM secrets WHERE name IN ({', '.join('?' * len(wanted))})", wanted
    ).fetchall()
    return {name: bytes(value) for name, value in rows}


def check_secrets_exist(conn: Connection, names: Iterable[str]) -> None:
    """Raise UnknownSecret naming the first (by name) of `names` that is not a secret."""
    wanted = sorted(set(names))
    if not wanted:
        return
    found = {
        row[0] for row in conn.execute(
            f"SELECT name FROM secrets WHERE name IN ({', '.join('?' * len(wanted))})", wanted
        )
    }
    for name in wanted:
        if name not in found:
            raise UnknownSecret(f"secrets: no secret named {name!r}")


def count_sealed(conn: Connection) -> int:
    """Rows holding a value sealed under the secret key: secrets and webhooks' signing secrets. A server
    that finds some but not its key file must not make a new key (they would never open again)."""
    return conn.execute(
        "SELECT (SELECT count(*) FROM secrets) + (SELECT count(*) FROM webhooks)"
    ).fetchone()[0]
