"""SQL for a schedule's fires (SPEC §15): each (job, fire time) recorded once with its outcome, the
scheduled jobs the ticker keeps in memory, and the runs of a job its overlap policy looks at.

`job_fires` has PRIMARY KEY (job_id, scheduled_for): `insert_fire` is the one place a fire time is
claimed, and it says whether this call recorded it, so a fire handled again (a restart in the middle of
one) neither records nor starts anything twice.
"""

from __future__ import annotations

import sqlite3

from ..model import Job
from .jobs import JOB_COLUMNS, job_from_row

# What a fire did (the CHECK of job_fires.outcome, the API's `outcome`, the metric's label).
OUTCOMES = ("started", "skipped_overlap", "skipped_missed", "cancelled_previous")


# The newest recorded fire of each job with an enabled schedule: one primary-key seek per job.
NEWEST_FIRES = (
    "SELECT j.id, (SELECT max(f.scheduled_for) FROM job_fires AS f WHERE f.job_id = j.id) "
    "FROM jobs AS j WHERE j.schedule IS NOT NULL AND json_extract(j.schedule, '$.enabled')"
)
# A job's queued and running runs: the partial index runs_job_active holds only those.
ACTIVE_RUNS = "SELECT id, status FROM runs WHERE job_id = ? AND status IN ('queued', 'running') ORDER BY id"


def scheduled_jobs(conn: sqlite3.Connection) -> list[tuple[Job, str | None]]:
    """Every job with an enabled schedule, with the newest fire time recorded for it (None if none yet).

    Two statements, whatever the number of fires: the newest fire of each job is one seek in the
    primary key (a GROUP BY over job_fires would read every fire ever recorded)."""
    jobs = [
        job_from_row(row) for row in conn.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs "
            "WHERE schedule IS NOT NULL AND json_extract(schedule, '$.enabled') ORDER BY id"
        )
    ]
    newest = dict(conn.execute(NEWEST_FIRES).fetchall())
    return [(job, newest.get(job.id)) for job in jobs]


def insert_fire(conn: sqlite3.Connection, job_id: int, scheduled_for: str, outcome: str, ts: str) -> bool:
    """Record a fire time of a job with its outcome; False (and nothing changed) if it was recorded
    before."""
    row = conn.execute(
        "INSERT INTO job_fires (job_id, scheduled_for, outcome, run_id, recorded_at) VALUES (?, ?, ?, NULL, ?) "
        "ON CONFLICT (job_id, scheduled_for) DO NOTHING RETURNING 1",
        (job_id, scheduled_for, outcome, ts),
    ).fetchone()
    return row is not None


def set_fire_run(conn: sqlite3.Connection, job_id: int, scheduled_for: str, run_id: int) -> None:
    """The run a recorded fire started."""
    conn.execute(
        "UPDATE job_fires SET run_id = ? WHERE job_id = ? AND scheduled_for = ?", (run_id, job_id, scheduled_for)
    )


def active_runs(conn: sqlite3.Connection, job_id: int) -> list[tuple[int, str]]:
    """(id, status) of the job's queued and running runs, oldest first, whatever started them. Served
    by the partial index runs_job_active: a job's finished runs cost nothing."""
    return [(row[0], row[1]) for row in conn.execute(ACTIVE_RUNS, (job_id,))]

