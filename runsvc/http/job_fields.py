"""The nested objects of a job body (SPEC §15): `params` and `schedule` — validation Fields (their JSON
Schema goes into the OpenAPI document) and `normalise_*` functions that fill every default in, the same
way run_options.py does for `retries` and `concurrency`:

    body = await read_json_object({..., "params": PARAMS, "schedule": SCHEDULE})
    params, schedule = normalise_params(body["params"]), normalise_schedule(body["schedule"])

A broken rule is a 400 naming the field by its path: `params[2].default`, `schedule.cron`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs

from ..jobs.schedule import ScheduleError, fires, zone
from .run_options import _check_object, _filled, _object_field  # the nested-object helpers of run options
from .validation import Check, Field, body_schema, boolean, string, string_list

JOB_NAME_PATTERN = r"[A-Za-z0-9_.-]{1,100}"
JOB_NAME_RULE = "1-100 characters of A-Z a-z 0-9 _ . -"
MAX_DESCRIPTION = 2000  # characters, of a job and of each parameter
MAX_PARAMS = 50
PARAM_NAME_PATTERN = r"[a-z][a-z0-9_]{0,63}"
MAX_VALUE = 4096  # characters of a parameter value (a default, a choice, a value given at start)
VALUE_PATTERN = "[^\x00]*"  # a value becomes an environment variable: no NUL
VALUE_RULE = "free of NUL characters"
MAX_CHOICES = 100
OVERLAPS = ("skip", "allow", "cancel_previous")
MISSED = ("run_once", "skip")
MAX_CRON = 200  # characters; a cron line is far shorter
MAX_TIMEZONE = 100  # characters; IANA names are at most ~32


def value_field(*, required: bool = True, nullable: bool = False, default: Any = None) -> Field:
    """A parameter value: a string of at most MAX_VALUE characters without NUL."""
    if required:
        return string(max_length=MAX_VALUE, pattern=VALUE_PATTERN, rule=VALUE_RULE)
    return string(required=False, nullable=nullable, default=default, max_length=MAX_VALUE,
                  pattern=VALUE_PATTERN, rule=VALUE_RULE)


PARAM_FIELDS: dict[str, Field] = {
    "name": string(pattern=PARAM_NAME_PATTERN, rule="a lowercase letter then up to 63 of a-z 0-9 _"),
    "description": string(required=False, default="", max_length=MAX_DESCRIPTION),
    "default": value_field(required=False, nullable=True, default=None),
    "required": boolean(required=False, default=False),
    "choices": string_list(
        required=False, nullable=True, default=None, non_empty=True, max_items=MAX_CHOICES,
        item_pattern=f"[^\x00]{{0,{MAX_VALUE}}}", item_rule=f"at most {MAX_VALUE} characters without NUL",
    ),
}


def _params_problem(name: str, value: Any) -> str | None:
    """The first broken rule of a `params` list, each parameter named by its path, or None."""
    if not isinstance(value, list):
        return f"{name} must be a list of objects"
    if len(value) > MAX_PARAMS:
        return f"{name} must hold at most {MAX_PARAMS} parameters"
    seen: set[str] = set()
    for index, param in enumerate(value):
        path = f"{name}[{index}]"
        problem = _check_object(path, param, PARAM_FIELDS)
        if problem is not None:
            return problem
        if param["name"] in seen:
            return f"{path}.name {param['name']!r} is not unique in the job"
        seen.add(param["name"])
        default, choices = param.get("default"), param.get("choices")
        if default is not None and choices is not None and default not in choices:
            return f"{path}.default must be one of its choices"
    return None


PARAMS = Field(
    kind="a list of objects",
    accepts=_params_problem,
    required=False,
    default=[],
    schema={"type": "array", "maxItems": MAX_PARAMS, "items": body_schema(PARAM_FIELDS)},
)


def normalise_params(value: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each parameter as `{name, description, default, required, choices}`, defaults filled in (description
    "", default null, required false, choices null), choices without duplicates."""
    params = []
    for param in value:
        filled = _filled(param, PARAM_FIELDS)
        if filled["choices"] is not None:
            filled["choices"] = list(dict.fromkeys(filled["choices"]))
        params.append(filled)
    return params


def cron_problem(name: str, value: str) -> str | None:
    """The library's complaint about a cron text, naming the field; None if it is good."""
    try:
        fires(value, "UTC", datetime.now(UTC))
    except ScheduleError as error:
        return f"{name} is not a valid cron expression: {error}"
    return None


def timezone_problem(name: str, value: str) -> str | None:
    """A time zone that is not a known IANA name, naming the field; None if it is known."""
    try:
        zone(value)
    except ScheduleError as error:
        return f"{name}: {error}"
    return None


def _with_check(field: Field, check: Check) -> Field:
    return attrs.evolve(field, checks=(*field.checks, check))


SCHEDULE_FIELDS: dict[str, Field] = {
    "cron": _with_check(string(max_length=MAX_CRON), cron_problem),
    "timezone": _with_check(string(required=False, default="UTC", max_length=MAX_TIMEZONE), timezone_problem),
    "overlap": string(required=False, default="skip", choices=OVERLAPS),
    "enabled": boolean(required=False, default=True),
    "missed": string(required=False, default="run_once", choices=MISSED),
}

SCHEDULE = _object_field(SCHEDULE_FIELDS)  # optional, null: none


def normalise_schedule(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """`{cron, timezone, overlap, enabled, missed}` with defaults filled in and the cron text trimmed;
    None stays None (no schedule)."""
    if value is None:
        return None
    schedule = _filled(value, SCHEDULE_FIELDS)
    schedule["cron"] = schedule["cron"].strip()
    return schedule
