"""Strict JSON request bodies: a body is one JSON object whose fields are declared up front.

    body = await read_json_object({
        "command": string_list(non_empty=True),
        "env": string_map(required=False, default={}),
        "timeout_s": number(required=False, default=3600, minimum=1, maximum=7 * 86400),
        "name": string(required=False, nullable=True, default=None),
    })

Anything else is a 400 `invalid_request` whose message names the field and the broken rule: malformed
JSON, a body that is not an object, a wrong type, a missing required field, an unknown field. An
optional field without a default is absent from the result when the client left it out (PATCH).
The body is read (and the size limit enforced, 413) before any of these checks.

Each field also carries the JSON Schema of what it accepts (`Field.schema`), built from the same
arguments as its checks: the OpenAPI document's request bodies are made from it (`body_schema`), so they
cannot drift from what is enforced. A rule a field cannot state (a byte size of JSON, a reserved
variable) is the handler's, after validation.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from quart import request

from .errors import InvalidRequest


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()  # "no default": the field is absent from the result when left out

# A check gets the field's name and its (type-checked) value; it returns an error message or None.
Check = Callable[[str, Any], "str | None"]
Schema = dict[str, Any]


@attrs.frozen
class Field:
    """One field of a request body: what type it must have, whether it may be left out or null."""

    kind: str  # what the value must be, for messages: "a string", "a list of strings"
    accepts: Callable[[str, Any], str | None]  # type check; an error message or None
    required: bool = True
    nullable: bool = False
    default: Any = MISSING
    checks: tuple[Check, ...] = ()
    schema: Schema = attrs.field(factory=dict)  # JSON Schema of an accepted value other than null


def _simple_type(kind: str, test: Callable[[Any], bool]) -> Callable[[str, Any], str | None]:
    def accepts(name: str, value: Any) -> str | None:
        return None if test(value) else f"{name} must be {kind}"

    return accepts


def _field(kind: str, accepts: Callable[[str, Any], str | None], required: bool, nullable: bool,
           default: Any, checks: list[Check], schema: Schema) -> Field:
    if required and default is not MISSING:
        raise ValueError("a required field cannot have a default")
    return Field(kind, accepts, required, nullable, default, tuple(checks), schema)


def _anchored(pattern: str) -> str:
    """A pattern checked with fullmatch, as a JSON Schema pattern (which only needs to match somewhere)."""
    return f"^(?:{pattern})$"


def _string_checks(min_length: int | None, max_length: int | None, pattern: str | None, rule: str | None,
                   choices: tuple[str, ...] | None, schema: Schema, what: str = "{n}", each: str = "") -> list[Check]:
    """The checks of a string (or of each string of a list: `what`/`each` word their messages), and the
    same rules written into `schema`."""
    checks: list[Check] = []
    if min_length is not None:
        checks.append(lambda n, v: None if len(v) >= min_length else
                      f"{what.format(n=n)} must be at least {min_length} characters{each}")
        schema["minLength"] = min_length
    if max_length is not None:
        checks.append(lambda n, v: None if len(v) <= max_length else
                      f"{what.format(n=n)} must be at most {max_length} characters{each}")
        schema["maxLength"] = max_length
    if pattern is not None:
        compiled = re.compile(pattern)
        broken = f"be {rule}" if rule else f"match {pattern}"
        checks.append(lambda n, v: None if compiled.fullmatch(v) else f"{what.format(n=n)} must {broken}{each}")
        schema["pattern"] = _anchored(pattern)
    if choices is not None:
        checks.append(lambda n, v: None if v in choices else
                      f"{what.format(n=n)} must be one of {', '.join(choices)}{each}")
        schema["enum"] = list(choices)
    return checks


def string(
    *,
    required: bool = True,
    nullable: bool = False,
    default: Any = MISSING,
    min_length: int | None = None,
    max_length: int | None = None,
    pattern: str | None = None,
    rule: str | None = None,
    choices: tuple[str, ...] | None = None,
) -> Field:
    """`pattern` must match the whole string; `rule` says it in words for the error message ("{name} must
    be {rule}"; without it: "{name} must match {pattern}")."""
    schema: Schema = {"type": "string"}
    checks = _string_checks(min_length, max_length, pattern, rule, choices, schema)
    return _field("a string", _simple_type("a string", lambda v: isinstance(v, str)), required, nullable,
                  default, checks, schema)


def boolean(*, required: bool = True, nullable: bool = False, default: Any = MISSING) -> Field:
    return _field("a boolean", _simple_type("a boolean", lambda v: isinstance(v, bool)), required,
                  nullable, default, [], {"type": "boolean"})


def _bounds(minimum: float | None, maximum: float | None, schema: Schema,
            exclusive_minimum: float | None = None) -> list[Check]:
    checks: list[Check] = []
    if minimum is not None:
        checks.append(lambda n, v: None if v >= minimum else f"{n} must be >= {minimum}")
        schema["minimum"] = minimum
    if exclusive_minimum is not None:
        checks.append(lambda n, v: None if v > exclusive_minimum else f"{n} must be > {exclusive_minimum}")
        schema["exclusiveMinimum"] = exclusive_minimum
    if maximum is not None:
        checks.append(lambda n, v: None if v <= maximum else f"{n} must be <= {maximum}")
        schema["maximum"] = maximum
    return checks


def integer(
    *,
    required: bool = True,
    nullable: bool = False,
    default: Any = MISSING,
    minimum: int | None = None,
    maximum: int | None = None,
) -> Field:
    test = _simple_type("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool))
    schema: Schema = {"type": "integer"}
    return _field("an integer", test, required, nullable, default, _bounds(minimum, maximum, schema), schema)


def number(
    *,
    required: bool = True,
    nullable: bool = False,
    default: Any = MISSING,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: float | None = None,
) -> Field:
    """An integer or a finite float (JSON has no NaN or infinity, and the parser refuses them)."""
    test = _simple_type(
        "a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    )
    schema: Schema = {"type": "number"}
    checks = _bounds(minimum, maximum, schema, exclusive_minimum)
    return _field("a number", test, required, nullable, default, checks, schema)


def string_list(
    *,
    required: bool = True,
    nullable: bool = False,
    default: Any = MISSING,
    non_empty: bool = False,
    max_items: int | None = None,
    item_pattern: str | None = None,
    item_rule: str | None = None,
) -> Field:
    """A list of strings; `item_pattern` must match each whole item (`item_rule` says it in words:
    "{name} must be {rule} each")."""
    def accepts(name: str, value: Any) -> str | None:
        if not isinstance(value, list):
            return f"{name} must be a list of strings"
        for index, item in enumerate(value):
            if not isinstance(item, str):
                return f"{name}[{index}] must be a string"
        return None

    items: Schema = {"type": "string"}
    schema: Schema = {"type": "array", "items": items}
    checks: list[Check] = []
    if non_empty:
        checks.append(lambda n, v: None if v else f"{n} must not be empty")
        schema["minItems"] = 1
    if max_items is not None:
        checks.append(lambda n, v: None if len(v) <= max_items else f"{n} must hold at most {max_items} items")
        schema["maxItems"] = max_items
    item_checks = _string_checks(None, None, item_pattern, item_rule, None, items, each=" each")
    checks.extend(_each(check) for check in item_checks)
    return _field("a list of strings", accepts, required, nullable, default, checks, schema)


def _each(check: Check) -> Check:
    """`check` applied to every item of a list; the first broken one's message."""

    def each(name: str, values: Any) -> str | None:
        for value in values:
            message = check(name, value)
            if message is not None:
                return message
        return None

    return each


def string_map(*, required: bool = True, nullable: bool = False, default: Any = MISSING) -> Field:
    def accepts(name: str, value: Any) -> str | None:
        if not isinstance(value, dict):
            return f"{name} must be an object of strings"
        for key, item in value.items():
            if not isinstance(item, str):
                return f"{name}.{key} must be a string"
        return None

    schema: Schema = {"type": "object", "additionalProperties": {"type": "string"}}
    return _field("an object of strings", accepts, required, nullable, default, [], schema)


def field_schema(field: Field) -> Schema:
    """The JSON Schema of what `field` accepts: its value's, or null too when it is nullable; with its
    default when it has one."""
    schema: Schema = {"anyOf": [field.schema, {"type": "null"}]} if field.nullable else dict(field.schema)
    if field.default is not MISSING:
        schema["default"] = field.default
    return schema


def body_schema(fields: Mapping[str, Field]) -> Schema:
    """The JSON Schema of a request body that `validate_object(body, fields)` accepts."""
    return {
        "type": "object",
        "properties": {name: field_schema(field) for name, field in fields.items()},
        "required": [name for name, field in fields.items() if field.required],
        "additionalProperties": False,
    }


def parse_json(data: bytes) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity, no duplicate keys."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("request body must be UTF-8") from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=_no_duplicates)
        _refuse_lone_surrogates(value)
        return value
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"request body must be valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise InvalidRequest(f"request body must be valid JSON ({exc})") from None
    except RecursionError:
        raise InvalidRequest("request body must be valid JSON (nested too deeply)") from None


def _refuse_lone_surrogates(value: Any, where: str = "request body") -> None:
    """A `\\ud800` escape decodes to a string that cannot be encoded as UTF-8 (nor stored)."""
    if isinstance(value, str):
        if _SURROGATE.search(value):
            raise InvalidRequest(f"{where} must not contain lone surrogates (\\ud800-\\udfff)")
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_lone_surrogates(key, where)
            _refuse_lone_surrogates(item, f"{key}" if where == "request body" else f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_lone_surrogates(item, f"{where}[{index}]")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _refuse_constant(name: str) -> Any:
    raise InvalidRequest(f"request body must be valid JSON ({name} is not a JSON value)")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidRequest(f"duplicate field: {key}")
        result[key] = value
    return result


def nul_place(name: str, value: Any) -> str | None:
    """Where the first NUL character in `value`'s strings is, as a field path (`command[1]`, `env.HOME`,
    `env key 'A\\x00'`), or None. Any depth."""
    if isinstance(value, str):
        return name if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in str(key):
                return f"{name} key {key!r}"
            place = nul_place(f"{name}.{key}", item)
            if place is not None:
                return place
    if isinstance(value, list):
        for index, item in enumerate(value):
            place = nul_place(f"{name}[{index}]", item)
            if place is not None:
                return place
    return None


def validate_object(body: Any, fields: Mapping[str, Field]) -> dict[str, Any]:
    """Check a parsed body against `fields`; return the fields given (plus defaults) or raise 400."""
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    unknown = [name for name in body if name not in fields]
    if unknown:
        raise InvalidRequest(f"unknown field: {unknown[0]}")
    result: dict[str, Any] = {}
    for name, field in fields.items():
        if name not in body:
            if field.required:
                raise InvalidRequest(f"{name} is required")
            if field.default is not MISSING:
                result[name] = field.default
            continue
        value = body[name]
        if value is None:
            if not field.nullable:
                raise InvalidRequest(f"{name} must be {field.kind}")
            result[name] = None
            continue
        for check in (field.accepts, *field.checks):
            message = check(name, value)
            if message is not None:
                raise InvalidRequest(message)
        place = nul_place(name, value)
        if place is not None:
            # After the field's own checks, which may say more. No text a runsvc field holds can carry NUL: a
            # process cannot take it in an argument or its environment, and PostgreSQL's text refuses it.
            raise InvalidRequest(f"{place} must not contain a NUL character")
        result[name] = value
    return result


async def read_json_object(fields: Mapping[str, Field]) -> dict[str, Any]:
    """Read the current request's body (413 past the size limit), parse it strictly, validate it.

    The body must be sent as `Content-Type: application/json`: a cross-site HTML form cannot send that
    without a CORS preflight, which keeps unauthenticated endpoints such as login out of reach of
    other sites' forms.
    """
    data = await request.get_data(cache=False, as_text=False)  # raises RequestEntityTooLarge: 413 payload_too_large
    if request.mimetype != "application/json":
        raise InvalidRequest("request body must be JSON sent as Content-Type: application/json")
    assert isinstance(data, bytes)  # as_text=False
    return validate_object(parse_json(data), fields)


# ---- nested objects (retries, concurrency, schedule, a job's parameters) -----------------------------


def check_object(name: str, value: Any, fields: Mapping[str, Field]) -> str | None:
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


def object_field(fields: Mapping[str, Field]) -> Field:
    """An optional, nullable nested object (null and left out are the same: none); default None."""
    return Field(
        kind="an object",
        accepts=lambda name, value: check_object(name, value, fields),
        required=False,
        nullable=True,
        default=None,
        schema=body_schema(fields),
    )


def filled(value: Mapping[str, Any], fields: Mapping[str, Field]) -> dict[str, Any]:
    """`value` (already checked) with every left-out field's default, in the fields' order."""
    result: dict[str, Any] = {}
    for key, field in fields.items():
        if key in value and value[key] is not None:
            result[key] = value[key]
        elif field.default is not MISSING:
            result[key] = field.default
    return result
