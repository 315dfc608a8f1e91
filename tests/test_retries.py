"""Retries (SPEC §15): the delay rule, which runs are retried, the next try queued in the transaction
that records a run's end (a crash or a storage fault loses or doubles none), and retries for real."""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from runsvc.events import EventLog, RunEventBus, RunFeed
from runsvc.http.run_json import feed_frame
from runsvc.model import Run, StatusConflict
from runsvc.recorder import RunRecorder, record_end
from runsvc.retries import retry_delay_s, wants_retry
from runsvc.store import StoreUnavailable, open_store
from runsvc.store import runs as run_sql
from runsvc.store.connections import connect
from runsvc.store.faults import fault
from runsvc.store.migrations import migrate
from runsvc.timeutil import parse_ts
from tests.conftest import make_settings
from tests.helpers import running_server
from tests.test_scheduler import events_of, submit
from tests.test_scheduler_rules import wait_running

PY = sys.executable
T0 = "2026-06-01T12:00:00.000000Z"
JOB = "INSERT INTO jobs (name, command, env, timeout_s, created_at, updated_at) VALUES ('j', '[]', '{}', 1, 't', 't')"
RETRIES = {"max": 2, "delay_s": 10, "backoff": "exponential", "on": ["failed", "timed_out"]}


class _Fixed(random.Random):
    """A random source that always gives `value`."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.mark.parametrize(
    ("retries", "failed_try", "low", "high"),
    [
        ({"delay_s": 10, "backoff": "fixed"}, 1, 10, 11),
        ({"delay_s": 10, "backoff": "fixed"}, 5, 10, 11),
        ({"delay_s": 10, "backoff": "exponential"}, 1, 10, 11),  # the first retry waits delay_s
        ({"delay_s": 10, "backoff": "exponential"}, 3, 40, 44),
        ({"delay_s": 1000, "backoff": "exponential"}, 4, 3600, 3960),  # capped at 1 h, then jitter
        ({"delay_s": 7200, "backoff": "exponential"}, 3, 7200, 7920),  # the cap never shortens delay_s
        ({"delay_s": 0, "backoff": "exponential"}, 10, 0, 0),
    ],
)
def test_retry_delay(retries, failed_try, low, high):
    """The delay is delay_s (fixed) or delay_s × 2^(n−1) capped at 1 h (exponential), plus 0–10 %."""
    assert retry_delay_s(retries, failed_try, _Fixed(0.0)) == low
    assert retry_delay_s(retries, failed_try, _Fixed(0.999999)) == pytest.approx(high, rel=1e-5)
    assert low <= retry_delay_s(retries, failed_try) <= high


def a_run(**fields: Any) -> Run:
    values: dict[str, Any] = {
        "id": 7, "name": None, "command": ("x",), "env": {}, "status": "failed", "exit_code": 1,
        "created_at": T0, "started_at": T0, "ended_at": T0, "created_by": None, "last_seq": 3,
        "timeout_s": 60.0, "labels": (), "executor": "local", "attempt": 1, "retries": RETRIES,
    }
    return Run(**{**values, **fields})


@pytest.mark.parametrize(
    ("fields", "retried"),
    [
        ({}, True),
        ({"status": "timed_out"}, True),
        ({"try_number": 2}, True),
        ({"try_number": 3}, False),  # max 2: tries 2 and 3 were the retries
        ({"status": "succeeded"}, False),
        ({"status": "cancelled"}, False),
        ({"status": "interrupted"}, False),
        ({"retries": None}, False),
        ({"retries": {**RETRIES, "max": 0}}, False),
        ({"status": "timed_out", "retries": {**RETRIES, "on": ["failed"]}}, False),
        ({"job_id": 3, "job_name": "nightly"}, True),
        ({"job_id": None, "job_name": "nightly"}, False),  # its job was deleted
    ],
)
def test_which_runs_are_retried(fields, retried):
    """Only a status `on` names, with tries left, never cancelled or interrupted, never a deleted job's."""
    assert wants_retry(a_run(**fields)) is retried


def running_run(conn: sqlite3.Connection, retries: dict[str, Any] | None = RETRIES, **fields: Any) -> int:
    """A run with `retries`, claimed (running), in the database behind `conn` (autocommit)."""
    run, _ = run_sql.create_run(conn, command=["x"], env={"A": "1"}, timeout_s=60, name="n", created_by="u",
                                ts=T0, labels=["l"], retries=retries, **fields)
    claimed = run_sql.claim_next(conn, T0, [("local", ("l",))])
    assert claimed is not None and claimed[0].id == run.id
    return run.id


