"""API tokens: create (a logged-in session only; the route table says so), list, revoke."""

from __future__ import annotations

from quart import Response

from ...accounts import ROLES
from ...accounts.tokens import DEFAULT_EXPIRES_IN_DAYS, MAX_EXPIRES_IN_DAYS, MAX_NAME_CHARS
from ..access import current_principal, current_user
from ..types import json_response, services
from ..validation import integer, read_json_object, string

CREATE_FIELDS = {
    "name": string(min_length=1, max_length=MAX_NAME_CHARS),
    "role": string(required=False, nullable=True, default=None, choices=ROLES),
    "expires_in_days": integer(
        required=False, nullable=True, default=DEFAULT_EXPIRES_IN_DAYS, minimum=1, maximum=MAX_EXPIRES_IN_DAYS
    ),
}


async def create_token() -> Response:
    """201 {token, secret}: the secret is in this answer and nowhere else, ever."""
    body = await read_json_object(CREATE_FIELDS)
    token, secret = await services().tokens.create(
        current_user(), body["name"], body["role"], body["expires_in_days"]
    )
    return json_response({"token": token.to_json(), "secret": secret}, status=201)


async def list_tokens() -> Response:
    """One's own tokens; an admin's answer holds everybody's."""
    user = current_user()
    tokens = await services().tokens.list(user, everyone=user.role == "admin")
    return json_response({"tokens": [token.to_json() for token in tokens]})


async def revoke_token(token_id: int) -> Response:
    """204; another user's token is 404 unless the caller is an admin. Made with a token, the request
    cannot revoke a token whose role is above that token's effective role (403)."""
    principal = current_principal()
    user = principal.user
    max_role = None if principal.token is None else user.role
    await services().tokens.revoke(user, token_id, any_owner=user.role == "admin", max_role=max_role)
    return Response(b"", status=204)  # (a None body is iterated with asyncio, which is not running)
