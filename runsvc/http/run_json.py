"""A run's JSON, made in one place from the `Run` type: every answer that carries a run, the runs feed's
frames, and (read back) the CLI. One key per field of `Run`, in its order."""

from __future__ import annotations

import json
from typing import Any

import attrs

from ..model import Run


def _not_env(attribute: attrs.Attribute[Any], value: Any) -> bool:
    return attribute.name != "env"


def _json_value(instance: Any, attribute: attrs.Attribute[Any] | None, value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value  # a JSON array either way; a list compares as one


# Fields whose JSON key is not their Python name (`try` is a keyword).
_KEYS = {field.name: field.metadata.get("json", field.name) for field in attrs.fields(Run)}


def run_json(run: Run, *, summary: bool = False) -> dict[str, Any]:
    """The run as a JSON object; a summary (lists, the runs feed) leaves out `env`, which can be 64 KiB
    a run (SPEC §14)."""
    values = attrs.asdict(run, filter=_not_env if summary else None, value_serializer=_json_value)
    return {_KEYS[name]: value for name, value in values.items()}


def feed_frame(run: Run) -> str:
    """A frame of the runs feed: the run's summary, as `GET /runs` lists it."""
    return json.dumps({"type": "run", "run": run_json(run, summary=True)}, ensure_ascii=False)


def run_from_json(value: dict[str, Any]) -> Run:
    """A run (or a summary, without `env`) from its JSON object, as the CLI reads answers; keys of
    fields this version does not know are ignored. Raises KeyError naming a missing field."""
    fields: dict[str, Any] = {}
    for field in attrs.fields(Run):
        key = _KEYS[field.name]
        if key in value:
            item = value[key]
            fields[field.name] = tuple(item) if isinstance(item, list) else item
        elif field.name == "env":
            fields["env"] = None  # a summary
        elif field.default is attrs.NOTHING:
            raise KeyError(field.name)
    return Run(**fields)
