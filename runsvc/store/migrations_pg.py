"""PostgreSQL schema creation and in-place upgrades, tracked in the table schema_version.

The same idea as SQLite's migrations.py, with the same version numbers: a new database gets
schema_pg.sql whole, with its version, in one transaction; an older one runs the steps below in order,
each with the new version in ONE transaction (PostgreSQL's DDL is transactional), so a crash leaves it at
N or N + 1. PostgreSQL support began at version 7, so there is no step yet. A database newer than this
runsvc is refused. Several servers starting at once on one database (replicas) take a session advisory
lock, so exactly one of them creates or upgrades it and the others then find it done.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import Any

import psycopg

from .errors import SchemaError
from .migrations import SCHEMA_VERSION

FIRST_VERSION = 7  # the first schema version that exists on PostgreSQL
MIGRATION_LOCK = 0x72756E737663  # "runsvc": the advisory lock key held while migrating

# MIGRATIONS[n] upgrades a version-n database to version n + 1 (statements only; migrate() wraps it in
# the transaction that also records the new version).
MIGRATIONS: dict[int, Callable[[psycopg.Connection[Any]], None]] = {}


def schema_sql() -> str:
    return resources.files("runsvc.store").joinpath("schema_pg.sql").read_text(encoding="utf-8")


def migrate(raw: psycopg.Connection[Any]) -> int:
    """Bring the database behind `raw` (autocommit mode) to SCHEMA_VERSION; return the version found."""
    raw.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
    try:
        return _migrate_locked(raw)
    finally:
        raw.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))


def _migrate_locked(raw: psycopg.Connection[Any]) -> int:
    if _scalar(raw, "SELECT to_regclass('schema_version')") is None:
        tables = _scalar(raw, "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()")
        if tables:
            raise SchemaError("database has tables but no runsvc schema version; not a runsvc database")
        with raw.transaction():
            raw.execute(schema_sql().encode())  # several statements: sent as one simple query
            raw.execute("INSERT INTO schema_version (version) VALUES (%s)", (SCHEMA_VERSION,))
        return 0
    found = _scalar(raw, "SELECT version FROM schema_version")
    if found > SCHEMA_VERSION:
        raise SchemaError(
            f"database schema version {found} is newer than this runsvc supports "
            f"({SCHEMA_VERSION}); upgrade runsvc or use another database"
        )
    for version in range(found, SCHEMA_VERSION):
        with raw.transaction():
            MIGRATIONS[version](raw)
            raw.execute("UPDATE schema_version SET version = %s", (version + 1,))
    return found


def _scalar(raw: psycopg.Connection[Any], sql: str) -> Any:
    row = raw.execute(sql.encode()).fetchone()
    return None if row is None else row[0]
