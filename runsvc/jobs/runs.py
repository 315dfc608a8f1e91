"""What a run of a job is made of: the one place that turns a Job and its parameter values into the
fields of a new run, for a start by hand, a schedule's fire and (through the run itself) a retry."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..model import Job
from .params import environment, resolve


def job_run_fields(
    job: Job,
    *,
    given: Mapping[str, str],
    trigger: str,
    created_by: str | None,
    not_before: str | None = None,
    scheduled_for: str | None = None,
) -> dict[str, Any]:
    """Keyword arguments of store.runs.create_run (all but `ts`) for a run of `job` started with the
    parameter values `given`. The run is named after the job; its environment is the job's plus
    PARAM_<NAME> per value (a parameter wins over a job variable of the same name); a concurrency
    group without a key is the job's name. Raises params.ParamError for a bad value."""
    values = resolve(job.params, given)
    concurrency = None
    if job.concurrency is not None:
        concurrency = {"key": job.concurrency.get("key") or job.name, "limit": job.concurrency["limit"]}
    return {
        "command": list(job.command),
        "env": {**job.env, **environment(values)},
        "timeout_s": job.timeout_s,
        "name": job.name,
        "created_by": created_by,
        "labels": job.labels,
        "job_id": job.id,
        "job_name": job.name,
        "trigger": trigger,
        "not_before": not_before,
        "scheduled_for": scheduled_for,
        "params": values,
        "retries": job.retries,
        "concurrency": concurrency,
        "secrets": dict(job.secrets),
    }
