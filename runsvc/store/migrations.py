"""Schema creation and in-place upgrades, tracked by PRAGMA user_version.

A new database gets schema.sql whole, with its version, in one transaction. An older one runs the steps
below in order, each taking the database from version N to N + 1. A step's statements and the new
user_version commit in ONE transaction (the version lives in the file's header, written by the same
commit), so a crash anywhere in an upgrade leaves the file at N or at N + 1, never in between, and the
next start resumes from there. The one step that cannot run inside a transaction (VACUUM, 1 → 2) is
idempotent instead: repeated after a crash, it does the same again.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from importlib import resources

from .errors import SchemaError

SCHEMA_VERSION = 7


def _v1_to_v2(conn: sqlite3.Connection) -> None:
    # Version 1 files were created without incremental auto-vacuum, so retention pruning could delete
    # rows but never give the pages back. The mode can only change on an existing file through VACUUM,
    # which runs outside any transaction (see OUTSIDE_TRANSACTION).
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    conn.execute("VACUUM")


def _v2_to_v3(conn: sqlite3.Connection) -> None:
    # API tokens (SPEC §12). The same statements as in schema.sql.
    conn.execute(
        """
        CREATE TABLE api_tokens (
            id           INTEGER PRIMARY KEY,
            token_hash   BLOB    NOT NULL UNIQUE,
            user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            name         TEXT    NOT NULL,
            role         TEXT    NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
            created_at   TEXT    NOT NULL,
            expires_at   TEXT,
            last_used_at TEXT
        )
        """
    )
    conn.execute("CREATE INDEX api_tokens_expires_at ON api_tokens (expires_at)")
    conn.execute("CREATE INDEX api_tokens_user_id ON api_tokens (user_id)")


def _v3_to_v4(conn: sqlite3.Connection) -> None:
    # Remote agents (SPEC §11): the agents table and the routing/fencing columns of runs. Existing runs
    # get no labels; a run already handed out counts as attempt 1 on the local executor.
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


def _v4_to_v5(conn: sqlite3.Connection) -> None:
    # Claiming by label set (store/runs.py: CLAIM_NEXT): queued runs indexed by their labels.
    conn.execute("CREATE INDEX runs_queued_labels ON runs (labels, id) WHERE status = 'queued'")


# The jobs tables, as in schema.sql (SPEC §15).
_JOBS_TABLES = (
    """
    CREATE TABLE jobs (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        name          TEXT    NOT NULL UNIQUE COLLATE NOCASE,
        description   TEXT    NOT NULL DEFAULT '',
        command       TEXT    NOT NULL,
        env           TEXT    NOT NULL,
        timeout_s     REAL    NOT NULL,
        labels        TEXT    NOT NULL DEFAULT '[]',
        params        TEXT    NOT NULL DEFAULT '[]',
        retries       TEXT,
        concurrency   TEXT,
        schedule      TEXT,
        schedule_from TEXT,
        created_at    TEXT    NOT NULL,
        created_by    TEXT,
        updated_at    TEXT    NOT NULL
    )
    """,
    """
    CREATE TABLE job_fires (
        job_id        INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        scheduled_for TEXT    NOT NULL,
        outcome       TEXT    NOT NULL CHECK (outcome IN ('started', 'skipped_overlap', 'skipped_missed',
                                                          'cancelled_previous')),
        run_id        INTEGER,
        recorded_at   TEXT    NOT NULL,
        PRIMARY KEY (job_id, scheduled_for)
    ) WITHOUT ROWID
    """,
)
# The run columns of jobs, retries, concurrency groups and delayed runs; existing runs are first tries
# submitted through the API, with none of them.
_RUN_COLUMNS_V6 = (
    "job_id INTEGER REFERENCES jobs (id) ON DELETE SET NULL",
    "job_name TEXT",
    "trigger TEXT NOT NULL DEFAULT 'api' CHECK (trigger IN ('api', 'job', 'schedule', 'retry', 'rerun'))",
    "retry_of INTEGER",
    "try_number INTEGER NOT NULL DEFAULT 1",
    "not_before TEXT",
    "scheduled_for TEXT",
    "params TEXT NOT NULL DEFAULT '{}'",
    "retries TEXT",
    "concurrency TEXT",
    "concurrency_key TEXT",
)


def _v5_to_v6(conn: sqlite3.Connection) -> None:
    # Jobs, schedules, retries, concurrency groups, delayed runs (SPEC §15).
    for statement in _JOBS_TABLES:
        conn.execute(statement)
    for column in _RUN_COLUMNS_V6:
        conn.execute(f"ALTER TABLE runs ADD COLUMN {column}")
    conn.execute("CREATE INDEX runs_running_concurrency ON runs (concurrency_key) WHERE status = 'running'")
    conn.execute("CREATE INDEX runs_job_id ON runs (job_id, id)")
    # Claiming by (label set, concurrency key), due runs first (store/runs.py: CLAIM_NEXT).
    conn.execute("DROP INDEX runs_queued_labels")
    conn.execute(
        "CREATE INDEX runs_queued_claim ON runs (labels, ifnull(concurrency_key, ''), "
        "max(created_at, ifnull(not_before, '')), id) WHERE status = 'queued'"
    )
    conn.execute(
        "CREATE INDEX runs_queued_not_before ON runs (not_before) WHERE status = 'queued' AND not_before IS NOT NULL"
    )
    conn.execute("CREATE INDEX runs_job_active ON runs (job_id) WHERE status IN ('queued', 'running')")


# Where schema.sql's version 7 tables begin: they are the file's last statements, none with a ";" inside.
_V7_TABLES_START = "-- Secrets (SPEC §17"


def _v6_to_v7(conn: sqlite3.Connection) -> None:
    # Secrets and webhooks (SPEC §17): the tables as in schema.sql, and the `secrets` mapping of runs
    # and jobs (existing ones use none).
    conn.execute("ALTER TABLE jobs ADD COLUMN secrets TEXT NOT NULL DEFAULT '{}'")
    conn.execute("ALTER TABLE runs ADD COLUMN secrets TEXT NOT NULL DEFAULT '{}'")
    schema = schema_sql()
    tables = re.sub(r"--[^\n]*", "", schema[schema.index(_V7_TABLES_START):])
    for statement in tables.split(";"):
        if statement.strip():
            conn.execute(statement)


# MIGRATIONS[n] upgrades a version-n database to version n + 1. A step only runs statements: migrate()
# wraps it in the transaction that also records the new version.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _v1_to_v2,
    2: _v2_to_v3,
    3: _v3_to_v4,
    4: _v4_to_v5,
    5: _v5_to_v6,
    6: _v6_to_v7,
}
# Steps that must run outside a transaction (VACUUM) and are idempotent, so a crash before their
# version is recorded only means they run again.
OUTSIDE_TRANSACTION = frozenset({1})


def schema_sql() -> str:
    return resources.files("runsvc.store").joinpath("schema.sql").read_text(encoding="utf-8")


def _user_version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # SQLite rolls back by itself when it cannot (e.g. after an I/O error)


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
        # auto_vacuum takes effect only outside a transaction, before the first table. Then one script in
        # one transaction: tables without a version would be refused as foreign above.
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        try:
            conn.executescript(f"BEGIN IMMEDIATE;\n{schema_sql()}\nPRAGMA user_version = {SCHEMA_VERSION};\nCOMMIT;")
        except BaseException:
            _rollback(conn)
            raise
        return found
    for version in range(found, SCHEMA_VERSION):
        step = MIGRATIONS[version]
        if version in OUTSIDE_TRANSACTION:
            step(conn)
        conn.execute("BEGIN IMMEDIATE")
        try:
            if version not in OUTSIDE_TRANSACTION:
                step(conn)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
    return found
