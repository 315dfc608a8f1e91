"""Remote agents: enrollment tokens (admin), enrollment (the token is the credential), the agent list,
revocation, and the agents' WebSocket."""

from __future__ import annotations

from quart import Response, websocket

from ...agents.service import DEFAULT_TOKEN_TTL_S, MAX_TOKEN_TTL_S
from ...names import MAX_LABELS, NAME_PATTERN, NAME_RULE
from ..access import current_user
from ..types import json_response, no_content, services
from ..validation import number, read_json_object, string, string_list
from ..websockets import open_outbox

AGENT_SEND_QUEUE = 64  # frames queued for an agent's socket before a sender waits

LABELS = string_list(required=False, default=[], max_items=MAX_LABELS, item_pattern=NAME_PATTERN, item_rule=NAME_RULE)
TOKEN_FIELDS = {
    "labels": LABELS,
    "ttl_s": number(required=False, default=DEFAULT_TOKEN_TTL_S, minimum=1, maximum=MAX_TOKEN_TTL_S),
}
ENROLL_FIELDS = {
    "token": string(min_length=1, max_length=1000),
    "name": string(pattern=NAME_PATTERN, rule=NAME_RULE),
    "labels": LABELS,
}


async def create_enrollment_token() -> Response:
    body = await read_json_object(TOKEN_FIELDS)
    token, secret = await services().agents.create_token(
        labels=body["labels"], ttl_s=float(body["ttl_s"]), created_by=current_user().username
    )
    return json_response({"enrollment_token": token, "token": secret}, status=201)


async def list_enrollment_tokens() -> Response:
    return json_response({"enrollment_tokens": await services().agents.list_tokens()})


async def delete_enrollment_token(token_id: int) -> Response:
    await services().agents.delete_token(token_id)
    return no_content()


async def enroll() -> Response:
    body = await read_json_object(ENROLL_FIELDS)
    agent, secret = await services().agents.enroll(token=body["token"], name=body["name"], labels=body["labels"])
    return json_response({"agent": agent, "secret": secret}, status=201)


async def list_agents() -> Response:
    return json_response({"agents": await services().agents.list_agents()})


async def delete_agent(agent_id: int) -> Response:
    await services().agents.revoke(agent_id)
    return no_content()


def _bearer() -> str | None:
    scheme, _, secret = websocket.headers.get("Authorization", "").partition(" ")
    return secret.strip() if scheme.lower() == "bearer" and secret.strip() else None


async def agents_ws() -> None:
    """An agent's connection: `Authorization: Bearer <agent secret>`, then the agent protocol. Closes
    only when the agent goes, is revoked (4401), or the server has finished draining (1001)."""
    svc = services()
    await websocket.accept()
    async with open_outbox(AGENT_SEND_QUEUE) as outbox:
        code, reason = await svc.agents.hub.serve_connection(_bearer(), websocket.receive, outbox.send)
        await outbox.close(code, reason)
    await outbox.sent_all.wait()
