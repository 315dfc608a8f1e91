"""The jobs service (SPEC §15): saved jobs — create, read, list, edit, delete, start — what handlers call.

Values come in validated and normalised by the HTTP layer (every default filled in); what this service
adds is the rules that span fields or need the stored job: a unique name, no schedule on a job that has a
required parameter without default, parameter values when a job is started. A run of a job is queued
through the run service (`RunService.create`), so it is published and the scheduler woken exactly as
for `POST /runs`. Every committed create, edit and delete calls `on_change` (the schedule ticker's wake).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import partial
from typing import Any

import attrs

from ..model import Event, Job, Run
from ..recorder import RunRecorder
from ..runs import RunService
from ..store import Store
from ..store import jobs as sql
from ..store import runs as run_sql
from ..store.dialect import Connection
from ..store.jobs import Fire, NameTaken
from ..store.secrets import check_secrets_exist
from ..timeutil import format_ts, now_ts, parse_ts, utcnow
from .runs import job_run_fields
from .schedule import ScheduleError, next_fires

NEXT_FIRES = 5  # fire times a job answer shows

__all__ = ["Fire", "InvalidJobInput", "JobError", "JobNameTaken", "JobNotFound", "JobService", "JobView"]


class JobError(Exception):
    """Base of the jobs service's errors (mapped to HTTP answers in http/errors.py)."""


class JobNotFound(JobError):
    """404: no job with that id."""


class JobNameTaken(JobError):
    """409: another job has that name, ignoring case."""


class InvalidJobInput(JobError):
    """400: a rule that spans fields is broken; the message names the field."""


@attrs.frozen
class JobView:
    """A job as the API answers it: the stored job and what is computed when it is read."""

    job: Job
    next_fires: tuple[str, ...]  # RFC 3339 UTC; empty without an enabled schedule
    last_run: Run | None  # the summary of the job's newest run


def check_rules(schedule: Mapping[str, Any] | None, params: Sequence[Mapping[str, Any]]) -> None:
    """Rules of a whole job, checked on the result of every create and edit: a job with a schedule
    (enabled or not) has no required parameter without default, since a fire gives no values and could
    never start it. Raises InvalidJobInput naming the parameter."""
    if schedule is None:
        return
    for index, param in enumerate(params):
        if param["required"] and param["default"] is None:
            raise InvalidJobInput(
                f"params[{index}] ({param['name']}) is required without a default, which a job with a "
                "schedule cannot have: a scheduled run gets no values and could never start"
            )


def check_job(job: Job) -> None:
    """check_rules on a stored job merged with an edit (in the edit's transaction), and no variable both
    in `env` and in `secrets` (an edit may change either alone)."""
    check_rules(job.schedule, job.params)
    for key in job.secrets:
        if key in job.env:
            raise InvalidJobInput(f"secrets.{key}: {key} is set in env too; a variable comes from one of them")


def upcoming_fires(job: Job, now: datetime, count: int = NEXT_FIRES) -> tuple[str, ...]:
    """The job's next `count` fire times after max(now, schedule_from); none without an enabled
    schedule."""
    schedule = job.schedule
    if schedule is None or not schedule["enabled"] or job.schedule_from is None:
        return ()
    after = max(now, parse_ts(job.schedule_from))
    try:
        return tuple(format_ts(moment) for moment in next_fires(schedule["cron"], schedule["timezone"], after, count))
    except ScheduleError:  # accepted when saved; a time zone the system no longer knows fires nothing
        return ()


