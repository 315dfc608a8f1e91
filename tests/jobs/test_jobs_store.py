"""The jobs store (SPEC §15): schedule_from, names unique ignoring case, list order, a job's newest run."""

from __future__ import annotations

import sqlite3
from functools import partial

import pytest
import trio

from runsvc.store import jobs as sql
from runsvc.store import runs as run_sql
from runsvc.store.migrations import schema_sql

DAILY = {"cron": "@daily", "timezone": "UTC", "overlap": "skip", "enabled": True, "missed": "run_once"}


def values(name="job", **changes):
    return {"name": name, "description": "", "command": ["true"], "env": {}, "timeout_s": 60.0, "labels": [],
            "params": [], "retries": None, "concurrency": None, "schedule": None, **changes}


def _accept(job):
    return None


async def update(store, job_id, changes, ts):
    return await store.write(partial(sql.update_job, ts=ts, check=_accept), job_id, changes)


async def test_schedule_from_moves_only_when_the_schedule_is_created_changed_or_reenabled(store):
    """schedule_from is set when a schedule is created, changed or re-enabled, kept across other edits and
    the same schedule sent again, and cleared with the schedule."""
    with trio.fail_after(10):
        job = await store.write(partial(sql.create_job, created_by="olga", ts="T1"), values(schedule=DAILY))
        same = await update(store, job.id, {"schedule": dict(DAILY), "description": "x"}, "T2")
        other = await update(store, job.id, {"env": {"A": "1"}}, "T3")
        changed = await update(store, job.id, {"schedule": {**DAILY, "cron": "@hourly"}}, "T4")
        disabled = await update(store, job.id, {"schedule": {**DAILY, "cron": "@hourly", "enabled": False}}, "T5")
        reenabled = await update(store, job.id, {"schedule": {**DAILY, "cron": "@hourly"}}, "T6")
        removed = await update(store, job.id, {"schedule": None}, "T7")
        added = await update(store, job.id, {"schedule": DAILY}, "T8")
        plain = await store.write(partial(sql.create_job, created_by=None, ts="T9"), values("plain"))
    assert job.schedule_from == "T1" and job.created_at == job.updated_at == "T1"
    assert (same.schedule_from, same.updated_at, same.description) == ("T1", "T2", "x")
    assert other.schedule_from == "T1"
    assert changed.schedule_from == "T4"
    assert disabled.schedule_from == "T5"
    assert reenabled.schedule_from == "T6"
    assert removed.schedule_from is None and removed.schedule is None
    assert added.schedule_from == "T8"
    assert plain.schedule_from is None


async def test_names_are_unique_ignoring_case_and_listed_by_name(store):
    """A second job named like another but for case is refused on create and on rename (nothing changes);
    the list is by name ignoring case."""
    with trio.fail_after(10):
        for name in ("b", "C", "a"):
            await store.write(partial(sql.create_job, created_by=None, ts="T"), values(name))
        with pytest.raises(sql.NameTaken, match="'A' exists already"):
            await store.write(partial(sql.create_job, created_by=None, ts="T"), values("A"))
        first = (await store.read(sql.list_jobs))[0][0]
        with pytest.raises(sql.NameTaken):
            await update(store, first.id, {"name": "B"}, "T2")
        listed = await store.read(sql.list_jobs)
    assert [job.name for job, _ in listed] == ["a", "b", "C"]
    assert listed[0][0] == first


async def test_last_run_is_the_newest_run_of_each_job(store):
    """Each job comes with its newest run (a summary, without env), or None; a refused check leaves the job
    as it was."""
    with trio.fail_after(10):
        one = await store.write(partial(sql.create_job, created_by=None, ts="T"), values("one"))
        two = await store.write(partial(sql.create_job, created_by=None, ts="T"), values("two"))
        runs = []
        for job in (one, one, two, one):
            run, _ = await store.write(partial(
                run_sql.create_run, command=["true"], env={"A": "1"}, timeout_s=1, name=job.name, created_by=None,
                ts="T", job_id=job.id, job_name=job.name, trigger="job"))
            runs.append(run)
        await store.write(partial(run_sql.create_run, command=["true"], env={}, timeout_s=1, name=None,
                                  created_by=None, ts="T"))
        three = await store.write(partial(sql.create_job, created_by=None, ts="T"), values("three"))
        listed = dict((job.name, last) for job, last in await store.read(sql.list_jobs))
        single = await store.read(sql.get_job_with_last_run, one.id)

        def refuse(job):
            raise ValueError("no")

        with pytest.raises(ValueError):
            await store.write(partial(sql.update_job, ts="T2", check=refuse), one.id, {"description": "x"})
        unchanged = await store.read(sql.get_job, one.id)
    assert listed["one"].id == runs[3].id and listed["two"].id == runs[2].id and listed["three"] is None
    assert listed["one"].env is None  # a summary
    assert single == (one, listed["one"])
    assert three.id > two.id and unchanged == one


@pytest.mark.parametrize(("sql_text", "expected"), [
    (f"SELECT id FROM runs WHERE id IN ({sql.LAST_RUN_IDS})", "SEARCH r USING COVERING INDEX runs_job_id (job_id=?)"),
    (sql.SELECT_QUEUED_RUNS, "SEARCH runs USING INDEX runs_job_id (job_id=?)"),
    (sql.SELECT_FIRES, "SEARCH job_fires USING PRIMARY KEY (job_id=?)"),
])
def test_a_jobs_runs_and_fires_are_found_by_index(sql_text, expected):
    """A job's newest run, its queued runs and its fires page are index searches: no scan of runs or
    fires, no sort, however many runs there are."""
    conn = sqlite3.connect(":memory:")
    conn.executescript(schema_sql())
    details = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql_text, (None,) * sql_text.count("?"))]
    conn.close()
    assert expected in details, details
    assert not [d for d in details if d.startswith("SCAN ") and "jobs" not in d], details
    assert not [d for d in details if "TEMP B-TREE" in d], details
