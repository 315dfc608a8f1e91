"""Secrets (SPEC §17): admins create, replace and delete; operators and admins list names. No answer
ever holds a value: a secret is `{name, created_at, updated_at, updated_by}`."""

from __future__ import annotations

import attrs
from quart import Response

from ...model import Secret
from ...secrets.service import MAX_VALUE_BYTES, NAME_PATTERN, NAME_RULE, SecretNotFound, is_secret_name
from ..access import current_user
from ..types import json_response, no_content, services
from ..validation import read_json_object, string

# 64 KiB counts UTF-8 bytes (the service checks them); as characters that is at most 65,536.
VALUE = string(min_length=1, max_length=MAX_VALUE_BYTES)
CREATE_FIELDS = {"name": string(pattern=NAME_PATTERN, rule=NAME_RULE), "value": VALUE}
REPLACE_FIELDS = {"value": VALUE}


def secret_json(secret: Secret) -> dict[str, str | None]:
    return attrs.asdict(secret)


def _known_name(name: str) -> str:
    """A name in a path that breaks the rule names no secret: 404 like any unknown one."""
    if not is_secret_name(name):
        raise SecretNotFound("no secret of that name")
    return name


async def list_secrets() -> Response:
    return json_response({"secrets": [secret_json(secret) for secret in await services().secrets.list()]})


async def create_secret() -> Response:
    body = await read_json_object(CREATE_FIELDS)
    secret = await services().secrets.create(body["name"], body["value"], by=current_user().username)
    return json_response({"secret": secret_json(secret)}, status=201)


async def replace_secret(name: str) -> Response:
    """200 {secret}; an unknown name is 404 (PUT never creates)."""
    body = await read_json_object(REPLACE_FIELDS)
    secret = await services().secrets.replace(_known_name(name), body["value"], by=current_user().username)
    return json_response({"secret": secret_json(secret)})


async def delete_secret(name: str) -> Response:
    await services().secrets.delete(_known_name(name))
    return no_content()