class JobService:
    def __init__(self, store: Store, runs: RunService, recorder: RunRecorder, *, on_change: Callable[[], None]):
        self._store = store
        self._runs = runs
        self._recorder = recorder
        self._on_change = on_change  # after a committed create, edit or delete: the ticker re-plans

    def _view(self, job: Job, last_run: Run | None) -> JobView:
        if last_run is not None:
            last_run = self._recorder.with_waiting_for(last_run)  # as GET /runs lists it
        return JobView(job=job, next_fires=upcoming_fires(job, utcnow()), last_run=last_run)

    async def create(self, values: Mapping[str, Any], *, created_by: str | None) -> JobView:
        """A new job from `values` (every editable field, normalised). Raises JobNameTaken,
        InvalidJobInput."""
        check_rules(values["schedule"], values["params"])
        values = {"secrets": {}, **values}  # callers before secrets existed leave it out
        create = partial(sql.create_job, created_by=created_by, ts=now_ts())

        def write(conn: Connection) -> Job:
            check_secrets_exist(conn, values["secrets"].values())
            return create(conn, values)

        try:
            job = await self._store.write(write)
        except NameTaken as taken:
            raise JobNameTaken(str(taken)) from None
        self._on_change()
        return self._view(job, None)

    async def get(self, job_id: int) -> JobView:
        found = await self._store.read(sql.get_job_with_last_run, job_id)
        if found is None:
            raise JobNotFound(f"no job {job_id}")
        return self._view(*found)

    async def update(self, job_id: int, changes: Mapping[str, Any]) -> JobView:
        """Change the fields in `changes` (normalised; a nested object replaces the old one whole).
        Raises JobNotFound, JobNameTaken, InvalidJobInput, UnknownSecret (for a secret `changes` names)."""
        ts = now_ts()

        def write(conn: Connection) -> Job | None:
            if "secrets" in changes:
                check_secrets_exist(conn, changes["secrets"].values())
            return sql.update_job(conn, job_id, changes, ts=ts, check=check_job)

        try:
            job = await self._store.write(write)
        except NameTaken as taken:
            raise JobNameTaken(str(taken)) from None
        if job is None:
            raise JobNotFound(f"no job {job_id}")
        self._on_change()
        return await self.get(job_id)

    async def delete(self, job_id: int, *, by: str | None) -> None:
        """Delete the job. Its runs stay (job_id null, job_name kept); its queued ones are cancelled in
        the same transaction, each with a `state cancelled` event published like a cancel's; running ones
        go on. Raises JobNotFound."""
        reason = f"job deleted by {by}" if by else "job deleted"
        cancelled = await self._store.write(
            partial(sql.delete_job, ts=now_ts(), reason=reason, outbox=self._recorder.outbox), job_id,
            on_commit=self._cancelled,
        )
        if cancelled is None:
            raise JobNotFound(f"no job {job_id}")
        self._on_change()

    def _cancelled(self, cancelled: list[tuple[Run, list[Event]]] | None) -> None:
        for result in cancelled or ():
            self._recorder.ended(result)

    async def start(
        self, job_id: int, *, params: Mapping[str, str], not_before: str | None, created_by: str | None
    ) -> Run:
        """Queue a run of the job (`trigger: "job"`) with these parameter values. Raises JobNotFound,
        params.ParamError naming a parameter that is unknown, missing or outside its choices,
        UnknownSecret naming a secret of the job deleted since."""

        def write(conn: Connection) -> tuple[Run, list[Event]]:
            # The job is read in the transaction that creates its run: it cannot be deleted in between.
            job = sql.get_job(conn, job_id)
            if job is None:
                raise JobNotFound(f"no job {job_id}")
            check_secrets_exist(conn, job.secrets.values())  # a secret deleted since the job was saved: 400
            fields = job_run_fields(job, given=params, trigger="job", created_by=created_by, not_before=not_before)
            return run_sql.create_run(conn, **fields, ts=now_ts())

        return await self._runs.create(write)

    async def fires(self, job_id: int, limit: int) -> list[Fire]:
        """The job's `limit` newest fires, newest first. Raises JobNotFound."""
        fires = await self._store.read(sql.fires_page, job_id, limit)
        if fires is None:
            raise JobNotFound(f"no job {job_id}")
        return fires

    # Last: within the class body below it, `list` would name this method, not the type.
    async def list(self) -> list[JobView]:
        """Every job, by name ignoring case."""
        return [self._view(job, last_run) for job, last_run in await self._store.read(sql.list_jobs)]
