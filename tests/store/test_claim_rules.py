"""The claim statement against SPEC §15: not_before and concurrency groups are decided inside the one
statement that claims, queued runs oldest first, never skipped; several claimers never overfill a group;
and a claim's cost does not grow with runs that wait for their time or for a full group."""

from __future__ import annotations

import threading
from pathlib import Path

from runsvc.store import runs as run_sql
from runsvc.store.dialect import BEGIN_WRITE
from runsvc.store.migrations import schema_sql
from tests.store.claim_model import (  # noqa: F401 (conn_fixture is the `conn` fixture)
    LOCAL,
    RandomQueue,
    at,
    claim,
    conn_fixture,
    connect,
    connect_backend,
    end,
    queue,
)


def test_a_full_group_holds_its_runs_and_lets_others_pass(conn):
    """While `limit` runs of a group run, its next run stays queued (later runs outside the group go
    first); it is claimed once one of them ends, oldest of the group first."""
    first = queue(conn, key="db", limit=2)
    second = queue(conn, key="db", limit=2)
    third = queue(conn, key="db", limit=2)
    free = queue(conn)
    other_group = queue(conn, key="web")
    assert [claim(conn, 1) for _ in range(5)] == [first, second, free, other_group, None]
    end(conn, first)
    assert claim(conn, 1) == third
    assert claim(conn, 1) is None


def test_the_candidates_own_limit_counts(conn):
    """A run with limit 1 waits while one run of its group (whatever that run's limit) runs."""
    wide = queue(conn, key="db", limit=5)
    narrow = queue(conn, key="db", limit=1)
    assert claim(conn, 1) == wide
    assert claim(conn, 1) is None
    end(conn, wide)
    assert claim(conn, 1) == narrow


def test_not_before_holds_a_run_until_its_time(conn):
    """A delayed run is not claimed before its not_before, and is claimed at it; runs without one pass
    it meanwhile; one in the past is claimed at once, in its place."""
    delayed = queue(conn, not_before=10)
    past = queue(conn, created=1, not_before=-3600)
    plain = queue(conn, created=2)
    assert [claim(conn, 5), claim(conn, 5), claim(conn, 9.999)] == [past, plain, None]
    assert claim(conn, 10) == delayed


def test_a_due_run_queues_behind_runs_waiting_when_it_became_due(conn):
    """A delayed run (a retry) that becomes due goes after runs queued before its time and before runs
    queued after it: oldest first by the time each became claimable."""
    retry = queue(conn, created=0, not_before=10)
    before_due = queue(conn, created=5)
    after_due = queue(conn, created=15)
    busy = [("local", ())]
    assert [claim(conn, 20, busy) for _ in range(4)] == [before_due, retry, after_due, None]


def test_a_group_waits_for_its_head_not_before(conn):
    """Runs of one group keep their order: a later run of the group is claimed while the older one
    waits for its not_before, and the group's limit then holds the older one."""
    delayed = queue(conn, key="g", not_before=10)
    now = queue(conn, created=1, key="g")
    assert claim(conn, 2) == now
    assert claim(conn, 11) is None  # due, but its group is full
    end(conn, now)
    assert claim(conn, 11) == delayed


def test_claims_match_the_rules_for_random_queues(conn):
    """Random queues with labels, groups (one limit each) and delays, random offers, runs ending at
    random (a fixed seed): every claim is the one SPEC §11 and §15 name."""
    model = RandomQueue(conn, seed=21)
    checked = claimed = 0
    for _ in range(600):
        if model.step(queue_below=0.45, end_below=0.65):
            continue
        rng = model.rng
        offers = [(f"e{i}", tuple(rng.sample(["x", "y"], rng.randint(0, 2)))) for i in range(rng.randint(1, 2))]
        expected = model.expected(offers)
        got = run_sql.claim_next(conn, at(model.now), offers)
        assert (None if got is None else (got[0].id, got[0].executor)) == expected, (model.now, offers)
        checked += 1
        if expected is not None:
            claimed += 1
            model.started(expected[0])
    assert claimed > 40 and checked - claimed > 20  # both kinds of answer were checked


def test_several_claimers_never_overfill_a_group(tmp_path, backend):
    """Four claimers on their own connections claim at once: a group of limit 2 never has more than 2
    running, every run is claimed exactly once, and the free runs all go."""
    path = tmp_path / "race.db"
    setup = connect_backend(path, backend)
    grouped = {queue(setup, created=i * 0.001, key="g", limit=2) for i in range(20)}
    free = {queue(setup, created=1 + i * 0.001) for i in range(20)}
    claims: list[int] = []
    lock = threading.Lock()

    def claimer() -> None:
        conn = connect_backend(path, backend)
        try:
            for _ in range(40):
                conn.execute(BEGIN_WRITE)
                run_id = claim(conn, 5)
                conn.execute("COMMIT")
                if run_id is not None:
                    with lock:
                        claims.append(run_id)
        finally:
            conn.close()

    threads = [threading.Thread(target=claimer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    running_grouped = setup.execute(
        "SELECT count(*) FROM runs WHERE status = 'running' AND concurrency_key = 'g'").fetchone()[0]
    setup.close()
    assert len(claims) == len(set(claims)) == 22
    assert set(claims) == free | (set(claims) & grouped) and running_grouped == 2


def claim_steps(tmp_path: Path, waiting: int) -> int:
    """SQLite VM steps of one claim with `waiting` older queued runs that wait for their not_before or
    for a full group (same labels as the run it claims), and one it can take."""
    conn = connect(tmp_path / f"claim-{waiting}.db")
    conn.executescript(schema_sql())
    queue(conn, key="full")
    assert claim(conn, 0) is not None
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO runs (command, env, timeout_s, status, created_at, not_before, concurrency, concurrency_key) "
        "VALUES ('[\"x\"]', '{}', 60, 'queued', ?, ?, ?, ?)",
        [(at(0), at(3600 + i), None, None) if i % 2 else (at(0), None, '{"key": "full", "limit": 1}', "full")
         for i in range(waiting)],
    )
    conn.execute("COMMIT")
    target = queue(conn, created=1)
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    conn.set_progress_handler(count, 10)
    claimed = claim(conn, 2)
    conn.set_progress_handler(None, 1)
    conn.close()
    assert claimed == target
    return steps


def test_claim_cost_does_not_grow_with_waiting_runs(tmp_path):
    """A claim costs the same with 20,000 queued runs waiting for their not_before or a full group as
    with 20: it visits claim groups, not runs."""
    few, many = claim_steps(tmp_path, 20), claim_steps(tmp_path, 20_000)
    assert many <= few + 5, (few, many)
