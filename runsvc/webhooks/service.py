"""Webhooks (SPEC §17): create, list, change, delete, and a webhook's deliveries — what handlers call.

A webhook's signing secret is generated (`whsec_` and 32 random bytes, URL-safe base64) unless one is
given, shown once in the answer to its creation, and stored sealed (crypto.py) so that the sender can
sign with it; it cannot be changed (make a new webhook). Every committed change replaces the outbox's
in-memory set of webhooks (outbox.py), and `load()` fills it at start.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from ..crypto import seal
from ..model import Delivery, Webhook, WebhookNotFound
from ..store import Store
from ..store import webhooks as sql
from ..timeutil import now_ts
from .outbox import Outbox
from .sender import secret_associated

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


class WebhookService:
    def __init__(self, store: Store, key: bytes, outbox: Outbox):
        self._store = store
        self._key = key
        self._outbox = outbox

    async def load(self) -> None:
        """Fill the outbox's set of webhooks from the database (at start, before any run can end)."""
        self._outbox.replace(await self._store.read(sql.list_webhooks))

    async def create(
        self, *, url: str, events: Sequence[str], job: str | None, statuses: Sequence[str], secret: str | None,
        created_by: str | None,
    ) -> tuple[Webhook, str]:
        """A new webhook and its signing secret (the one given, or a new `whsec_…`)."""
        secret = secret if secret is not None else new_secret()
        sealed = partial(_seal_for, self._key, secret.encode())
        webhook, _ = await self._store.write(
            partial(
                sql.create_webhook, url=url, events=events, job=job, statuses=statuses, seal=sealed,
                created_by=created_by, ts=now_ts(),
            ),
            on_commit=self._replaced,
        )
        return webhook, secret

    async def update(self, webhook_id: int, changes: Mapping[str, Any]) -> Webhook:
        """Change `url`, `events`, `job`, `statuses`. Raises WebhookNotFound."""
        result = await self._store.write(sql.update_webhook, webhook_id, dict(changes), on_commit=self._replaced)
        if result is None:
            raise WebhookNotFound(f"no webhook {webhook_id}")
        return result[0]

    async def delete(self, webhook_id: int) -> None:
        """Delete the webhook with its deliveries, pending ones included. Raises WebhookNotFound."""
        left = await self._store.write(sql.delete_webhook, webhook_id, on_commit=self._deleted)
        if left is None:
            raise WebhookNotFound(f"no webhook {webhook_id}")

    async def deliveries(self, webhook_id: int, limit: int) -> list[Delivery]:
        """The webhook's `limit` newest deliveries, newest first. Raises WebhookNotFound."""
        found = await self._store.read(sql.deliveries_page, webhook_id, limit)
        if found is None:
            raise WebhookNotFound(f"no webhook {webhook_id}")
        return found

    def _replaced(self, result: tuple[Webhook, list[Webhook]] | None) -> None:
        if result is not None:
            self._outbox.replace(result[1])

    def _deleted(self, left: list[Webhook] | None) -> None:
        if left is not None:
            self._outbox.replace(left)

    # Last: within the class body below it, `list` would name this method, not the type.
    async def list(self) -> list[Webhook]:
        return await self._store.read(sql.list_webhooks)


def _seal_for(key: bytes, secret: bytes, webhook_id: int) -> bytes:
    return seal(key, secret_associated(webhook_id), secret)
