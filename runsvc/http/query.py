"""Strict query-string parameters: a clear 400 naming the parameter, never a 500."""

from __future__ import annotations

from collections.abc import Collection
from typing import overload

from quart import request

from .errors import InvalidRequest

MAX_INT64 = 2**63 - 1  # SQLite's INTEGER; every integer in a path or a query stays within it


@overload
def int_param(name: str, *, default: int, minimum: int, maximum: int | None = None) -> int: ...
@overload
def int_param(name: str, *, default: None, minimum: int, maximum: int | None = None) -> int | None: ...


def int_param(name: str, *, default: int | None, minimum: int, maximum: int | None = None) -> int | None:
    """The integer query parameter `name` (`default` when absent or empty), within the bounds."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if len(raw) > 40:  # int() of a huge string is slow (and refused past 4300 digits)
        raise InvalidRequest(f"{name} must be an integer <= {MAX_INT64}")
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"{name} must be an integer") from None
    if value < minimum:
        raise InvalidRequest(f"{name} must be >= {minimum}")
    maximum = MAX_INT64 if maximum is None else min(maximum, MAX_INT64)
    if value > maximum:
        raise InvalidRequest(f"{name} must be <= {maximum}")
    return value


def choice_list_param(name: str, choices: Collection[str]) -> list[str]:
    """A comma-separated list of values from `choices` (empty when the parameter is absent)."""
    raw = request.args.get(name)
    if not raw:
        return []
    values = [part.strip() for part in raw.split(",")]
    for value in values:
        if value not in choices:
            raise InvalidRequest(f"{name} must be one or more of {', '.join(choices)} (got {value!r})")
    return values


def refuse_unknown_params(known: Collection[str]) -> None:
    for name in request.args:
        if name not in known:
            raise InvalidRequest(f"unknown query parameter: {name}")


def check_path_ints(values: dict[str, object]) -> None:
    """Integers taken from a URL path (werkzeug's `int` converter has no upper bound)."""
    for name, value in values.items():
        if isinstance(value, int) and value > MAX_INT64:
            raise InvalidRequest(f"{name} must be <= {MAX_INT64}")
