"""The hot queries are served by indexes: EXPLAIN QUERY PLAN shows a search, never a table scan."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from runsvc.store import maintenance as m
from runsvc.store import runs as r
from runsvc.store import tokens as t
from runsvc.store import webhooks as w
from runsvc.store.connections import connect
from runsvc.store.dialect import Variants
from runsvc.store.migrations import schema_sql
from runsvc.store.runs import COUNT_RUNS_BY_STATUS

# Used at startup (recover runs left running).
SELECT_RUNNING_RUNS = "SELECT id FROM runs WHERE status = 'running'"

# query name -> (SQL, the index each table access must use)
HOT_QUERIES = {
    "retention selection": (m.SELECT_EXPIRED_RUNS, ["USING INDEX runs_ended_at (ended_at<?)"]),
    "retention dry-run runs": (m.COUNT_EXPIRED_RUNS, ["USING INDEX runs_ended_at (ended_at<?)"]),
    "retention dry-run events": (
        m.COUNT_EXPIRED_EVENTS,
        ["USING PRIMARY KEY (run_id=?)", "USING INDEX runs_ended_at (ended_at<?)"],
    ),
    "retention event bound": (m.SELECT_EVENT_BOUND, ["USING PRIMARY KEY (run_id=?)"]),
    "retention event delete": (m.DELETE_RUN_EVENTS_UPTO, ["USING PRIMARY KEY (run_id=? AND seq<?)"]),
    "retention run events": (m.DELETE_RUN_EVENTS, ["USING PRIMARY KEY (run_id=?)"]),
    "retention run delete": (m.DELETE_RUN, ["USING INTEGER PRIMARY KEY (rowid=?)"]),
    "sessions expiry": (
        m.DELETE_EXPIRED_SESSIONS,
        ["USING INTEGER PRIMARY KEY (rowid=?)", "USING COVERING INDEX sessions_expires_at (expires_at<?)"],
    ),
    "enrollment-token expiry": (
        m.DELETE_EXPIRED_ENROLLMENT_TOKENS,
        [
            "USING INTEGER PRIMARY KEY (rowid=?)",
            "USING COVERING INDEX enrollment_tokens_expires_at (expires_at<?)",
        ],
    ),
    "api-token expiry": (
        t.DELETE_EXPIRED_API_TOKENS,
        ["USING INTEGER PRIMARY KEY (rowid=?)", "USING COVERING INDEX api_tokens_expires_at (expires_at<?)"],
    ),
    "api-token lookup": (
        t.SELECT_LIVE_TOKEN,
        ["USING INDEX sqlite_autoindex_api_tokens_1 (token_hash=?)", "USING INTEGER PRIMARY KEY (rowid=?)"],
    ),
    "throttle cleanup": (
        m.DELETE_STALE_THROTTLE,
        ["USING INDEX sqlite_autoindex_login_throttle_1 (username=? AND client=?)",
         "USING INDEX login_throttle_last_failed_at (last_failed_at<?)"],
    ),
    "claim oldest queued run": (
        r.CLAIM_NEXT,
        [
            "USING INTEGER PRIMARY KEY (rowid=?)",
            "USING INDEX runs_queued_claim (labels>?)",  # the next label set of queued runs
            "USING INDEX runs_queued_claim (labels=? AND <expr>>?)",  # the next concurrency key of a set
            "USING INDEX runs_queued_claim (labels=? AND <expr>=?)",  # the head of a claim group
            "USING INDEX runs_running_concurrency (concurrency_key=?)",  # a group's running runs
        ],
    ),
    "earliest not_before": (r.NEXT_NOT_BEFORE, ["USING INDEX runs_queued_not_before (not_before>?)"]),
    "startup recovery": (SELECT_RUNNING_RUNS, ["USING COVERING INDEX"]),
    "webhook claim": (
        w.CLAIM_DUE,
        ["USING COVERING INDEX webhook_deliveries_due (next_try_at>? AND next_try_at<?)",
         "USING INTEGER PRIMARY KEY (rowid=?)"],
    ),
    "webhook next due": (w.NEXT_DUE, ["USING COVERING INDEX webhook_deliveries_due"]),
    "webhook delivery retention": (
        w.DELETE_OLD_DELIVERIES,
        ["USING COVERING INDEX webhook_deliveries_created_at (created_at<?)"],
    ),
}


CLAIM_CTE_SCANS = {"SCAN first", "SCAN q", "SEARCH q", "SCAN pick"}


@pytest.fixture(name="conn", scope="module")
def _conn():
    conn = sqlite3.connect(":memory:")
    conn.executescript(schema_sql())
    yield conn
    conn.close()


def plan(conn: sqlite3.Connection, sql: str | Variants) -> list[str]:
    sql = sql.sqlite if isinstance(sql, Variants) else sql  # these plans are SQLite's
    names = re.findall(r":(\w+)", sql)
    params = {name: None for name in names} if names else (None,) * sql.count("?")
    return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]


@pytest.mark.parametrize("name", list(HOT_QUERIES))
def test_hot_query_uses_an_index(conn, name):
    """Every table access is an index or primary-key search, with no scan and no sort."""
    sql, expected = HOT_QUERIES[name]
    details = plan(conn, sql)
    # Not table scans: json_each over a label list, and the claim's common table expressions (the
    # seed row of its claim groups, the groups themselves, its one-row pick).
    accesses = [d for d in details if d.startswith(("SEARCH ", "SCAN "))
                and "VIRTUAL TABLE" not in d and d not in CLAIM_CTE_SCANS]
    assert accesses, details
    for detail in accesses:
        assert detail.startswith("SEARCH "), f"{name}: {details}"
    assert not [d for d in details if "TEMP B-TREE" in d], f"{name}: {details}"
    for fragment in expected:
        assert any(fragment in d for d in accesses), f"{name}: {fragment!r} not in {details}"


def test_metrics_run_count_reads_only_an_index(conn):
    """The one query of a /metrics scrape walks the covering status index, never the runs table, and
    needs no sort (the index is already in status order)."""
    details = plan(conn, COUNT_RUNS_BY_STATUS)
    assert any("USING COVERING INDEX runs_status_" in d for d in details), details
    assert not [d for d in details if "TEMP B-TREE" in d], details


def claim_steps(tmp_path: Path, unclaimable: int) -> int:
    """SQLite VM steps of one claim with `unclaimable` older queued runs no free executor can take
    (they need a gpu), and one it can take."""
    conn = connect(tmp_path / f"claim-{unclaimable}.db")
    conn.executescript(schema_sql())
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO runs (command, env, timeout_s, status, created_at, labels) "
        "VALUES ('[\"x\"]', '{}', 60, 'queued', 't', ?)",
        [('["gpu"]' if i % 2 else '["gpu", "big"]',) for i in range(unclaimable)],
    )
    conn.execute("COMMIT")
    r.create_run(conn, command=["x"], env={}, timeout_s=60, name=None, created_by=None, ts="t", labels=["local"])
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    conn.set_progress_handler(count, 10)
    claimed = r.claim_next(conn, "t2", [("local", ("local",)), ("agent:a", ("arm",))])
    conn.set_progress_handler(None, 1)
    conn.close()
    assert claimed is not None and claimed[0].executor == "local"
    return steps


def test_claim_cost_does_not_grow_with_runs_nobody_can_take(tmp_path):
    """A claim costs the same with 20,000 queued runs no free executor can take as with 20: it visits
    the label sets of queued runs, not the runs (issue 20: 100k such runs made each claim 104 ms)."""
    few, many = claim_steps(tmp_path, 20), claim_steps(tmp_path, 20_000)
    assert many <= few + 5, (few, many)  # in tens of steps
