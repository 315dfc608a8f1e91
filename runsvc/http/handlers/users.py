"""User administration (admins only; the route table says so)."""

from __future__ import annotations

from quart import Response

from ..types import json_response, services
from ..validation import boolean, read_json_object, string

CREATE_FIELDS = {"username": string(), "password": string(), "role": string()}
UPDATE_FIELDS = {
    "role": string(required=False),
    "password": string(required=False),
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
