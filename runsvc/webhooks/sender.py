"""The webhook sender: one task of the root nursery that POSTs the outbox's deliveries (SPEC §17).

No polling. The task claims what is due (store/webhooks.py `claim_due`, one UPDATE … RETURNING that
leases each delivery for its attempt), starts one attempt per claimed delivery, and then sleeps until the
earliest `next_try_at` left, or until it is woken: by the commit of a run's end that wrote deliveries
(outbox.py), or by an attempt that finished (a slot in flight is free again). At start it looks once, so
deliveries left pending by an earlier process go out (at least once across restarts).

At most `max_in_flight` attempts run at once, each under its own deadline (`timeout_s` for the whole
POST, however slowly a receiver trickles), so a receiver that hangs holds one slot for at most that long
and never holds runs (the outbox is written by their transactions, the sender is only read) or other
webhooks (they have the other slots). Redirects are not followed: a 3xx is a failure like a 4xx or 5xx,
and every failure is tried again after 10·2^(n−1) s (n: POSTs made so far), at most 24 h, until
retention deletes the delivery 7 days after its creation. The receiver's answer body is never read.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import hmac
from collections.abc import Callable
from functools import partial

import attrs
import httpx  # noqa: ASYNC127 (flake8-async suggests its fork httpx2; the issue asks for httpx, pinned)
import trio

from ..crypto import SealBroken, open_sealed
from ..log import get_logger
from ..store import Store, StoreClosedError
from ..store import webhooks as sql
from ..timeutil import format_ts, parse_ts, utcnow

log = get_logger(__name__)

TIMEOUT_S = 10.0  # one attempt, the whole POST
FIRST_WAIT_S = 10.0  # after the first failed attempt; doubling…
MAX_WAIT_S = 24 * 3600.0  # …up to a day
MAX_IN_FLIGHT = 16  # attempts at once
LEASE_MARGIN_S = 50.0  # a claimed delivery is due again after timeout + this if its sender vanished
MAX_ERROR_CHARS = 500  # of last_error
USER_AGENT = "runsvc-webhooks"


def signature(secret: str, body: bytes) -> str:
    """The X-Runsvc-Signature value: `sha256=` and the hex HMAC-SHA256 of the body under the secret's
    UTF-8 bytes."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def secret_associated(webhook_id: int) -> str:
    """What a webhook's sealed secret is bound to: its own row."""
    return f"webhook:{webhook_id}"


def retry_wait_s(attempts: int, first_s: float = FIRST_WAIT_S, max_s: float = MAX_WAIT_S) -> float:
    """The wait after the `attempts`th failed POST: first_s · 2^(attempts−1), at most max_s."""
    return min(first_s * 2.0 ** min(attempts - 1, 64), max_s)


@attrs.define(eq=False)
class WebhookSender:
    _store: Store
    _key: bytes
    timeout_s: float = TIMEOUT_S
    first_wait_s: float = FIRST_WAIT_S
    max_wait_s: float = MAX_WAIT_S
    max_in_flight: int = MAX_IN_FLIGHT
    lease_margin_s: float = LEASE_MARGIN_S
    _clock: Callable[[], dt.datetime] = utcnow
    _wakeup: trio.Event = attrs.Factory(trio.Event)
    _in_flight: int = 0
    outcomes: collections.Counter[str] = attrs.Factory(collections.Counter)  # attempts by outcome, /metrics
    looks: int = 0  # claims made (tests: a sender that has nothing to do runs no SQL)

    def wake(self) -> None:
        """Look for due deliveries now (deliveries were committed, or a slot was freed)."""
        self._wakeup.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        transport = httpx.AsyncHTTPTransport(retries=0)
        async with httpx.AsyncClient(
            transport=transport, follow_redirects=False, timeout=self.timeout_s,
            headers={"User-Agent": USER_AGENT}, trust_env=False,
        ) as client, trio.open_nursery() as attempts:
            started = False
            while True:
                self._wakeup = trio.Event()  # before the look: a wake during it makes the next one
                next_due = await self._look(client, attempts)
                if not started:  # ready once the first look (what earlier processes left) is done
                    task_status.started()
                    started = True
                if next_due is None:
                    await self._wakeup.wait()
                    continue
                delay = (parse_ts(next_due) - self._clock()).total_seconds()
                if delay > 0:
                    with trio.move_on_after(delay):
                        await self._wakeup.wait()

    async def _look(self, client: httpx.AsyncClient, attempts: trio.Nursery) -> str | None:
        """Claim what is due for the free slots and start its attempts; return the earliest next_try_at
        left (None: nothing pending). With no slot free, the next finished attempt wakes the task."""
        free = self.max_in_flight - self._in_flight
        if free <= 0:
            return None
        now = self._clock()
        lease = format_ts(now + dt.timedelta(seconds=self.timeout_s + self.lease_margin_s))
        self.looks += 1
        claimed, next_due = await self._store.write(sql.claim_due, format_ts(now), lease, free, retry=True)
        for delivery in claimed:
            self._in_flight += 1
            attempts.start_soon(self._attempt, client, delivery)
        if len(claimed) == free:
            return None  # slots full; more may be due: a finishing attempt wakes the task
        return next_due

    async def _attempt(self, client: httpx.AsyncClient, delivery: sql.Claimed) -> None:
        try:
            status, error = await self._post(client, delivery)
            attempts = delivery.attempts + 1
            now = self._clock()
            if error is None:
                self.outcomes["delivered"] += 1
                delivered_at, next_try_at = format_ts(now), None
            else:
                self.outcomes["failed"] += 1
                wait = retry_wait_s(attempts, self.first_wait_s, self.max_wait_s)
                delivered_at, next_try_at = None, format_ts(now + dt.timedelta(seconds=wait))
                log.info(
                    "webhook delivery failed", delivery_id=delivery.id, webhook_id=delivery.webhook_id,
                    attempts=attempts, error=error, retry_in_s=round(wait, 3),
                )
            try:
                record = partial(
                    sql.record_attempt, status_code=status, error=error, delivered_at=delivered_at,
                    next_try_at=next_try_at,
                )
                await self._store.write(record, delivery.id, retry=True)
            except StoreClosedError:
                pass  # shutting down: the lease runs out and the delivery is tried again after a restart
        finally:
            self._in_flight -= 1
            self.wake()

    async def _post(self, client: httpx.AsyncClient, delivery: sql.Claimed) -> tuple[int | None, str | None]:
        """One POST: (status code or None, error or None for a 2xx)."""
        try:
            secret = open_sealed(self._key, secret_associated(delivery.webhook_id), delivery.secret).decode()
        except (SealBroken, UnicodeDecodeError) as exc:
            return None, f"the webhook's secret cannot be decrypted with this server's key ({exc})"
        body = delivery.body.encode()
        headers = {
            "Content-Type": "application/json",
            "X-Runsvc-Event": delivery.event,
            "X-Runsvc-Delivery": str(delivery.id),
            "X-Runsvc-Signature": signature(secret, body),
        }
        try:
            with trio.fail_after(self.timeout_s):
                # Streamed and closed unread: a receiver's answer body, however big, is never taken in.
                async with client.stream("POST", delivery.url, content=body, headers=headers) as response:
                    status = response.status_code
        except trio.TooSlowError:
            return None, f"no answer within {self.timeout_s:g} s"
        except httpx.HTTPError as exc:
            return None, _describe(exc)
        if 200 <= status < 300:
            return status, None
        if 300 <= status < 400:
            return status, f"HTTP {status} (redirects are not followed)"
        return status, f"HTTP {status}"


def _describe(exc: httpx.HTTPError) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:MAX_ERROR_CHARS]
