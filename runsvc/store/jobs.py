"""SQL for jobs (SPEC §15): create, read, list, update, delete, a job's newest run, its fires.

Nested objects are stored as normalised JSON text (the jobs service fills every default in first), so
what is read is what the API answers. A job's name is unique ignoring case (the column is NOCASE).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from ..model import Event, Job, Run, state_data
from . import events as event_sql
from . import runs as run_sql
from .dialect import BEGIN_SNAPSHOT, Connection, Row, Variants, database_errors, is_unique_violation

JOB_COLUMNS = ", ".join(field.name for field in attrs.fields(Job))
_JSON_COLUMNS = ("command", "env", "labels", "params", "retries", "concurrency", "schedule", "secrets")
_TUPLES = ("command", "labels", "params")
# What a client may set; the rest (id, schedule_from, timestamps, created_by) the store keeps.
EDITABLE = ("name", "description", "command", "env", "timeout_s", "labels", "params", "retries",
            "concurrency", "schedule", "secrets")

# The statements whose cost matters are index searches (tests/jobs/test_jobs_store.py checks the plans).
# A job's newest run: one seek in runs_job_id (job_id, id) per job.
# Every job by name ignoring case (citext orders so on PostgreSQL).
LIST_JOBS = Variants(
    sqlite=f"SELECT {JOB_COLUMNS} FROM jobs ORDER BY name COLLATE NOCASE, id",
    postgresql=f"SELECT {JOB_COLUMNS} FROM jobs ORDER BY name, id",
)
LAST_RUN_IDS = "SELECT (SELECT max(r.id) FROM runs AS r WHERE r.job_id = jobs.id) FROM jobs"
SELECT_QUEUED_RUNS = "SELECT id FROM runs WHERE job_id = ? AND status = 'queued' ORDER BY id"
SELECT_FIRES = (
    "SELECT scheduled_for, outcome, run_id FROM job_fires WHERE job_id = ? ORDER BY scheduled_for DESC LIMIT ?"
)


class NameTaken(Exception):
    """Another job has this name (ignoring case)."""


@attrs.frozen
class Fire:
    """One fire time of a job's schedule as the ticker recorded it."""

    scheduled_for: str
    outcome: str  # started, skipped_overlap, skipped_missed, cancelled_previous
    run_id: int | None


def job_from_row(row: Row) -> Job:
    values: dict[str, Any] = dict(zip(row.keys(), row, strict=True))
    for key in _JSON_COLUMNS:
        if values[key] is not None:
            values[key] = json.loads(values[key])
    for key in _TUPLES:
        values[key] = tuple(values[key])
    return Job(**values)


def _encoded(values: Mapping[str, Any]) -> dict[str, Any]:
    """Column values for `values` (fields of a Job): nested objects as JSON text."""
    encoded = dict(values)
    for key in _JSON_COLUMNS:
        if key in encoded and encoded[key] is not None:
            value = encoded[key]
            encoded[key] = json.dumps(list(value) if isinstance(value, tuple) else value)
    return encoded


def get_job(conn: Connection, job_id: int) -> Job | None:
    row = conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return job_from_row(row) if row else None


def _name_taken(error: BaseException, name: str) -> NameTaken:
    if not is_unique_violation(error):  # the name is the one unique column a write here can repeat
        raise error
    return NameTaken(f"a job named {name!r} exists already (names are unique ignoring case)")


def create_job(
    conn: Connection, values: Mapping[str, Any], *, created_by: str | None, ts: str
) -> Job:
    """Insert a job from `values` (every EDITABLE field, normalised; `secrets` may be left out: none).
    Its schedule counts fire times from now. Raises NameTaken."""
    row = _encoded({key: values[key] if key != "secrets" else values.get(key, {}) for key in EDITABLE})
    row.update(schedule_from=ts if values["schedule"] is not None else None, created_at=ts,
               created_by=created_by, updated_at=ts)
    columns = ", ".join(row)
    try:
        job_id = conn.execute(
            f"INSERT INTO jobs ({columns}) VALUES ({', '.join('?' * len(row))}) RETURNING id", tuple(row.values())
        ).fetchone()[0]
    except database_errors() as error:
        raise _name_taken(error, values["name"]) from None
    job = get_job(conn, job_id)
    assert job is not None  # inserted by this transaction
    return job


