"""SQL for jobs (SPEC §15): reading them. Nested objects are stored as normalised JSON text."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import attrs

from ..model import Job

JOB_COLUMNS = ", ".join(field.name for field in attrs.fields(Job))
_JSON_COLUMNS = ("command", "env", "labels", "params", "retries", "concurrency", "schedule")
_TUPLES = ("command", "labels", "params")


def job_from_row(row: sqlite3.Row) -> Job:
    values: dict[str, Any] = dict(zip(row.keys(), row, strict=True))
    for key in _JSON_COLUMNS:
        if values[key] is not None:
            values[key] = json.loads(values[key])
    for key in _TUPLES:
        values[key] = tuple(values[key])
    return Job(**values)


def get_job(conn: sqlite3.Connection, job_id: int) -> Job | None:
    row = conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return job_from_row(row) if row else None
