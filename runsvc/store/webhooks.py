"""SQL for webhooks and their outbox, `webhook_deliveries` (SPEC §17).

Deliveries are written in the transaction that records a run's end (`insert_deliveries`, called through
the webhooks' outbox, which decides in memory which webhooks match: no SQL when none does). The sender
claims due deliveries with one `UPDATE … RETURNING` that moves their `next_try_at` past the attempt's
deadline (`claim_due`): a claimed delivery is not due for anyone else until then, so several senders
(replicas) can share the outbox and each attempt is made once; a sender that dies mid-attempt leaves the
delivery due again when that lease runs out (at least once). The attempt's outcome is written back with
`record_attempt`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ..model import Delivery, Webhook
from .dialect import Connection

WEBHOOK_COLUMNS = "id, url, events, job, statuses, created_at, created_by"
DELIVERY_COLUMNS = (
    "id, webhook_id, event, run_id, attempts, last_status_code, last_error, delivered_at, next_try_at, created_at"
)


def webhook_from_row(row: Sequence[Any]) -> Webhook:
    id_, url, events, job, statuses, created_at, created_by = row
    return Webhook(
        id=id_, url=url, events=tuple(json.loads(events)), job=job, statuses=tuple(json.loads(statuses)),
        created_at=created_at, created_by=created_by,
    )


def delivery_from_row(row: Sequence[Any]) -> Delivery:
    return Delivery(**dict(zip(DELIVERY_COLUMNS.split(", "), row, strict=True)))


def list_webhooks(conn: Connection) -> list[Webhook]:
    return [webhook_from_row(row) for row in conn.execute(f"SELECT {WEBHOOK_COLUMNS} FROM webhooks ORDER BY id")]


def get_webhook(conn: Connection, webhook_id: int) -> Webhook | None:
    row = conn.execute(f"SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = ?", (webhook_id,)).fetchone()
    return None if row is None else webhook_from_row(row)


def create_webhook(
    conn: Connection, *, url: str, events: Sequence[str], job: str | None, statuses: Sequence[str],
    seal: Any, created_by: str | None, ts: str,
) -> tuple[Webhook, list[Webhook]]:
    """Insert a webhook whose secret is `seal(id)` (sealed bound to the new row's id, known only once it
    is inserted); return it and every webhook, read in the same transaction (the outbox's new set)."""
    webhook_id = conn.execute(
        "INSERT INTO webhooks (url, events, job, statuses, secret, created_at, created_by) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (url, json.dumps(list(events)), job, json.dumps(list(statuses)), b"", ts, created_by),
    ).fetchone()[0]
    conn.execute("UPDATE webhooks SET secret = ? WHERE id = ?", (seal(webhook_id), webhook_id))
    webhook = get_webhook(conn, webhook_id)
    assert webhook is not None  # inserted just above
    return webhook, list_webhooks(conn)


def update_webhook(
    conn: Connection, webhook_id: int, changes: Mapping[str, Any]
) -> tuple[Webhook, list[Webhook]] | None:
    """Change `url`, `events`, `job` or `statuses` (the keys of `changes`); None if there is no such
    webhook. Returns it and every webhook, as create_webhook."""
    if get_webhook(conn, webhook_id) is None:
        return None
    encoded = {
        key: json.dumps(list(value)) if key in ("events", "statuses") else value for key, value in changes.items()
    }
    if encoded:
        assignments = ", ".join(f"{column} = ?" for column in encoded)
        conn.execute(f"UPDATE webhooks SET {assignments} WHERE id = ?", (*encoded.values(), webhook_id))
    webhook = get_webhook(conn, webhook_id)
    assert webhook is not None
    return webhook, list_webhooks(conn)


def delete_webhook(conn: Connection, webhook_id: int) -> list[Webhook] | None:
    """Delete the webhook and its deliveries, pending ones included; None if there is no such webhook.
    Returns every webhook left."""
    conn.execute("DELETE FROM webhook_deliveries WHERE webhook_id = ?", (webhook_id,))
    if conn.execute("DELETE FROM webhooks WHERE id = ?", (webhook_id,)).rowcount == 0:
        return None
    return list_webhooks(conn)


def deliveries_page(conn: Connection, webhook_id: int, limit: int) -> list[Delivery] | None:
    """The webhook's `limit` newest deliveries, newest first; None if there is no such webhook."""
    conn.execute("BEGIN")
    try:
        if conn.execute("SELECT 1 FROM webhooks WHERE id = ?", (webhook_id,)).fetchone() is None:
            return None
        rows = conn.execute(
            f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = ? ORDER BY id DESC LIMIT ?",
            (webhook_id, limit),
        ).fetchall()
    finally:
        conn.execute("COMMIT")
    return [delivery_from_row(row) for row in rows]


def insert_deliveries(
    conn: Connection, webhook_ids: Sequence[int], *, event: str, run_id: int, body: str, ts: str
) -> int:
    """One delivery of `body` per webhook of `webhook_ids` that still exists (one deleted in this very
    batch is skipped, never a foreign-key failure of the run's end); due at once. Returns how many."""
    marks = ", ".join("?" * len(webhook_ids))
    return conn.execute(
        "INSERT INTO webhook_deliveries (webhook_id, event, run_id, body, next_try_at, created_at) "
        f"SELECT id, ?, ?, ?, ?, ? FROM webhooks WHERE id IN ({marks}) ORDER BY id",
        (event, run_id, body, ts, ts, *webhook_ids),
    ).rowcount


@attrs.frozen
class Claimed:
    """A delivery claimed for one attempt, with what the attempt needs."""

    id: int
    webhook_id: int
    event: str
    body: str
    attempts: int  # before this attempt
    url: str
    secret: bytes  # sealed


# Due deliveries, oldest due first, up to :limit, leased until :lease (the attempt's deadline and a
# margin): one statement, so two senders never claim the same delivery. Index webhook_deliveries_due.
# (RETURNING may not name a joined table, so the webhook's url and secret come from subqueries; a
# delivery's webhook always exists: deleting a webhook deletes its deliveries.)
CLAIM_DUE = """
UPDATE webhook_deliveries SET next_try_at = :lease
WHERE id IN (
    SELECT id FROM webhook_deliveries
    WHERE next_try_at IS NOT NULL AND next_try_at <= :now ORDER BY next_try_at, id LIMIT :limit
)
RETURNING id, webhook_id, event, body, attempts,
          (SELECT url FROM webhooks WHERE webhooks.id = webhook_deliveries.webhook_id),
          (SELECT secret FROM webhooks WHERE webhooks.id = webhook_deliveries.webhook_id)
"""
NEXT_DUE = "SELECT min(next_try_at) FROM webhook_deliveries WHERE next_try_at IS NOT NULL"


def claim_due(conn: Connection, now: str, lease: str, limit: int) -> tuple[list[Claimed], str | None]:
    """Claim up to `limit` deliveries due at `now` (their next_try_at becomes `lease`); return them and
    the earliest next_try_at left (claimed ones included: their lease), read in the same transaction."""
    claimed = [Claimed(*row) for row in conn.execute(CLAIM_DUE, {"now": now, "lease": lease, "limit": limit})]
    claimed.sort(key=lambda delivery: delivery.id)
    return claimed, conn.execute(NEXT_DUE).fetchone()[0]


def record_attempt(
    conn: Connection, delivery_id: int, *, status_code: int | None, error: str | None,
    delivered_at: str | None, next_try_at: str | None,
) -> None:
    """The outcome of one POST: counted, with its status code and error; delivered (next_try_at NULL)
    or due again at `next_try_at`. A delivery deleted meanwhile (its webhook deleted) is left gone."""
    conn.execute(
        "UPDATE webhook_deliveries SET attempts = attempts + 1, last_status_code = ?, last_error = ?, "
        "delivered_at = ?, next_try_at = ? WHERE id = ?",
        (status_code, error, delivered_at, next_try_at, delivery_id),
    )


DELETE_OLD_DELIVERIES = (
    "DELETE FROM webhook_deliveries WHERE id IN "
    "(SELECT id FROM webhook_deliveries WHERE created_at < :cutoff LIMIT :limit)"
)


def delete_old_deliveries(conn: Connection, cutoff: str, limit: int) -> int:
    """Up to `limit` deliveries created before `cutoff`, delivered or not (SPEC §17: kept 7 days)."""
    return conn.execute(DELETE_OLD_DELIVERIES, {"cutoff": cutoff, "limit": limit}).rowcount

