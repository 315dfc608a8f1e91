"""Jobs (SPEC §15): create, list, read, edit, delete, start a run, the recorded fires; the cron preview."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import attrs
from quart import Response, request

from ...jobs.schedule import ScheduleError, explain, next_fires
from ...jobs.service import JobView
from ...model import Job
from ...timeutil import format_ts
from ..access import current_user
from ..errors import InvalidRequest
from ..job_fields import (
    JOB_NAME_PATTERN,
    JOB_NAME_RULE,
    MAX_CRON,
    MAX_DESCRIPTION,
    MAX_TIMEZONE,
    MAX_VALUE,
    PARAMS,
    SCHEDULE,
    cron_problem,
    normalise_params,
    normalise_schedule,
    timezone_problem,
)
from ..query import int_param, refuse_unknown_params
from ..run_json import run_json
from ..run_options import (
    NOT_BEFORE,
    RETRIES,
    concurrency,
    normalise_concurrency,
    normalise_not_before,
    normalise_retries,
)
from ..types import json_response, no_content, services
from ..validation import MISSING, Field, read_json_object, string, string_map
from . import runs

PREVIEW_FIRES = 3  # fire times the cron preview shows

CREATE_FIELDS: dict[str, Field] = {
    "name": string(pattern=JOB_NAME_PATTERN, rule=JOB_NAME_RULE),
    "description": string(required=False, default="", max_length=MAX_DESCRIPTION),
    # A run's own fields follow the run rules (SPEC §15): the very fields POST /runs validates.
    **{key: runs.SUBMIT_FIELDS[key] for key in ("command", "env", "timeout_s", "labels", "secrets")},
    "params": PARAMS,
    "retries": RETRIES,
    "concurrency": concurrency(key_required=False),  # a job's runs take its name as the key
    "schedule": SCHEDULE,
}

# PATCH: any field, each optional; one left out stays as it is (a nested object given replaces the old
# one whole, its left-out fields taking their defaults).
UPDATE_FIELDS: dict[str, Field] = {
    key: attrs.evolve(field, required=False, default=MISSING) for key, field in CREATE_FIELDS.items()
}


def _param_value_problem(name: str, value: Any) -> str | None:
    for key, item in value.items():
        if len(item) > MAX_VALUE:
            return f"{name}.{key} must be at most {MAX_VALUE} characters"
        if "\0" in item:
            return f"{name}.{key} must not contain a NUL character"
    return None


_VALUES = string_map(required=False, default={})
START_FIELDS: dict[str, Field] = {
    "params": attrs.evolve(_VALUES, checks=(*_VALUES.checks, _param_value_problem)),
    "not_before": NOT_BEFORE,
}


def _job_values(body: dict[str, Any]) -> dict[str, Any]:
    """The validated fields of a job body as they are stored: nested objects normalised, defaults filled."""
    runs.check_submission(body)
    values = dict(body)
    if "timeout_s" in values:
        values["timeout_s"] = float(values["timeout_s"])
    if "labels" in values:
        values["labels"] = list(dict.fromkeys(values["labels"]))
    if "params" in values:
        values["params"] = normalise_params(values["params"])
    if "retries" in values:
        values["retries"] = normalise_retries(values["retries"])
    if "concurrency" in values:
        group = normalise_concurrency(values["concurrency"])
        values["concurrency"] = None if group is None else {"key": None, **group}  # key None: the job's name
    if "schedule" in values:
        values["schedule"] = normalise_schedule(values["schedule"])
    return values


_INTERNAL = frozenset({"schedule_from"})  # where the ticker counts fire times from: not in the API


def job_json(view: JobView) -> dict[str, Any]:
    """A job as the API answers it: the stored fields, then `next_fires` and `last_run` (a summary)."""
    job = view.job
    values = {field.name: getattr(job, field.name) for field in attrs.fields(Job) if field.name not in _INTERNAL}
    for key in ("command", "labels", "params"):
        values[key] = list(values[key])
    values["next_fires"] = list(view.next_fires)
    values["last_run"] = None if view.last_run is None else run_json(view.last_run, summary=True)
    return values


async def list_jobs() -> Response:
    refuse_unknown_params(())
    return json_response({"jobs": [job_json(view) for view in await services().jobs.list()]})


async def create_job() -> Response:
    body = await read_json_object(CREATE_FIELDS)
    view = await services().jobs.create(_job_values(body), created_by=current_user().username)
    return json_response({"job": job_json(view)}, status=201)


async def get_job(job_id: int) -> Response:
    return json_response({"job": job_json(await services().jobs.get(job_id))})


async def update_job(job_id: int) -> Response:
    body = await read_json_object(UPDATE_FIELDS)
    view = await services().jobs.update(job_id, _job_values(body))
    return json_response({"job": job_json(view)})


async def delete_job(job_id: int) -> Response:
    await services().jobs.delete(job_id, by=current_user().username)
    return no_content()


async def start_job(job_id: int) -> Response:
    body = await read_json_object(START_FIELDS)
    run = await services().jobs.start(
        job_id, params=body["params"], not_before=normalise_not_before(body["not_before"]),
        created_by=current_user().username,
    )
    return json_response({"run": run_json(run)}, status=201)


async def job_fires(job_id: int) -> Response:
    refuse_unknown_params(("limit",))
    limit = int_param("limit", default=50, minimum=1, maximum=500)
    fires = await services().jobs.fires(job_id, limit)
    return json_response({"fires": [attrs.asdict(fire) for fire in fires]})


def _text_param(name: str, *, default: str | None, max_length: int) -> str:
    value = request.args.get(name, default)
    if value is None:
        raise InvalidRequest(f"{name} is required")
    if len(value) > max_length:
        raise InvalidRequest(f"{name} must be at most {max_length} characters")
    return value


async def schedule_preview() -> Response:
    """What a cron text means while it is typed: the library's reading of it and its next fire times,
    or the library's error."""
    refuse_unknown_params(("cron", "timezone"))
    cron = _text_param("cron", default=None, max_length=MAX_CRON)
    timezone = _text_param("timezone", default="UTC", max_length=MAX_TIMEZONE)
    for problem in (timezone_problem("timezone", timezone), cron_problem("cron", cron)):
        if problem is not None:
            raise InvalidRequest(problem)
    try:
        explanation = explain(cron)
        times = next_fires(cron, timezone, datetime.now(UTC), PREVIEW_FIRES)
    except ScheduleError as error:  # checked just above; kept so a surprise is a 400, not a 500
        raise InvalidRequest(f"cron is not a valid cron expression: {error}") from None
    return json_response({"explanation": explanation, "next_fires": [format_ts(moment) for moment in times]})
