"""The api_tokens table: maintenance deletes expired tokens only; an old database gains the table."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import trio

from runsvc.maintenance import maintenance_pass
from runsvc.store import SCHEMA_VERSION, open_store
from runsvc.store.maintenance import ExpiryCounts
from tests.conftest import make_settings
from tests.maintenance_rows import EPOCH, add_user, ts


def add_api_token(conn: sqlite3.Connection, user_id: int, expires_at: str | None) -> int:
    number = conn.execute("SELECT count(*) FROM api_tokens").fetchone()[0]
    return conn.execute(
        "INSERT INTO api_tokens (token_hash, user_id, name, role, created_at, expires_at) "
        "VALUES (?, ?, 'ci', 'viewer', ?, ?) RETURNING id",
        (f"hash-{number}".encode(), user_id, ts(days=-10), expires_at),
    ).fetchone()[0]


async def test_maintenance_deletes_expired_api_tokens_only(store, tmp_path):
    """Expired tokens go; live and never-expiring ones stay; the pass counts what it deleted."""

    def populate(conn):
        user = add_user(conn)
        add_api_token(conn, user, ts(-1))  # 1: expired
        add_api_token(conn, user, ts(0))  # 2: expires exactly now
        add_api_token(conn, user, ts(1))  # 3: live
        add_api_token(conn, user, None)  # 4: never expires

    with trio.fail_after(10):
        await store.write(populate)
        counts = await maintenance_pass(store, make_settings(tmp_path), now=lambda: EPOCH)
        left = await store.read(lambda conn: [r[0] for r in conn.execute("SELECT id FROM api_tokens ORDER BY id")])
    assert counts == ExpiryCounts(api_tokens=2)
    assert left == [3, 4]


V2_SCHEMA = Path(__file__).with_name("schema_v2.sql")


async def test_version_2_database_gains_api_tokens(tmp_path):
    """A version-2 file (no api_tokens) is upgraded in place to the current version with the table."""
    path = tmp_path / "v2.db"
    conn = sqlite3.connect(path)
    conn.executescript(V2_SCHEMA.read_text())
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    with trio.fail_after(20):
        async with open_store(path) as store:
            version = await store.read(lambda conn: conn.execute("PRAGMA user_version").fetchone()[0])
            indexes = await store.read(
                lambda conn: sorted(r[0] for r in conn.execute(
                    "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'api_tokens'"
                ))
            )
    assert version == SCHEMA_VERSION
    assert indexes == ["api_tokens_expires_at", "api_tokens_user_id", "sqlite_autoindex_api_tokens_1"]