def schedule_from(old: Job, schedule: dict[str, Any] | None, ts: str) -> str | None:
    """Where fire times are counted from once `old`'s schedule becomes `schedule`: now when the schedule
    is created or changed (re-enabling it is a change), unchanged otherwise; None without a schedule."""
    if schedule is None:
        return None
    if schedule != old.schedule or old.schedule_from is None:
        return ts
    return old.schedule_from


def update_job(
    conn: Connection,
    job_id: int,
    changes: Mapping[str, Any],
    *,
    ts: str,
    check: Callable[[Job], None],
) -> Job | None:
    """Apply `changes` (EDITABLE fields, normalised) to the job; `check(merged job)` runs first, in
    this transaction, and may raise to refuse it. None if there is no such job. Raises NameTaken."""
    old = get_job(conn, job_id)
    if old is None:
        return None
    merged = attrs.evolve(old, **changes)
    check(merged)
    values = {key: getattr(merged, key) for key in EDITABLE}
    values.update(schedule_from=schedule_from(old, merged.schedule, ts), updated_at=ts)
    assignments = ", ".join(f"{column} = ?" for column in values)
    try:
        conn.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*_encoded(values).values(), job_id))
    except database_errors() as error:
        raise _name_taken(error, merged.name) from None
    return get_job(conn, job_id)


def delete_job(
    conn: Connection, job_id: int, *, ts: str, reason: str, outbox: run_sql.RunEnded
) -> list[tuple[Run, list[Event]]] | None:
    """Delete the job; its runs stay (job_id NULL through the foreign key, job_name kept) and its queued
    ones are cancelled in the same transaction, each with its `state cancelled` event, so none can be
    claimed in between. Returns those runs (as they are after the delete) with their new events, or
    None if there is no such job. Its fires go with it (ON DELETE CASCADE)."""
    if conn.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone() is None:
        return None
    queued = [row[0] for row in conn.execute(SELECT_QUEUED_RUNS, (job_id,))]
    appended: dict[int, list[Event]] = {}
    for run_id in queued:
        run_sql.finish(
            conn, run_id, from_status="queued", status="cancelled", exit_code=None, ts=ts, outbox=outbox,
            appending=1,
        )
        appended[run_id] = event_sql.append_now(conn, run_id, [("state", state_data("cancelled", None, reason))], ts)
    conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
    cancelled = []
    for run_id, events in appended.items():
        run = run_sql.get_run(conn, run_id)
        assert run is not None  # changed by this transaction
        cancelled.append((run, events))
    return cancelled


def _last_runs(conn: Connection, where: str, args: tuple[Any, ...]) -> dict[int, Run]:
    rows = conn.execute(
        f"SELECT {run_sql.SUMMARY_COLUMNS} FROM runs WHERE id IN ({LAST_RUN_IDS} {where})", args
    ).fetchall()
    runs = [run_sql.run_from_row(row) for row in rows]
    return {run.job_id: run for run in runs if run.job_id is not None}


def list_jobs(conn: Connection) -> list[tuple[Job, Run | None]]:
    """Every job by name ignoring case, each with the summary of its newest run (or None), read in one
    snapshot."""
    conn.execute(BEGIN_SNAPSHOT)
    try:
        rows = conn.execute(LIST_JOBS).fetchall()
        last = _last_runs(conn, "", ())
    finally:
        conn.execute("COMMIT")
    jobs = [job_from_row(row) for row in rows]
    return [(job, last.get(job.id)) for job in jobs]


def get_job_with_last_run(conn: Connection, job_id: int) -> tuple[Job, Run | None] | None:
    """The job and the summary of its newest run (or None), read in one snapshot; None if no job."""
    conn.execute(BEGIN_SNAPSHOT)
    try:
        job = get_job(conn, job_id)
        last = _last_runs(conn, "WHERE jobs.id = ?", (job_id,)) if job else {}
    finally:
        conn.execute("COMMIT")
    return None if job is None else (job, last.get(job_id))


def fires_page(conn: Connection, job_id: int, limit: int) -> list[Fire] | None:
    """The job's `limit` newest fires, newest first; None if there is no such job."""
    conn.execute(BEGIN_SNAPSHOT)
    try:
        if conn.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone() is None:
            return None
        rows = conn.execute(SELECT_FIRES, (job_id, limit)).fetchall()
    finally:
        conn.execute("COMMIT")
    return [Fire(*row) for row in rows]
