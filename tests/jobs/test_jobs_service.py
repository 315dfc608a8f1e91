"""The jobs service (SPEC §15): `on_change` after each committed change only, next fire times counted from
max(now, schedule_from), the rule against schedules that could never start their job."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import trio

from runsvc.jobs.service import InvalidJobInput, JobNameTaken, JobNotFound, JobService, upcoming_fires
from runsvc.model import Job

DAILY = {"cron": "@daily", "timezone": "UTC", "overlap": "skip", "enabled": True, "missed": "run_once"}


def values(name="job", **changes):
    return {"name": name, "description": "", "command": ["true"], "env": {}, "timeout_s": 60.0, "labels": [],
            "params": [], "retries": None, "concurrency": None, "schedule": None, **changes}


def job(schedule, schedule_from):
    return Job(id=1, name="j", description="", command=("true",), env={}, timeout_s=1.0, labels=(), params=(),
               retries=None, concurrency=None, schedule=schedule, schedule_from=schedule_from,
               created_at="", created_by=None, updated_at="")


async def test_on_change_follows_every_committed_change_and_nothing_else(server):
    """The callback is called once after each create, edit and delete that committed, never for a refused
    one or a read."""
    calls = []
    svc = server.services
    jobs = JobService(svc.store, svc.runs, svc.recorder, on_change=lambda: calls.append(1))
    required = [{"name": "ref", "description": "", "default": None, "required": True, "choices": None}]
    with trio.fail_after(10):
        view = await jobs.create(values(), created_by="olga")
        assert len(calls) == 1
        with pytest.raises(JobNameTaken):
            await jobs.create(values("JOB"), created_by="olga")
        with pytest.raises(InvalidJobInput, match=r"^params\[0\] \(ref\) is required without a default"):
            await jobs.create(values("other", schedule=DAILY, params=required), created_by="olga")
        await jobs.update(view.job.id, {"schedule": DAILY})
        assert len(calls) == 2
        with pytest.raises(InvalidJobInput):
            await jobs.update(view.job.id, {"params": required})
        with pytest.raises(JobNotFound):
            await jobs.update(999, {"description": "x"})
        await jobs.get(view.job.id)
        await jobs.list()
        await jobs.delete(view.job.id, by="olga")
        with pytest.raises(JobNotFound):
            await jobs.delete(view.job.id, by="olga")
    assert len(calls) == 3


def test_next_fires_count_from_schedule_from_when_it_is_later_than_now():
    """Fire times start after max(now, schedule_from); there are none without an enabled schedule."""
    now = datetime(2026, 12, 1, 10, 30, tzinfo=UTC)
    assert upcoming_fires(job(DAILY, "2026-11-01T00:00:00.000000Z"), now) == (
        "2026-12-02T00:00:00.000000Z", "2026-12-03T00:00:00.000000Z", "2026-12-04T00:00:00.000000Z",
        "2026-12-05T00:00:00.000000Z", "2026-12-06T00:00:00.000000Z",
    )
    assert upcoming_fires(job(DAILY, "2026-12-10T00:00:00.000000Z"), now, 2) == (
        "2026-12-11T00:00:00.000000Z", "2026-12-12T00:00:00.000000Z",
    )
    assert upcoming_fires(job({**DAILY, "enabled": False}, "2026-11-01T00:00:00.000000Z"), now) == ()
    assert upcoming_fires(job(None, None), now) == ()
