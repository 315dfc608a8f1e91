"""Schema creation and in-place upgrades, tracked by PRAGMA user_version.

A new database gets schema.sql whole. An older one runs the steps below in order, each step taking the
database from version N to N + 1 and recording N + 1 as it finishes, so an interrupted upgrade resumes
where it stopped.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from importlib import resources

from .errors import SchemaError

SCHEMA_VERSION = 4


def _v1_to_v2(conn: sqlite3.Connection) -> None:
    # Version 1 files were created without incremental auto-vacuum, so retention pruning could delete
    # rows but never give the pages back. The mode can only change on an existing file through VACUUM.
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    conn.execute("VACUUM")


def _v2_to_v3(conn: sqlite3.Connection) -> None:
    # API tokens (SPEC §12). The same statements as in schema.sql.
    conn.executescript(
        """
        BEGIN;
        CREATE TABLE api_tokens (
            id           INTEGER PRIMARY KEY,
            token_hash   BLOB    NOT NULL UNIQUE,
            user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            name         TEXT    NOT NULL,
            role         TEXT    NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
            created_at   TEXT    NOT NULL,
            expires_at   TEXT,
            last_used_at TEXT
        );
        CREATE INDEX api_tokens_expires_at ON api_tokens (expires_at);
        CREATE INDEX api_tokens_user_id ON api_tokens (user_id);
        PRAGMA user_version = 3;
        COMMIT;
        """
    )


def _v3_to_v4(conn: sqlite3.Connection) -> None:
    # Remote agents (SPEC §11): the agents table and the routing/fencing columns of runs. Existing runs
    # get no labels; a run already handed out counts as attempt 1 on the local executor.
    conn.execute("BEGIN")
    conn.execute("ALTER TABLE runs ADD COLUMN labels TEXT NOT NULL DEFAULT '[]'")
    conn.execute("ALTER TABLE runs ADD COLUMN executor TEXT")
    conn.execute("ALTER TABLE runs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0")
    conn.execute("ALTER TABLE runs ADD COLUMN agent_chunk INTEGER NOT NULL DEFAULT 0")
    conn.execute("UPDATE runs SET executor = 'local', attempt = 1 WHERE status != 'queued'")
    conn.execute(
        "CREATE TABLE agents (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE, "
        "labels TEXT NOT NULL DEFAULT '[]', secret_hash BLOB NOT NULL UNIQUE, created_at TEXT NOT NULL, "
        "last_seen_at TEXT)"
    )
    conn.execute("COMMIT")


# MIGRATIONS[n] upgrades a version-n database to version n + 1.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4}


def schema_sql() -> str:
    return resources.files("runsvc.store").joinpath("schema.sql").read_text(encoding="utf-8")


def _user_version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the database behind `conn` (autocommit mode) to SCHEMA_VERSION; return the version found."""
    found = _user_version(conn)
    if found > SCHEMA_VERSION:
        raise SchemaError(
            f"database schema version {found} is newer than this runsvc supports "
            f"({SCHEMA_VERSION}); upgrade runsvc or use another data dir"
        )
    if found == 0:
        tables = conn.execute("SELECT count(*) FROM sqlite_schema WHERE type = 'table'").fetchone()[0]
        if tables:
            raise SchemaError("database has tables but no runsvc schema version; not a runsvc database")
        conn.executescript(schema_sql())
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return found
    for version in range(found, SCHEMA_VERSION):
        MIGRATIONS[version](conn)
        conn.execute(f"PRAGMA user_version = {version + 1}")
    return found