def runs_table(path: Path) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT id, status, trigger, retry_of, try_number FROM runs ORDER BY id").fetchall()
    finally:
        conn.close()


def test_the_next_try_is_in_the_transaction_that_records_the_end(tmp_path):
    """A process killed after recording a run's end and its next try, before COMMIT, leaves neither
    (the run is still running, for recovery); committed, both are there; recording the end again is a
    conflict that adds no second try."""
    path = tmp_path / "crash.db"
    conn = connect(path)
    migrate(conn)
    run_id = running_run(conn)
    conn.close()
    script = (
        "import os, signal, sqlite3, sys\n"
        "from runsvc.recorder import record_end\n"
        "from runsvc.store.connections import connect\n"
        "conn = connect(sys.argv[1])\n"
        "conn.execute('BEGIN IMMEDIATE')\n"
        f"run, retry = record_end(conn, {run_id}, from_status='running', status='failed', exit_code=1, ts={T0!r})\n"
        "assert retry is not None\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    crashed = subprocess.run([PY, "-c", script, str(path)], timeout=60, capture_output=True)
    assert crashed.returncode == -9, crashed.stderr
    assert runs_table(path) == [(run_id, "running", "api", None, 1)]

    conn = connect(path)
    conn.execute("BEGIN IMMEDIATE")
    ended, retry = record_end(conn, run_id, from_status="running", status="failed", exit_code=1, ts=T0)
    conn.execute("COMMIT")
    with pytest.raises(StatusConflict):
        record_end(conn, run_id, from_status="running", status="failed", exit_code=1, ts=T0)
    conn.close()
    assert retry is not None
    assert runs_table(path) == [(run_id, "failed", "api", None, 1), (retry[0].id, "queued", "retry", run_id, 2)]


def test_the_next_try_keeps_the_spec(tmp_path):
    """The next try has the run's command, env, timeout, name, labels, job, params, retries and
    concurrency, `trigger: "retry"`, and a not_before its delay after the end, with its queued event."""
    conn = connect(tmp_path / "spec.db")
    migrate(conn)
    conn.execute(JOB)
    run_id = running_run(conn, job_id=1, job_name="j", params={"p": "v"}, concurrency={"key": "k", "limit": 2})
    ended, retry = record_end(conn, run_id, from_status="running", status="timed_out", exit_code=None, ts=T0)
    conn.close()
    assert retry is not None
    new, events = retry
    assert [e["data"] for e in events] == [{"status": "queued", "exit_code": None, "reason": None}]
    same = ("command", "env", "timeout_s", "name", "created_by", "labels", "job_id", "job_name", "params",
            "retries", "concurrency")
    assert {f: getattr(new, f) for f in same} == {f: getattr(ended, f) for f in same}
    assert (new.status, new.trigger, new.retry_of, new.try_number) == ("queued", "retry", run_id, 2)
    delay = (parse_ts(new.not_before) - parse_ts(T0)).total_seconds()
    assert 10 <= delay <= 11


def test_a_deleted_jobs_run_is_not_retried(tmp_path):
    """A run whose job was deleted (job_id NULL, job_name kept) ends without a next try."""
    conn = connect(tmp_path / "deleted.db")
    migrate(conn)
    conn.execute(JOB)
    run_id = running_run(conn, job_id=1, job_name="j")
    conn.execute("PRAGMA foreign_keys = ON")  # as the store's connections have it
    conn.execute("DELETE FROM jobs")  # ON DELETE SET NULL
    ended, retry = record_end(conn, run_id, from_status="running", status="failed", exit_code=1, ts=T0)
    conn.close()
    assert (ended.job_id, ended.job_name, retry) == (None, "j", None)


async def test_a_storage_fault_while_recording_the_end_queues_one_next_try(tmp_path):
    """A group commit rolled back by a storage fault after the end and the next try were written is
    retried by the store: one next try in the database, published after the end, counted once."""
    entered, release = threading.Event(), threading.Event()

    def hold_the_writer(conn: sqlite3.Connection) -> None:
        entered.set()
        release.wait(20)

    def meets_a_full_disk(conn: sqlite3.Connection) -> None:
        raise fault("full")

    try:
        async with open_store(tmp_path / "t.db") as store:
            bus = RunEventBus()
            feed = RunFeed(feed_frame)
            recorder = RunRecorder(EventLog(store, bus), bus, feed)
            run_id = await store.write(running_run)
            with feed.watch() as watcher, trio.fail_after(20):
                store.submit_write(hold_the_writer)
                await trio.to_thread.run_sync(entered.wait)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(partial_finish(recorder, run_id))
                    await trio.testing.wait_all_tasks_blocked()
                    faulty = store.submit_write(meets_a_full_disk)  # the same batch, after the end
                    release.set()
                await faulty.done.wait()
                assert isinstance(faulty.error, StoreUnavailable)
                frames = [json.loads(await watcher.receive())["run"] for _ in range(2)]
            rows = await store.read(lambda conn: conn.execute(
                "SELECT id, status, trigger, retry_of FROM runs ORDER BY id").fetchall())
    finally:
        release.set()
    assert [tuple(row) for row in rows] == [(run_id, "failed", "api", None), (run_id + 1, "queued", "retry", run_id)]
    assert [(f["id"], f["status"]) for f in frames] == [(run_id, "failed"), (run_id + 1, "queued")]
    assert recorder.retried == 1


def partial_finish(recorder: RunRecorder, run_id: int):
    async def finish() -> None:
        await recorder.finish(run_id, from_status="running", status="failed", exit_code=1)

    return finish


@pytest.fixture(name="services")
async def _services(tmp_path):
    settings = make_settings(tmp_path, kill_grace_s=0.5, max_concurrent_runs=4, scheduler_safety_net_s=600)
    async with running_server(settings) as server:
        yield server.services


async def chain(services, run: Run) -> list[Run]:
    """The run and every try after it, each once it has ended (follows retry_of through the list)."""
    tries = [run]
    while True:
        await events_of(services, tries[-1].id)
        tries[-1] = await services.runs.get(tries[-1].id)
        listed, _ = await services.runs.list((), 50, None)
        following = [r for r in listed if r.retry_of == tries[-1].id]
        if not following:
            return tries
        tries.append(following[0])


async def test_a_failing_run_is_tried_max_plus_one_times(services):
    """A run that always fails, with max 2 and no delay, is tried 3 times, each retrying the one
    before; the last is not retried; the metric counts 2."""
    retries = {"max": 2, "delay_s": 0, "backoff": "fixed", "on": ["failed"]}
    with trio.fail_after(30):
        first = await submit(services, [PY, "-c", "raise SystemExit(3)"], retries=retries, name="flaky")
        tries = await chain(services, first)
        metrics = (services.metrics.render({})).decode()
    assert [(r.status, r.trigger, r.try_number, r.name) for r in tries] == [
        ("failed", "api", 1, "flaky"), ("failed", "retry", 2, "flaky"), ("failed", "retry", 3, "flaky")]
    assert [r.retry_of for r in tries] == [None, tries[0].id, tries[1].id]
    assert "runsvc_runs_retried_total 2.0" in metrics


async def test_a_retry_waits_its_delay(services):
    """With delay_s 1 (fixed), the next try is not started before 1 s after the failure, and within
    1 s after its not_before (1 to 1.1 s after the end)."""
    retries = {"max": 1, "delay_s": 1, "backoff": "fixed", "on": ["failed"]}
    with trio.fail_after(30):
        first = await submit(services, [PY, "-c", "raise SystemExit(1)"], retries=retries)
        tries = await chain(services, first)
    assert [r.status for r in tries] == ["failed", "failed"]
    waited = (parse_ts(tries[1].not_before) - parse_ts(tries[0].ended_at)).total_seconds()
    late = (parse_ts(tries[1].started_at) - parse_ts(tries[1].not_before)).total_seconds()
    assert 1 <= waited <= 1.1 and 0 <= late < 1


async def test_succeeded_and_cancelled_runs_are_not_retried(services):
    """A run that succeeds, or is cancelled, gets no next try even with retries on every status."""
    retries = {"max": 3, "delay_s": 0, "backoff": "fixed", "on": ["failed", "timed_out"]}
    with trio.fail_after(30):
        ok = await submit(services, [PY, "-c", "pass"], retries=retries)
        stuck = await submit(services, [PY, "-c", "import time; time.sleep(60)"], retries=retries)
        await wait_running(services, stuck.id)
        await services.runs.cancel(stuck.id, by="tester")
        assert len(await chain(services, ok)) == 1
        assert len(await chain(services, stuck)) == 1
    assert services.recorder.retried == 0
