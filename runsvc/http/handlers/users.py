"""User administration (admins only; the route table says so)."""

from __future__ import annotations

from quart import Response

from ...accounts import MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS, ROLES
from ...names import NAME_PATTERN, NAME_RULE
from ..types import json_response, services
from ..validation import boolean, read_json_object, string

# The accounts service checks the same rules (with the same messages) for callers other than HTTP.
USERNAME = string(pattern=NAME_PATTERN, rule=NAME_RULE)
CREATE_FIELDS = {
    "username": USERNAME,
    "password": string(min_length=MIN_PASSWORD_CHARS, max_length=MAX_PASSWORD_CHARS),
    "role": string(choices=ROLES),
}
UPDATE_FIELDS = {
    "role": string(required=False, choices=ROLES),
    "password": string(required=False, min_length=MIN_PASSWORD_CHARS, max_length=MAX_PASSWORD_CHARS),
    "disabled": boolean(required=False),
}


async def list_users() -> Response:
    users = await services().auth.list_users()
    return json_response({"users": [user.to_json() for user in users]})


async def create_user() -> Response:
    body = await read_json_object(CREATE_FIELDS)
    user = await services().auth.create_user(body["username"], body["password"], body["role"])
    return json_response({"user": user.to_json()}, status=201)


async def update_user(user_id: int) -> Response:
    body = await read_json_object(UPDATE_FIELDS)
    user = await services().auth.update_user(user_id, **body)
    return json_response({"user": user.to_json()})
