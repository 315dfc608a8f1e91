"""A job's parameters: the values a run gets, and how they reach the child (SPEC §15).

Values reach the child only as environment variables PARAM_<NAME>, never spliced into the command, so
a value cannot inject anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class ParamError(ValueError):
    """A parameter value that cannot start the job; `param` names the parameter."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


def resolve(spec: Sequence[Mapping[str, Any]], given: Mapping[str, str]) -> dict[str, str]:
    """The parameter values of a run of a job with parameters `spec` (normalised), started with
    `given`: defaults filled in, an optional one without default and not given left out. Raises
    ParamError for an unknown parameter, a missing required one, or a value outside `choices`."""
    known = {param["name"]: param for param in spec}
    for name in given:
        if name not in known:
            raise ParamError(name, f"unknown parameter {name!r}")
    values: dict[str, str] = {}
    for name, param in known.items():
        value = given.get(name, param.get("default"))
        if value is None:
            if param.get("required"):
                raise ParamError(name, f"parameter {name!r} is required")
            continue
        choices = param.get("choices")
        if choices is not None and value not in choices:
            raise ParamError(name, f"parameter {name!r} must be one of {', '.join(choices)}")
        values[name] = value
    return values


def environment(values: Mapping[str, str]) -> dict[str, str]:
    """The variables a run's child gets for these parameter values."""
    return {f"PARAM_{name.upper()}": value for name, value in values.items()}
