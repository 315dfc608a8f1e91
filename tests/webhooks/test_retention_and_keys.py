"""Deliveries are kept 7 days from their creation (maintenance deletes older ones, delivered or not), and
the key file that seals webhook secrets (created 0600, refused with one line when unusable)."""

from __future__ import annotations

import datetime as dt
import sys

import pytest
import trio

from runsvc.crypto import SealBroken, open_sealed, seal
from runsvc.maintenance import maintenance_pass
from runsvc.timeutil import format_ts, utcnow
from tests.conftest import make_settings
from tests.helpers import child_env, running_server


def add_delivery(conn, webhook_id: int, created_at: str, delivered: bool) -> None:
    conn.execute(
        "INSERT INTO webhook_deliveries (webhook_id, event, run_id, body, attempts, delivered_at, next_try_at, "
        "created_at) VALUES (?, 'run.finished', 1, '{}', ?, ?, ?, ?)",
        (webhook_id, int(delivered), created_at if delivered else None, None if delivered else created_at, created_at),
    )


async def test_maintenance_deletes_deliveries_older_than_seven_days(store, tmp_path):
    """A pass deletes the deliveries created more than 7 days ago, delivered or still pending, and keeps
    younger ones."""
    settings = make_settings(tmp_path)
    now = utcnow()

    def populate(conn):
        webhook_id = conn.execute(
            "INSERT INTO webhooks (url, statuses, secret, created_at) VALUES ('http://x/', '[]', ?, ?) "
            "RETURNING id", (b"\0", format_ts(now)),
        ).fetchone()[0]
        add_delivery(conn, webhook_id, format_ts(now - dt.timedelta(days=7, seconds=5)), delivered=True)
        add_delivery(conn, webhook_id, format_ts(now - dt.timedelta(days=8)), delivered=False)
        add_delivery(conn, webhook_id, format_ts(now - dt.timedelta(days=6, hours=23)), delivered=False)
        add_delivery(conn, webhook_id, format_ts(now - dt.timedelta(hours=1)), delivered=True)

    with trio.fail_after(10):
        await store.write(populate)
        counts = await maintenance_pass(store, settings, now=lambda: now)
        left = await store.read(
            lambda conn: [row[0] for row in conn.execute("SELECT id FROM webhook_deliveries ORDER BY id")]
        )
    assert counts.webhook_deliveries == 2
    assert left == [3, 4]


def test_a_sealed_value_opens_only_with_its_key_and_its_row():
    """seal/open_sealed round-trip; another key, another associated row, or a changed byte does not open."""
    key, other = b"k" * 32, b"o" * 32
    sealed = seal(key, "webhook:1", b"whsec_abc")
    assert sealed[12:] != seal(key, "webhook:1", b"whsec_abc")[12:]  # a fresh nonce each time
    assert open_sealed(key, "webhook:1", sealed) == b"whsec_abc"
    for wrong in ((other, "webhook:1", sealed), (key, "webhook:2", sealed),
                  (key, "webhook:1", sealed[:-1] + bytes([sealed[-1] ^ 1])), (key, "webhook:1", b"")):
        with pytest.raises(SealBroken):
            open_sealed(*wrong)


async def test_a_missing_key_file_with_sealed_secrets_is_refused_at_start(tmp_path):
    """A data dir whose database holds a webhook (its secret sealed) but whose key file is gone: serve
    exits 1 with one line and makes no new key; without anything sealed, a missing key is just created."""
    data = tmp_path / "data"
    settings = make_settings(tmp_path)
    with trio.fail_after(60):
        async with running_server(settings) as server:
            await server.services.webhooks.create(
                url="http://x/", events=["run.finished"], job=None, statuses=["failed"], secret=None, created_by=None
            )
        (data / "secret.key").unlink()
        result = await trio.run_process(
            [sys.executable, "-m", "runsvc", "serve", "--port", "0", "--data-dir", str(data)],
            capture_stdout=True, capture_stderr=True, check=False, env=child_env(),
        )
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    errors = [line for line in stderr.splitlines() if "cannot start" in line]
    assert len(errors) == 1 and "secret.key is missing but the database holds 1 encrypted value(s)" in errors[0], stderr
    assert not (data / "secret.key").exists() and "Traceback" not in stderr
