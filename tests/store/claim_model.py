"""What the claim tests share: a claim database, runs queued and ended by hand, and a model of SPEC §11
and §15's claim rules with a random queue to check the claim statements against."""

from __future__ import annotations

import datetime as dt
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from runsvc.store import postgres
from runsvc.store import runs as run_sql
from runsvc.store.connections import StatementCounter
from runsvc.store.connections import connect as store_connect
from runsvc.store.migrations import migrate
from runsvc.store.migrations_pg import migrate as migrate_pg
from runsvc.timeutil import format_ts, parse_ts
from runsvc.webhooks.outbox import no_outbox

T0 = "2026-06-01T12:00:00.000000Z"
LOCAL = [("local", ())]


def at(seconds: float) -> str:
    """The timestamp `seconds` after T0."""
    return format_ts(parse_ts(T0) + dt.timedelta(seconds=seconds))


def connect(path: Path) -> sqlite3.Connection:
    conn = store_connect(path, busy_timeout_ms=10_000)
    conn.execute("PRAGMA journal_mode = WAL")  # as the store opens it (connections.py)
    return conn


@pytest.fixture(name="conn")
def conn_fixture(tmp_path: Path, backend: str):
    """A migrated claim database of either backend (import this into a test module to use `conn`)."""
    conn = connect_backend(tmp_path / "claim.db", backend)
    yield conn
    conn.close()


def connect_backend(path: Path, database_url: str) -> Any:
    """A migrated database's connection: SQLite at `path`, or the PostgreSQL database at `database_url`."""
    if not database_url:
        conn = connect(path)
        migrate(conn)
        return conn
    raw = postgres.connect(database_url)
    migrate_pg(raw)
    return postgres.PgConnection(raw, StatementCounter(trio_thread=-1))


def queue(conn: sqlite3.Connection, *, created: float = 0, labels: tuple[str, ...] = (),
          key: str | None = None, limit: int = 1, not_before: float | None = None) -> int:
    run, _ = run_sql.create_run(
        conn, command=["x"], env={}, timeout_s=60, name=None, created_by=None, ts=at(created), labels=labels,
        concurrency=None if key is None else {"key": key, "limit": limit},
        not_before=None if not_before is None else at(not_before),
    )
    return run.id


def claim(conn: sqlite3.Connection, now: float, offers: Any = LOCAL) -> int | None:
    claimed = run_sql.claim_next(conn, at(now), offers)
    return None if claimed is None else claimed[0].id


def end(conn: sqlite3.Connection, run_id: int) -> None:
    run_sql.finish(
        conn, run_id, from_status="running", status="succeeded", exit_code=0, ts=at(999), outbox=no_outbox,
        appending=1,
    )


def expected_claim(queued: dict[int, dict[str, Any]], running: dict[str, int], now: float,
                   offers: list[tuple[str, tuple[str, ...]]]) -> tuple[int, str] | None:
    """SPEC §11 and §15 written out: of the queued runs that are due, whose group has room and that an
    offered executor has all the labels of, the one queued longest (created, or its not_before when
    later; then lowest id); the first such executor."""
    def since(run_id: int) -> tuple[float, int]:
        run = queued[run_id]
        return max(run["created"], run["not_before"] if run["not_before"] is not None else -1e9), run_id

    for run_id in sorted(queued, key=since):
        run = queued[run_id]
        if run["not_before"] is not None and run["not_before"] > now:
            continue
        if run["key"] is not None and running.get(run["key"], 0) >= run["limit"]:
            continue
        for name, labels in offers:
            if run["labels"] <= set(labels):
                return run_id, name
    return None



class RandomQueue:
    """A random stream of runs queued (labels, groups with one limit each, delays) and ended, kept both in
    the database and in a model that `expected_claim` reads; a fixed seed."""

    LIMITS = {"a": 1, "b": 2, "c": 3}

    def __init__(self, conn: sqlite3.Connection, seed: int):
        self.conn = conn
        self.rng = random.Random(seed)
        self.queued: dict[int, dict[str, Any]] = {}
        self.running: dict[int, str | None] = {}  # run id -> its group's key
        self.now = 0.0

    def step(self, queue_below: float, end_below: float) -> bool:
        """Move time on, then queue a run (a roll below `queue_below`) or end a running one (below
        `end_below`); False when it did neither, so the caller claims."""
        rng = self.rng
        self.now += rng.random()
        roll = rng.random()
        if roll < queue_below:
            labels = tuple(rng.sample(["x", "y"], rng.randint(0, 2)))
            key = rng.choice([None, "a", "b", "c"])
            not_before = rng.choice([None, None, self.now + rng.uniform(-5, 8)])
            limit = self.LIMITS.get(key or "", 1)
            run_id = queue(self.conn, created=self.now, labels=labels, key=key, limit=limit, not_before=not_before)
            self.queued[run_id] = {"created": self.now, "labels": set(labels), "key": key, "limit": limit,
                                   "not_before": not_before}
            return True
        if roll < end_below and self.running:
            run_id = rng.choice(sorted(self.running))
            end(self.conn, run_id)
            del self.running[run_id]
            return True
        return False

    def expected(self, offers: list[tuple[str, tuple[str, ...]]]) -> tuple[int, str] | None:
        """The claim the rules give now for these offers."""
        counts: dict[str, int] = {}
        for key in self.running.values():
            if key is not None:
                counts[key] = counts.get(key, 0) + 1
        return expected_claim(self.queued, counts, self.now, offers)

    def started(self, run_id: int) -> None:
        self.running[run_id] = self.queued.pop(run_id)["key"]
