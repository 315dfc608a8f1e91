"""The run options of SPEC §15 that plain runs and jobs share: `retries`, `concurrency`, `not_before`.

Each is a validation `Field` (its JSON Schema goes into the OpenAPI document) plus a `normalise_*`
function that turns an accepted value into what is stored and answered, every default filled in:

    body = await read_json_object({..., "retries": RETRIES, "concurrency": concurrency(), "not_before": NOT_BEFORE})
    retries = normalise_retries(body["retries"])

Nested objects are strict like bodies: an unknown key is a 400 naming its path (`retries.backof`), and
so is a broken rule (`retries.max must be <= 10`).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

import attrs

from ..timeutil import format_ts
from .errors import InvalidRequest
from .validation import MISSING, Field, body_schema, integer, number, string, string_list

RETRY_ON = ("failed", "timed_out")  # the statuses a run may be retried after
BACKOFFS = ("fixed", "exponential")
MAX_RETRIES = 10
MAX_RETRY_DELAY_S = 86_400  # 1 day
DEFAULT_RETRY_DELAY_S = 10
MAX_CONCURRENCY_KEY = 200  # characters
MAX_CONCURRENCY_LIMIT = 1000


def _on_field() -> Field:
    """`retries.on`: a non-empty list of RETRY_ON statuses."""
    base = string_list(required=False, default=list(RETRY_ON), non_empty=True)

    def known(name: str, value: Any) -> str | None:
        for index, item in enumerate(value):
            if item not in RETRY_ON:
                return f"{name}[{index}] must be one of {', '.join(RETRY_ON)}"
        return None

    # Duplicates are accepted (and folded by normalise_retries), so no uniqueItems here.
    schema = {**base.schema, "items": {"enum": list(RETRY_ON)}}
    return attrs.evolve(base, checks=(*base.checks, known), schema=schema)


RETRIES_FIELDS: dict[str, Field] = {
    "max": integer(required=False, default=0, minimum=0, maximum=MAX_RETRIES),
    "delay_s": number(required=False, default=DEFAULT_RETRY_DELAY_S, minimum=0, maximum=MAX_RETRY_DELAY_S),
    "backoff": string(required=False, default="exponential", choices=BACKOFFS),
    "on": _on_field(),
}


def _concurrency_fields(key_required: bool) -> dict[str, Field]:
    return {
        "key": string(required=key_required, min_length=1, max_length=MAX_CONCURRENCY_KEY),
        "limit": integer(required=False, default=1, minimum=1, maximum=MAX_CONCURRENCY_LIMIT),
    }


def _check_object(name: str, value: Any, fields: Mapping[str, Field]) -> str | None:
    """The first broken rule of a nested object, its fields named by path (`retries.max`), or None."""
    if not isinstance(value, dict):
        return f"{name} must be an object"
    for key in value:
        if key not in fields:
            return f"unknown field: {name}.{key}"
    for key, field in fields.items():
        path = f"{name}.{key}"
        if key not in value:
            if field.required:
                return f"{path} is required"
            continue
        item = value[key]
        if item is None:
            if field.nullable:
                continue
            return f"{path} must be {field.kind}"
        for check in (field.accepts, *field.checks):
            message = check(path, item)
            if message is not None:
                return message
    return None


def _object_field(fields: Mapping[str, Field]) -> Field:
    """An optional, nullable nested object (null and left out are the same: none); default None."""
    return Field(
        kind="an object",
        accepts=lambda name, value: _check_object(name, value, fields),
        required=False,
        nullable=True,
        default=None,
        schema=body_schema(fields),
    )


def _filled(value: Mapping[str, Any], fields: Mapping[str, Field]) -> dict[str, Any]:
    """`value` (already checked) with every left-out field's default, in the fields' order."""
    result: dict[str, Any] = {}
    for key, field in fields.items():
        if key in value and value[key] is not None:
            result[key] = value[key]
        elif field.default is not MISSING:
            result[key] = field.default
    return result


RETRIES = _object_field(RETRIES_FIELDS)


def normalise_retries(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """`{max, delay_s, backoff, on}` with defaults filled in, `on` in RETRY_ON's order without
    duplicates; None stays None (no retries)."""
    if value is None:
        return None
    result = _filled(value, RETRIES_FIELDS)
    result["on"] = [status for status in RETRY_ON if status in result["on"]]
    return result


def concurrency(*, key_required: bool = True) -> Field:
    """The `concurrency` field: `{key, limit}`. `key` is required on plain runs; a job leaves it
    optional (`key_required=False`), and its runs then take the job's name as the key."""
    return _object_field(_concurrency_fields(key_required))


def normalise_concurrency(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """`{key, limit}` with `limit` filled in (1); `key` is absent only where it was optional and left
    out (a job's: its runs use the job's name). None stays None (no group)."""
    if value is None:
        return None
    return _filled(value, _concurrency_fields(key_required=False))


# RFC 3339 date-time (section 5.6): a UTC offset is required ("Z" or ±hh:mm); "T" or a space between.
_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})"
)


def parse_rfc3339(name: str, text: str) -> str:
    """The fixed-width UTC text (timeutil) of the moment `text` names, or InvalidRequest naming `name`.
    Fractions past microseconds are cut."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise InvalidRequest(
            f"{name} must be an RFC 3339 date-time with a UTC offset (e.g. 2026-12-01T08:00:00Z)"
        )
    date, clock, fraction, offset = match.groups()
    micro = f".{(fraction or '0')[:6]:0<6}"
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        text_utc = format_ts(dt.datetime.fromisoformat(f"{date}T{clock}{micro}{offset}"))
    except (ValueError, OverflowError):
        text_utc = ""
    if len(text_utc) != _TS_WIDTH:  # invalid, out of range, or a year before 1000 (not fixed width)
        raise InvalidRequest(f"{name} must be a date-time between years 1000 and 9999 ({text!r} is not)")
    return text_utc


_TS_WIDTH = len("2026-01-01T00:00:00.000000Z")


def _not_before_problem(name: str, value: Any) -> str | None:
    if not isinstance(value, str):
        return f"{name} must be a string"
    try:
        parse_rfc3339(name, value)
    except InvalidRequest as exc:
        return exc.message
    return None


NOT_BEFORE = Field(
    kind="a string",
    accepts=_not_before_problem,
    required=False,
    nullable=True,
    default=None,
    schema={
        "type": "string",
        "format": "date-time",
        "description": "RFC 3339 with a UTC offset; the run is not started before it (in the past: at once)",
    },
)


def normalise_not_before(value: str | None, *, name: str = "not_before") -> str | None:
    """The fixed-width UTC text of timeutil for an accepted RFC 3339 time; None stays None."""
    return None if value is None else parse_rfc3339(name, value)
