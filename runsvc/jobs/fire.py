"""One fire of a job's schedule, decided and recorded in ONE transaction on the store's writer (SPEC §15).

`fire` runs in the writer thread: it reads the job again, decides the outcome from the job's overlap and
missed policies, claims the fire time in `job_fires` (INSERT … ON CONFLICT DO NOTHING) and only if that
recorded it, cancels the job's queued runs (overlap `cancel_previous`) and creates the run. So whatever
happens to the process, a fire time is recorded with everything it did, or not at all, and never twice.
The caller publishes what it returns after the commit (ticker.py).

The job is read inside the transaction and compared with the schedule the fire time was computed from:
a job deleted, disabled or given another schedule since then fires nothing (the ticker is woken by the
change and computes its fire times again).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import attrs

from ..model import Event, Run, state_data
from ..store import events as event_sql
from ..store import fires as fires_sql
from ..store import runs as runs_sql
from ..store.dialect import Connection
from ..store.jobs import get_job
from ..timeutil import format_ts
from .params import ParamError
from .runs import job_run_fields


@attrs.frozen
class FirePlan:
    """A fire time of a job, as the ticker computed it, and the schedule it computed it from."""

    job_id: int
    scheduled_for: datetime  # aware UTC
    schedule: dict[str, Any]
    schedule_from: str | None
    missed: bool  # handled more than MISSED_AFTER_S after its time: the schedule's `missed` decides


@attrs.frozen
class FireResult:
    """What a fire did, for the caller to publish after the commit."""

    outcome: str | None  # one of fires_sql.OUTCOMES; None: nothing recorded (job gone or changed, or done before)
    started: tuple[Run, list[Event]] | None = None  # the run created, with its events
    cancelled: tuple[tuple[Run, list[Event]], ...] = ()  # queued runs cancelled (cancel_previous)
    stop: tuple[int, ...] = ()  # running runs to stop (cancel_previous)
    reason: str = ""  # why `cancelled` and `stop` end


NOTHING = FireResult(outcome=None)


def fire(conn: Connection, plan: FirePlan, ts: str, *, outbox: runs_sql.RunEnded) -> FireResult:
    """Decide, record and carry out one fire (writer thread, inside the write's transaction)."""
    job = get_job(conn, plan.job_id)
    if (
        job is None or job.schedule is None or not job.schedule.get("enabled", True)
        or job.schedule != plan.schedule or job.schedule_from != plan.schedule_from
    ):
        return NOTHING
    scheduled_for = format_ts(plan.scheduled_for)
    active = fires_sql.active_runs(conn, job.id)
    overlap = job.schedule.get("overlap", "skip")
    if plan.missed and job.schedule.get("missed", "run_once") == "skip":
        outcome = "skipped_missed"
    elif active and overlap == "skip":
        outcome = "skipped_overlap"
    elif active and overlap == "cancel_previous":
        outcome = "cancelled_previous"
    else:
        outcome = "started"
    if not fires_sql.insert_fire(conn, job.id, scheduled_for, outcome, ts):
        return NOTHING  # recorded before: a restart in the middle of this fire
    if outcome.startswith("skipped"):
        return FireResult(outcome)
    cancelled: list[tuple[Run, list[Event]]] = []
    stop: list[int] = []
    reason = f"cancelled by the schedule's fire at {scheduled_for} (overlap cancel_previous)"
    if outcome == "cancelled_previous":
        for run_id, status in active:
            if status == "running":
                stop.append(run_id)  # the scheduler stops it after the commit, as POST /runs/{id}/cancel does
                continue
            run = runs_sql.finish(
                conn, run_id, from_status="queued", status="cancelled", exit_code=None, ts=ts, outbox=outbox,
                appending=1,
            )
            events = event_sql.append_now(conn, run_id, [("state", state_data("cancelled", None, reason))], ts)
            cancelled.append((attrs.evolve(run, last_seq=events[-1]["seq"]), events))
    try:
        fields = job_run_fields(job, given={}, trigger="schedule", created_by=None, scheduled_for=scheduled_for)
    except ParamError as error:
        started = _unstartable(conn, job_run_fields(
            attrs.evolve(job, params=()), given={}, trigger="schedule", created_by=None, scheduled_for=scheduled_for,
        ), str(error), ts, outbox)
    else:
        started = runs_sql.create_run(conn, **fields, ts=ts)
    fires_sql.set_fire_run(conn, job.id, scheduled_for, started[0].id)
    return FireResult(outcome, started, tuple(cancelled), tuple(stop), reason)


def _unstartable(
    conn: Connection, fields: dict[str, Any], why: str, ts: str, outbox: runs_sql.RunEnded
) -> tuple[Run, list[Event]]:
    """A fire whose run cannot start (its job has a required parameter without default): the fire is
    still recorded, with a run that ends `failed` at once and says why, as a command that cannot be
    spawned does (SPEC §4). The schedule goes on."""
    run, events = runs_sql.create_run(conn, **fields, ts=ts)
    run = runs_sql.finish(
        conn, run.id, from_status="queued", status="failed", exit_code=None, ts=ts, outbox=outbox, appending=2
    )
    events = events + event_sql.append_now(conn, run.id, [
        ("system", f"the schedule could not start this run: {why}"),
        ("state", state_data("failed", None, "could not start")),
    ], ts)
    return attrs.evolve(run, last_seq=events[-1]["seq"]), events
