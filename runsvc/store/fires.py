"""SQL for a schedule's fires (SPEC §15): each (job, fire time) recorded once with its outcome, the
scheduled jobs the ticker keeps in memory, and the runs of a job its overlap policy looks at.

`job_fires` has PRIMARY KEY (job_id, scheduled_for): `insert_fire` is the one place a fire time is
claimed, and it says whether this call recorded it, so a fire handled again (a restart in the middle of
one) neither records nor starts anything twice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from ..model import Job
from .dialect import BEGIN_SNAPSHOT, Connection, Variants
from .jobs import JOB_COLUMNS, job_from_row

# What a fire did (the CHECK of job_fires.outcome, the API's `outcome`, the metric's label).
OUTCOMES = ("started", "skipped_overlap", "skipped_missed", "cancelled_previous")


# Every job with an enabled schedule and its version (updated_at changes with every edit): what a reload
# compares with what the ticker holds, without decoding a job that did not change.
SCHEDULE_VERSIONS = Variants(
    sqlite="SELECT id, updated_at FROM jobs WHERE schedule IS NOT NULL AND json_extract(schedule, '$.enabled')",
    postgresql="SELECT id, updated_at FROM jobs "
    "WHERE schedule IS NOT NULL AND (schedule::jsonb ->> 'enabled')::boolean",
)
# The newest recorded fire of each of the jobs in a JSON array of ids: one primary-key seek per job.
NEWEST_FIRES = Variants(
    sqlite="SELECT j.value, (SELECT max(f.scheduled_for) FROM job_fires AS f WHERE f.job_id = j.value) "
    "FROM json_each(?) AS j",
    postgresql="SELECT j.id, (SELECT max(f.scheduled_for) FROM job_fires AS f WHERE f.job_id = j.id) "
    "FROM (SELECT value::bigint AS id FROM jsonb_array_elements_text(%s::jsonb)) AS j",
)
# The jobs of a JSON array of ids.
JOBS_BY_IDS = Variants(
    sqlite=f"SELECT {JOB_COLUMNS} FROM jobs WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
    postgresql=f"SELECT {JOB_COLUMNS} FROM jobs WHERE id IN "
    "(SELECT value::bigint FROM jsonb_array_elements_text(%s::jsonb)) ORDER BY id",
)
# A job's queued and running runs: the partial index runs_job_active holds only those.
ACTIVE_RUNS = "SELECT id, status FROM runs WHERE job_id = ? AND status IN ('queued', 'running') ORDER BY id"


def scheduled_jobs(
    conn: Connection, known: Mapping[int, str]
) -> tuple[dict[int, str], list[tuple[Job, str | None]]]:
    """The jobs with an enabled schedule as {id: updated_at}, and those of them whose version is not the
    one in `known` (new or edited), each with the newest fire time recorded for it (None if none yet).

    Five statements (three and the read transaction's two), whatever the number of jobs and fires; only
    the changed jobs are decoded, so a thousand jobs created one after the other do not cost a thousand
    decodings of every job."""
    conn.execute(BEGIN_SNAPSHOT)  # one snapshot: the versions are those of the jobs read
    try:
        versions: dict[int, str] = dict(conn.execute(SCHEDULE_VERSIONS).fetchall())
        changed = json.dumps([job_id for job_id, version in versions.items() if known.get(job_id) != version])
        jobs = [
            job_from_row(row) for row in conn.execute(JOBS_BY_IDS, (changed,))
        ]
        newest = dict(conn.execute(NEWEST_FIRES, (changed,)).fetchall())
    finally:
        conn.execute("COMMIT")
    return versions, [(job, newest.get(job.id)) for job in jobs]


def insert_fire(conn: Connection, job_id: int, scheduled_for: str, outcome: str, ts: str) -> bool:
    """Record a fire time of a job with its outcome; False (and nothing changed) if it was recorded
    before."""
    row = conn.execute(
        "INSERT INTO job_fires (job_id, scheduled_for, outcome, run_id, recorded_at) VALUES (?, ?, ?, NULL, ?) "
        "ON CONFLICT (job_id, scheduled_for) DO NOTHING RETURNING 1",
        (job_id, scheduled_for, outcome, ts),
    ).fetchone()
    return row is not None


def set_fire_run(conn: Connection, job_id: int, scheduled_for: str, run_id: int) -> None:
    """The run a recorded fire started."""
    conn.execute(
        "UPDATE job_fires SET run_id = ? WHERE job_id = ? AND scheduled_for = ?", (run_id, job_id, scheduled_for)
    )


def active_runs(conn: Connection, job_id: int) -> list[tuple[int, str]]:
    """(id, status) of the job's queued and running runs, oldest first, whatever started them. Served
    by the partial index runs_job_active: a job's finished runs cost nothing."""
    return [(row[0], row[1]) for row in conn.execute(ACTIVE_RUNS, (job_id,))]

