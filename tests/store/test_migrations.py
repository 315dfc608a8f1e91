"""Upgrades: every older schema version ends up exactly like a fresh database, and a crash at any point
of an upgrade (or of creating a new file) leaves a file the next start can still open and upgrade."""

from __future__ import annotations

import re
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from runsvc.store import SCHEMA_VERSION
from runsvc.store.connections import open_connections
from runsvc.store.migrations import migrate

HERE = Path(__file__).parent
# The schema each older version was created with, frozen: schema_v<N>.sql.
OLD_VERSIONS = list(range(1, SCHEMA_VERSION))


class SimulatedCrash(Exception):
    """The process died before running the statement that raised this."""


class CrashingConnection(sqlite3.Connection):
    """A connection that 'crashes' right before its `crash_at`-th statement (counting from 0): the
    statement is not run, and the caller closes the connection without committing, as a killed process
    would leave the file."""

    crash_at = -1
    statements = 0

    def _step(self) -> None:
        if self.statements == self.crash_at:
            raise SimulatedCrash(f"crash before statement {self.crash_at}")
        self.statements += 1

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        self._step()
        return super().execute(sql, parameters)

    def executescript(self, sql_script: str, /) -> sqlite3.Cursor:
        self._step()
        return super().executescript(sql_script)


def normalized(sql: str | None) -> str | None:
    """CREATE text without comments or layout: ALTER TABLE ADD COLUMN and schema.sql then read alike."""
    if sql is None:
        return None
    sql = re.sub(r"--[^\n]*", "", sql)
    sql = re.sub(r"\s+", " ", sql)
    return re.sub(r"\s*([(),])\s*", r"\1", sql).strip()


def shape(path: Path) -> dict[str, Any]:
    conn = sqlite3.connect(path)
    try:
        return {
            "objects": sorted(
                (kind, name, table, normalized(sql))
                for kind, name, table, sql in conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_schema")
            ),
            "user_version": conn.execute("PRAGMA user_version").fetchone()[0],
            "auto_vacuum": conn.execute("PRAGMA auto_vacuum").fetchone()[0],
            "integrity": conn.execute("PRAGMA integrity_check").fetchone()[0],
        }
    finally:
        conn.close()


def open_and_close(path: Path) -> None:
    """What `serve` does to the file at start: WAL mode and migrations on the writer."""
    conns, _ = open_connections(path, 0, 5000, threading.get_ident())
    for conn in conns:
        conn.close()


def old_database(path: Path, version: int) -> None:
    """A file as runsvc `version` left it, with one queued and one finished run."""
    conn = sqlite3.connect(path)
    conn.executescript((HERE / f"schema_v{version}.sql").read_text())
    conn.execute(f"PRAGMA user_version = {version}")
    for status in ("queued", "succeeded"):
        conn.execute(
            "INSERT INTO runs (command, env, timeout_s, status, created_at) "
            f"VALUES ('[\"true\"]', '{{}}', 60, '{status}', '2026-01-01T00:00:00.000000Z')"
        )
    conn.commit()
    conn.close()


def run_statuses(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [row[0] for row in conn.execute("SELECT status FROM runs ORDER BY id")]
    finally:
        conn.close()


@pytest.fixture(name="fresh", scope="module")
def _fresh(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("fresh") / "fresh.db"
    open_and_close(path)
    return shape(path)


def test_frozen_schema_files_cover_every_older_version():
    """Each version this runsvc upgrades from has its frozen schema file, so the tests below see it."""
    assert [v for v in OLD_VERSIONS if not (HERE / f"schema_v{v}.sql").exists()] == []


@pytest.mark.parametrize("version", OLD_VERSIONS)
def test_upgraded_schema_equals_a_fresh_one(tmp_path, fresh, version):
    """An upgraded file has the same tables, columns, indexes, version and auto-vacuum mode as a new
    one, and keeps its rows."""
    path = tmp_path / f"v{version}.db"
    old_database(path, version)
    open_and_close(path)
    assert shape(path) == fresh
    assert run_statuses(path) == ["queued", "succeeded"]


@pytest.mark.parametrize("version", [0, *OLD_VERSIONS])
def test_a_crash_anywhere_in_an_upgrade_resumes_on_the_next_start(tmp_path, fresh, version):
    """Crashing before any one statement of creating (version 0) or upgrading a file leaves it in a
    state the next start upgrades to exactly the fresh schema, keeping its rows."""
    crash_at = 0
    while True:
        path = tmp_path / f"v{version}-crash{crash_at}.db"
        if version:
            old_database(path, version)
        conn = sqlite3.connect(path, isolation_level=None, factory=CrashingConnection)
        assert isinstance(conn, CrashingConnection)
        conn.crash_at = crash_at
        try:
            migrate(conn)
        except SimulatedCrash:
            crashed = True
        else:
            crashed = False
        finally:
            conn.close()  # uncommitted work is rolled back, as after a kill
        open_and_close(path)
        assert shape(path) == fresh, f"crash before statement {crash_at}"
        if version:
            assert run_statuses(path) == ["queued", "succeeded"]
        if not crashed:
            break  # every statement of the upgrade has been a crash point
        crash_at += 1
    assert crash_at > 1
