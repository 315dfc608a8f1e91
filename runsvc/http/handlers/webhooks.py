"""Webhooks (SPEC §17, admins): create (the secret in that answer only), list, change, delete, and one
webhook's deliveries."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import attrs
from quart import Response

from ...model import STATUSES, TERMINAL_STATUSES, WEBHOOK_EVENTS, Delivery, Webhook
from ..access import current_user
from ..job_fields import JOB_NAME_PATTERN, JOB_NAME_RULE
from ..query import int_param, refuse_unknown_params
from ..types import json_response, no_content, services
from ..validation import MISSING, Field, read_json_object, string, string_list

MAX_URL = 2000  # characters
MAX_SECRET = 256  # characters
DEFAULT_DELIVERIES, MAX_DELIVERIES = 50, 500
TERMINAL = tuple(status for status in STATUSES if status in TERMINAL_STATUSES)  # in the documented order


def _url_problem(name: str, value: str) -> str | None:
    """An absolute http(s) URL with a host, which the sender can POST to."""
    if any(ord(char) <= 32 or ord(char) == 127 for char in value):
        return f"{name} must not contain spaces or control characters"
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number in 0-65535)
    except ValueError:
        return f"{name} must be an http or https URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{name} must be an http or https URL"
    return None


def _one_of(choices: tuple[str, ...], what: str) -> Any:
    def check(name: str, values: list[str]) -> str | None:
        for value in values:
            if value not in choices:
                return f"{name} must hold only {what} ({', '.join(choices)}), not {value!r}"
        return None

    return check


def _choice_list(choices: tuple[str, ...], what: str, default: list[str]) -> Field:
    field = string_list(required=False, default=default, non_empty=True)
    schema = {**field.schema, "items": {"enum": list(choices)}}
    return attrs.evolve(field, checks=(*field.checks, _one_of(choices, what)), schema=schema)


_URL = string(max_length=MAX_URL)
CREATE_FIELDS: dict[str, Field] = {
    "url": attrs.evolve(_URL, checks=(*_URL.checks, _url_problem)),
    "events": _choice_list(WEBHOOK_EVENTS, "event types", list(WEBHOOK_EVENTS)),
    # A job name (the runs' job_name): not required to exist, so a webhook can come before its job and
    # keeps matching runs of a job that was deleted (their job_name stays).
    "job": string(required=False, nullable=True, default=None, pattern=JOB_NAME_PATTERN, rule=JOB_NAME_RULE),
    "statuses": _choice_list(TERMINAL, "terminal statuses", list(TERMINAL)),
    "secret": string(required=False, nullable=True, default=None, min_length=1, max_length=MAX_SECRET),
}
# PATCH: any field but the secret, each optional; one left out stays as it is.
UPDATE_FIELDS: dict[str, Field] = {
    key: attrs.evolve(field, required=False, default=MISSING) for key, field in CREATE_FIELDS.items() if key != "secret"
}


def webhook_json(webhook: Webhook) -> dict[str, Any]:
    return {
        "id": webhook.id, "url": webhook.url, "events": list(webhook.events), "job": webhook.job,
        "statuses": list(webhook.statuses), "created_at": webhook.created_at,
    }


def delivery_json(delivery: Delivery) -> dict[str, Any]:
    values = attrs.asdict(delivery)
    del values["webhook_id"], values["created_at"]
    return values


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


async def create_webhook() -> Response:
    """201 {webhook, secret}: the secret is in this answer and nowhere else, ever."""
    body = await read_json_object(CREATE_FIELDS)
    webhook, secret = await services().webhooks.create(
        url=body["url"], events=_unique(body["events"]), job=body["job"], statuses=_unique(body["statuses"]),
        secret=body["secret"], created_by=current_user().username,
    )
    return json_response({"webhook": webhook_json(webhook), "secret": secret}, status=201)


async def list_webhooks() -> Response:
    refuse_unknown_params(())
    return json_response({"webhooks": [webhook_json(webhook) for webhook in await services().webhooks.list()]})


async def update_webhook(webhook_id: int) -> Response:
    body = await read_json_object(UPDATE_FIELDS)
    changes = {key: _unique(value) if key in ("events", "statuses") else value for key, value in body.items()}
    webhook = await services().webhooks.update(webhook_id, changes)
    return json_response({"webhook": webhook_json(webhook)})


async def delete_webhook(webhook_id: int) -> Response:
    await services().webhooks.delete(webhook_id)
    return no_content()


async def webhook_deliveries(webhook_id: int) -> Response:
    refuse_unknown_params(("limit",))
    limit = int_param("limit", default=DEFAULT_DELIVERIES, minimum=1, maximum=MAX_DELIVERIES)
    deliveries = await services().webhooks.deliveries(webhook_id, limit)
    return json_response({"deliveries": [delivery_json(delivery) for delivery in deliveries]})
