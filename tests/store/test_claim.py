"""The claim statement against SPEC §11: a run goes only to an executor that has all its labels, the
oldest such run first, to the first such executor in the order offered."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest

from runsvc.store import runs as run_sql
from tests.store.claim_model import connect_backend

Offers = list[tuple[str, tuple[str, ...]]]


@pytest.fixture(name="conn")
def _conn(tmp_path: Path, backend: str):
    conn = connect_backend(tmp_path / "claim.db", backend)
    yield conn
    conn.close()


def queue(conn: sqlite3.Connection, labels: Sequence[str]) -> int:
    run, _ = run_sql.create_run(
        conn, command=["x"], env={}, timeout_s=60, name=None, created_by=None, ts="t", labels=labels
    )
    return run.id


def claim(conn: sqlite3.Connection, offers: Offers) -> tuple[int, str] | None:
    claimed = run_sql.claim_next(conn, "t2", offers)
    return None if claimed is None else (claimed[0].id, claimed[0].executor)


def expected_claim(queued: dict[int, set[str]], offers: Offers) -> tuple[int, str] | None:
    """SPEC §11 written out: the oldest queued run some offered executor has all the labels of, and the
    first such executor."""
    for run_id in sorted(queued):
        for name, labels in offers:
            if queued[run_id] <= set(labels):
                return run_id, name
    return None


def test_oldest_run_any_executor_can_take_goes_to_the_first_that_can(conn):
    """Across label sets, runs are claimed oldest first; each goes to the first executor offered that
    has all its labels (label order never matters); a run nobody can take stays queued."""
    gpu = queue(conn, ["gpu"])
    needs_b = queue(conn, ["b"])
    bare = queue(conn, [])
    needs_a = queue(conn, ["a"])
    needs_both = queue(conn, ["b", "a"])
    offers: Offers = [("x", ("a",)), ("y", ("a", "b"))]
    claims = [claim(conn, offers) for _ in range(5)]
    assert claims == [(needs_b, "y"), (bare, "x"), (needs_a, "x"), (needs_both, "y"), None]
    assert conn.execute("SELECT status FROM runs WHERE id = ?", (gpu,)).fetchone()[0] == "queued"
    assert claim(conn, [("g", ("gpu",))]) == (gpu, "g")


def test_claims_match_the_rule_for_random_queues_and_offers(conn):
    """Random queues and offers (a fixed seed): every claim is the one SPEC §11 names."""
    rng = random.Random(20)
    universe = ["a", "b", "c", "d"]
    queued: dict[int, set[str]] = {}
    outcomes: list[tuple[int, str] | None] = []
    for _ in range(300):
        if rng.random() < 0.6:
            labels = rng.sample(universe, rng.randint(0, 3))
            queued[queue(conn, labels)] = set(labels)
            continue
        offers: Offers = [
            (f"e{i}", tuple(rng.sample(universe, rng.randint(0, 3)))) for i in range(rng.randint(0, 3))
        ]
        expected = expected_claim(queued, offers)
        assert claim(conn, offers) == expected, (offers, queued)
        outcomes.append(expected)
        if expected is not None:
            del queued[expected[0]]
    claimed = [o for o in outcomes if o is not None]
    assert len(claimed) > 30 and len(outcomes) - len(claimed) > 10  # both kinds of answer were checked
    assert len({o[1] for o in claimed}) == 3  # and every preference position won some
