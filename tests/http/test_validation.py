"""Request body validation: strict JSON, declared fields, messages that name the field."""

from __future__ import annotations

import pytest

from runsvc.http.errors import InvalidRequest
from runsvc.http.validation import (
    boolean,
    integer,
    number,
    parse_json,
    string,
    string_list,
    string_map,
    validate_object,
)

# The shape of POST /runs, to show the mechanism covers it.
RUN_FIELDS = {
    "command": string_list(non_empty=True),
    "env": string_map(required=False, default={}),
    "timeout_s": number(required=False, default=3600, minimum=1, maximum=7 * 86400),
    "name": string(required=False, nullable=True, default=None, max_length=200),
}


def rejected(body, fields) -> str:
    with pytest.raises(InvalidRequest) as info:
        validate_object(body, fields)
    return info.value.message


def test_defaults_fill_in_optional_fields():
    """Left-out optional fields get their defaults; given ones are returned as they are."""
    assert validate_object({"command": ["true"]}, RUN_FIELDS) == {
        "command": ["true"], "env": {}, "timeout_s": 3600, "name": None,
    }
    body = {"command": ["sh", "-c", "x"], "env": {"A": "1"}, "timeout_s": 2.5, "name": "n"}
    assert validate_object(body, RUN_FIELDS) == body


def test_optional_field_without_default_stays_absent():
    """For PATCH: a field the client left out is not in the result."""
    assert validate_object({}, {"role": string(required=False)}) == {}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "request body must be a JSON object"),
        (None, "request body must be a JSON object"),
        ({}, "command is required"),
        ({"command": "ls"}, "command must be a list of strings"),
        ({"command": []}, "command must not be empty"),
        ({"command": ["ls", 3]}, "command[1] must be a string"),
        ({"command": None}, "command must be a list of strings"),
        ({"command": ["ls"], "env": []}, "env must be an object of strings"),
        ({"command": ["ls"], "env": {"A": 1}}, "env.A must be a string"),
        ({"command": ["ls"], "timeout_s": "60"}, "timeout_s must be a number"),
        ({"command": ["ls"], "timeout_s": True}, "timeout_s must be a number"),
        ({"command": ["ls"], "timeout_s": float("inf")}, "timeout_s must be a number"),
        ({"command": ["ls"], "timeout_s": 0}, "timeout_s must be >= 1"),
        ({"command": ["ls"], "timeout_s": 10**9}, "timeout_s must be <= 604800"),
        ({"command": ["ls"], "name": 7}, "name must be a string"),
        ({"command": ["ls"], "name": "x" * 201}, "name must be at most 200 characters"),
        ({"command": ["ls"], "colour": "red"}, "unknown field: colour"),
    ],
)
def test_refusals_name_the_field(body, message):
    """Each broken rule is a 400 whose message names the field."""
    assert rejected(body, RUN_FIELDS) == message


def test_other_field_kinds():
    """Integers exclude booleans and floats; booleans exclude 0/1; strings check length, pattern, choices."""
    fields = {"n": integer(minimum=0), "flag": boolean(), "s": string(min_length=2, pattern="[a-z]+",
                                                                       choices=("ab", "abc"))}
    assert validate_object({"n": 3, "flag": False, "s": "ab"}, fields) == {"n": 3, "flag": False, "s": "ab"}
    assert rejected({"n": 1.5, "flag": True, "s": "ab"}, fields) == "n must be an integer"
    assert rejected({"n": True, "flag": True, "s": "ab"}, fields) == "n must be an integer"
    assert rejected({"n": -1, "flag": True, "s": "ab"}, fields) == "n must be >= 0"
    assert rejected({"n": 1, "flag": 1, "s": "ab"}, fields) == "flag must be a boolean"
    assert rejected({"n": 1, "flag": True, "s": "a"}, fields) == "s must be at least 2 characters"
    assert rejected({"n": 1, "flag": True, "s": "AB"}, fields) == "s must match [a-z]+"
    assert rejected({"n": 1, "flag": True, "s": "abcd"}, fields) == "s must be one of ab, abc"


def test_required_field_cannot_have_a_default():
    """A programming mistake is caught when the fields are declared."""
    with pytest.raises(ValueError):
        string(default="x")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"a": 1,}', "request body must be valid JSON (Expecting property name enclosed in double quotes "
                       "at line 1 column 9)"),
        (b'{"a": Infinity}', "request body must be valid JSON (Infinity is not a JSON value)"),
        (b'{"a": 1, "a": 2}', "duplicate field: a"),
        (b"\xfe\xff", "request body must be UTF-8"),
        (b"[" * 100_000, "request body must be valid JSON (nested too deeply)"),
    ],
)
def test_parse_json_is_strict(data, message):
    """Trailing commas, NaN/Infinity, duplicate keys, bad UTF-8, absurd nesting: all 400."""
    with pytest.raises(InvalidRequest) as info:
        parse_json(data)
    assert info.value.message == message


def test_huge_numbers_are_refused_cleanly():
    """An integer too long to convert and a float that overflows are 400s, not crashes."""
    with pytest.raises(InvalidRequest):
        parse_json(b'{"a": ' + b"9" * 5000 + b"}")
    assert rejected(parse_json(b'{"command": ["x"], "timeout_s": 1e999}'), RUN_FIELDS) == (
        "timeout_s must be a number"
    )
