"""A group commit's event rows and last seqs, on both backends: a fixed number of statements whatever
the number of runs, and a line one database refuses fails alone."""

from __future__ import annotations

from typing import Any

import psycopg
import trio

from runsvc.events import EventLog, RunEventBus
from runsvc.model import state_data
from runsvc.store.dialect import SQLITE
from tests.test_event_append import insert_running_run, stored

DEADLINE_S = 20


async def _group_commit_statements(store, runs: int) -> int:
    """Statements the store ran for one group commit of 100 events to each of `runs` runs."""
    eventlog = EventLog(store, RunEventBus())
    run_ids = [await store.write(insert_running_run) for _ in range(runs)]
    before = store.statistics().statements
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            for run_id in run_ids:
                nursery.start_soon(eventlog.append, run_id, [("stdout", "line")] * 100)
    statements = store.statistics().statements - before
    assert eventlog.statistics().buffers_committed == 1
    assert [await store.read(stored, run_id) for run_id in run_ids] == [("running", 100, list(range(1, 101)))] * runs
    return statements


async def test_a_group_commit_costs_the_same_statements_for_one_run_or_ten(store):
    """The rows of every run go in with one insert and every run's last_seq is read and written with one
    statement each: on PostgreSQL each statement is a round trip, which per run capped ingest."""
    assert await _group_commit_statements(store, 10) == await _group_commit_statements(store, 1)


async def test_lines_the_database_refuses_fail_alone_in_a_group_commit(store):
    """A lone surrogate (neither database takes it) and a NUL character (PostgreSQL's text cannot hold
    one; SQLite keeps it) in the same group commit as good appends and a finishing run: the refused
    appends raise to their own callers and leave no seq used; the others commit with gapless seqs."""
    eventlog = EventLog(store, RunEventBus())
    good, surrogate, nul, finishing = [await store.write(insert_running_run) for _ in range(4)]

    def finish(conn: Any) -> None:
        conn.execute("UPDATE runs SET status = 'failed', exit_code = 3, ended_at = 't' WHERE id = ?", (finishing,))

    appends: dict[int, tuple[list[tuple[str, Any]], Any]] = {
        good: ([("stdout", "fine"), ("stderr", "also fine")], None),
        surrogate: ([("stdout", "bad \udc80 line")], None),
        nul: ([("stdout", "nul \x00 inside")], None),
        finishing: ([("stdout", "last"), ("state", state_data("failed", 3))], finish),
    }
    outcomes: dict[int, Any] = {}

    async def append(run_id: int) -> None:
        items, transition = appends[run_id]
        try:
            outcomes[run_id] = await eventlog.append(run_id, items, transition=transition)
        except Exception as exc:
            outcomes[run_id] = exc

    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            for run_id in appends:
                nursery.start_soon(append, run_id)
    assert eventlog.statistics().buffers_committed == 1
    assert isinstance(outcomes[surrogate], UnicodeEncodeError)
    assert [e["data"] for e in outcomes[good]] == ["fine", "also fine"]
    assert [e["seq"] for e in outcomes[finishing]] == [1, 2]
    expected = {good: ("running", 2, [1, 2]), surrogate: ("running", 0, []), finishing: ("failed", 2, [1, 2])}
    if store.dialect == SQLITE:
        assert [e["data"] for e in outcomes[nul]] == ["nul \x00 inside"]
        expected[nul] = ("running", 1, [1])
    else:
        assert isinstance(outcomes[nul], psycopg.DataError)
        expected[nul] = ("running", 0, [])
    assert {run_id: await store.read(stored, run_id) for run_id in appends} == expected
    with trio.fail_after(DEADLINE_S):
        assert [e["seq"] for e in await eventlog.append(surrogate, [("stdout", "ok")])] == [1]
