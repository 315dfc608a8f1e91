"""Retries (SPEC §15): whether a run that just ended gets a next try, and when that try may start.

Pure functions of the run and its `retries` ({max, delay_s, backoff, on}, normalised when stored). The
recorder calls `next_try` inside the transaction that records a run's end (recorder.finish), so the end
and the next try commit together: a crash loses or doubles neither.
"""

from __future__ import annotations

import random
from typing import Any

from .model import Run

MAX_BACKOFF_S = 3600  # exponential backoff grows up to 1 h (never below delay_s itself)
JITTER = 0.10  # each delay is lengthened by 0 to 10 %, so retries of runs that failed together spread


def retry_delay_s(retries: dict[str, Any], failed_try: int, rng: random.Random | None = None) -> float:
    """Seconds before the try after `failed_try` (1 for a first try) may start: `delay_s` (fixed), or
    delay_s × 2^(failed_try − 1) capped at MAX_BACKOFF_S (exponential; the first retry waits delay_s,
    and a delay_s above the cap is kept as it is), then plus 0–10 % jitter."""
    delay = float(retries["delay_s"])
    if retries["backoff"] == "exponential":
        delay = min(delay * 2 ** (failed_try - 1), max(float(MAX_BACKOFF_S), delay))
    return delay * (1 + JITTER * (rng or random).random())


def wants_retry(run: Run) -> bool:
    """Whether `run`, which has just ended, gets a next try: its status is one its `retries.on` names
    and it has tries left (`try` ≤ max). Never a cancelled or interrupted run (`on` cannot name them),
    nor a run of a job deleted since (job_name kept, job_id gone)."""
    retries = run.retries
    if retries is None or run.status not in ("failed", "timed_out") or run.status not in retries["on"]:
        return False
    if run.job_name is not None and run.job_id is None:
        return False
    return run.try_number <= int(retries["max"])


def next_try_fields(run: Run, *, not_before: str) -> dict[str, Any]:
    """Keyword arguments of store.runs.create_run (all but `ts`) for the next try of `run`: the same
    spec, `trigger: "retry"`, `retry_of` the run, `try` one more."""
    assert run.env is not None  # the run as its end was recorded: read whole
    return {
        "command": run.command,
        "env": dict(run.env),
        "timeout_s": run.timeout_s,
        "name": run.name,
        "created_by": run.created_by,
        "labels": run.labels,
        "job_id": run.job_id,
        "job_name": run.job_name,
        "trigger": "retry",
        "retry_of": run.id,
        "try_number": run.try_number + 1,
        "not_before": not_before,
        "params": dict(run.params),
        "retries": run.retries,
        "concurrency": run.concurrency,
        "secrets": dict(run.secrets),
    }
