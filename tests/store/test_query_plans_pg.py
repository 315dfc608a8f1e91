"""PostgreSQL's plan for the claim (CLAIM_NEXT_POSTGRESQL): the queued runs are walked in claim order in
the partial index runs_queued_claim, the first claimable one taken; never a scan and sort of every run.
(test_query_plans.py pins SQLite's plans.) Runs only where PostgreSQL is available."""

from __future__ import annotations

import json

import psycopg
import pytest
import trio

from runsvc.store import open_store
from runsvc.store.runs import CLAIM_NEXT_POSTGRESQL
from tests import pg

QUEUED = 2_000
FINISHED = 20_000  # most of a busy server's runs: the claim must not read them


@pytest.fixture(name="database_url")
def _database_url():
    if not pg.ADMIN_URL:
        pytest.skip(pg.SKIP_REASON)
    url = pg.create_database()
    yield url
    pg.drop_database(url)


def _fill(url: str) -> None:
    """Many finished runs and a queue of runs, some with labels, some in a concurrency group, some
    delayed; statistics up to date, as autovacuum keeps them on a live server."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO runs (command, env, timeout_s, status, created_at, ended_at) "
            "SELECT '[\"true\"]', '{}', 60, 'succeeded', '2026-01-01T00:00:00.000000Z', "
            "'2026-01-01T00:00:01.000000Z' FROM generate_series(1, %s)",
            (FINISHED,),
        )
        conn.execute(
            "INSERT INTO runs (command, env, timeout_s, status, created_at, labels, concurrency_key, "
            "concurrency, not_before) "
            "SELECT '[\"true\"]', '{}', 60, 'queued', "
            "to_char(timestamp '2026-01-02' + g * interval '1 ms', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "
            "CASE WHEN g %% 3 = 0 THEN '[\"gpu\"]' ELSE '[]' END, "
            "CASE WHEN g %% 5 = 0 THEN 'deploy' END, "
            "CASE WHEN g %% 5 = 0 THEN '{\"limit\": 1}' ELSE '{}' END, "
            "CASE WHEN g %% 7 = 0 THEN '2027-01-01T00:00:00.000000Z' END "
            "FROM generate_series(1, %s) AS g",
            (QUEUED,),
        )
        conn.execute("ANALYZE runs")


async def test_the_claim_walks_the_queued_runs_in_runs_queued_claim(database_url):
    """EXPLAIN of the claim with a queue and many finished runs: an index scan of runs_queued_claim
    (ordered, so LIMIT 1 stops at the first claimable run), no sequential scan and no sort of runs."""
    with trio.fail_after(60):
        async with open_store(database_url=database_url):
            pass  # creates the schema
        await trio.to_thread.run_sync(_fill, database_url)
        offers = json.dumps([{"name": "local", "labels": []}, {"name": "agent:1", "labels": ["gpu"]}])

        def explain() -> str:
            with psycopg.connect(database_url, autocommit=True) as conn:
                rows = conn.execute(
                    "EXPLAIN " + CLAIM_NEXT_POSTGRESQL, {"ts": "2026-06-01T00:00:00.000000Z", "executors": offers}
                ).fetchall()
            return "\n".join(row[0] for row in rows)

        plan = await trio.to_thread.run_sync(explain)
    assert "Index Scan using runs_queued_claim on runs r" in plan, plan
    assert "Seq Scan on runs" not in plan, plan
    assert "Sort" not in plan, plan
