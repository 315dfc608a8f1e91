"""The hot queries are served by indexes: EXPLAIN QUERY PLAN shows a search, never a table scan."""

from __future__ import annotations

import re
import sqlite3

import pytest

from runsvc.store import maintenance as m
from runsvc.store import runs as r
from runsvc.store import tokens as t
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
        ["USING INTEGER PRIMARY KEY (rowid=?)", "USING INDEX login_throttle_last_failed_at (last_failed_at<?)"],
    ),
    "claim oldest queued run": (
        r.CLAIM_NEXT,
        ["USING INTEGER PRIMARY KEY (rowid=?)", "USING INDEX runs_status_started_at (status=?)"],
    ),
    "startup recovery": (SELECT_RUNNING_RUNS, ["USING COVERING INDEX"]),
}


@pytest.fixture(name="conn", scope="module")
def _conn():
    conn = sqlite3.connect(":memory:")
    conn.executescript(schema_sql())
    yield conn
    conn.close()


def plan(conn: sqlite3.Connection, sql: str) -> list[str]:
    names = re.findall(r":(\w+)", sql)
    params = {name: None for name in names} if names else (None,) * sql.count("?")
    return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]


@pytest.mark.parametrize("name", list(HOT_QUERIES))
def test_hot_query_uses_an_index(conn, name):
    """Every table access is an index or primary-key search, with no scan and no sort."""
    sql, expected = HOT_QUERIES[name]
    details = plan(conn, sql)
    # json_each over a label list (claiming) and the claim's one-row pick are not table scans.
    accesses = [d for d in details if d.startswith(("SEARCH ", "SCAN "))
                and "VIRTUAL TABLE" not in d and d != "SCAN pick"]
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
