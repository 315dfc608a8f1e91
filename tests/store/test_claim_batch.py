"""Claiming for several free slots in one transaction (issue 22): the runs claimed together are exactly
the ones successive single claims would take, concurrency groups count the runs claimed with them, each
executor gets no more runs than it has free slots, and the claim says when to look again."""

from __future__ import annotations

import json
from typing import Any

import pytest

from runsvc.store import runs as run_sql
from runsvc.store.dialect import BEGIN_WRITE
from tests.store.claim_model import RandomQueue, at, conn_fixture, queue  # noqa: F401 (the `conn` fixture)


def claim_all(conn, now: float, slots: Any) -> tuple[list[tuple[int, str]], str | None]:
    """claim_batch in one transaction: ([(run id, executor)], next due)."""
    conn.execute(BEGIN_WRITE)
    claimed, next_due = run_sql.claim_batch(conn, at(now), slots)
    conn.execute("COMMIT")
    return [(run.id, run.executor) for run, _ in claimed], next_due


def test_one_transaction_fills_every_free_slot_within_group_limits(conn):
    """Four free slots, a group of limit 2 with three runs queued first: the batch takes two of the
    group and the two oldest free runs, never the group's third; every claimed run has its `running`
    event and all share the claim's start time."""
    grouped = [queue(conn, created=i, key="db", limit=2) for i in range(3)]
    free = [queue(conn, created=10 + i) for i in range(3)]
    claimed, next_due = claim_all(conn, 20, [("local", (), 4)])
    assert claimed == [(grouped[0], "local"), (grouped[1], "local"), (free[0], "local"), (free[1], "local")]
    assert next_due is None  # the slots ran out, not the claimable runs
    for run_id, _ in claimed:
        run = run_sql.get_run(conn, run_id)
        assert run is not None and run.status == "running" and run.started_at == at(20)
        rows = conn.execute("SELECT kind, data FROM run_events WHERE run_id = ? ORDER BY seq", (run_id,))
        states = [(kind, json.loads(data)["status"]) for kind, data in rows]
        assert states == [("state", "queued"), ("state", "running")]
    assert run_sql.get_run(conn, grouped[2]).status == "queued"


def test_each_executor_gets_at_most_its_free_slots_and_only_runs_it_can_take(conn):
    """Slots per executor are honoured: the gpu agent (one free slot) takes one gpu run and the second
    waits although it is older than the plain runs, which go to local (two free slots); the third plain
    run waits for a slot."""
    gpu = [queue(conn, created=i, labels=("gpu",)) for i in range(2)]
    plain = [queue(conn, created=5 + i) for i in range(3)]
    claimed, next_due = claim_all(conn, 10, [("local", (), 2), ("agent:g", ("gpu",), 1)])
    assert claimed == [(gpu[0], "agent:g"), (plain[0], "local"), (plain[1], "local")]
    assert next_due is None
    claimed, _ = claim_all(conn, 10, [("local", (), 1), ("agent:g", ("gpu",), 1)])
    assert claimed == [(gpu[1], "agent:g"), (plain[2], "local")]


def test_stops_at_what_is_claimable_and_says_when_to_look_again(conn):
    """With more slots than claimable runs the batch claims what it can and returns the earliest
    not_before still to come (a run due later is not claimed early); with nothing due, None."""
    due = queue(conn, created=0)
    later = queue(conn, created=0, not_before=30)
    claimed, next_due = claim_all(conn, 10, [("local", (), 4)])
    assert claimed == [(due, "local")] and next_due == at(30)
    claimed, next_due = claim_all(conn, 30, [("local", (), 4)])
    assert claimed == [(later, "local")] and next_due is None
    assert claim_all(conn, 31, [("local", (), 4)]) == ([], None)
    assert claim_all(conn, 31, []) == ([], None)


def test_batches_match_successive_single_claims_for_random_queues(conn):
    """Random queues (labels, groups, delays), random slots, runs ending at random (a fixed seed): each
    batch is exactly what SPEC §11 and §15 give claim after claim, slots used up as they go."""
    model = RandomQueue(conn, seed=22)
    batches = 0
    for _ in range(400):
        if model.step(queue_below=0.5, end_below=0.75):
            continue
        rng = model.rng
        slots = [(f"e{i}", tuple(sorted(rng.sample(["x", "y"], rng.randint(0, 2)))), rng.randint(1, 3))
                 for i in range(rng.randint(1, 2))]
        free = {name: count for name, _, count in slots}
        expected: list[tuple[int, str]] = []
        while offers := [(name, labels) for name, labels, _ in slots if free[name]]:
            one = model.expected(offers)
            if one is None:
                break
            expected.append(one)
            free[one[1]] -= 1
            model.started(one[0])
        got, _ = claim_all(conn, model.now, slots)
        assert got == expected, (model.now, slots)
        batches += len(expected) > 1
    assert batches > 20  # batches of several runs were checked, not only single claims


# SQLite's statement trace; on PostgreSQL a claim is one statement more (runs.lock_claims).
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_submit_and_a_claim_cost_two_statements_each(conn):
    """Issue 22: creating a run is its INSERT and its event's; claiming it is the claim and its event's
    (each counts its event in last_seq itself: no read or update of the run after); the run and its
    events agree all the same."""
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    created, _ = run_sql.create_run(conn, command=["x"], env={}, timeout_s=60, name=None, created_by=None, ts=at(0))
    assert len(statements) == 2
    statements.clear()
    claimed = run_sql.claim_next(conn, at(1), [("local", ())])
    assert len(statements) == 2
    conn.set_trace_callback(None)
    assert claimed is not None and created.last_seq == 1 and claimed[0].last_seq == 2
    assert [event["seq"] for event in claimed[1]] == [2]
    stored = run_sql.get_run(conn, created.id)
    assert stored is not None and stored.last_seq == 2
    seqs = [row[0] for row in conn.execute("SELECT seq FROM run_events WHERE run_id = ? ORDER BY seq", (created.id,))]
    assert seqs == [1, 2]
