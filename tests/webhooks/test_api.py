"""The webhooks API over real HTTP (SPEC §17): answers, the secret shown once and stored sealed, PATCH and
DELETE, every refusal naming its field, and who may do what on every route."""

from __future__ import annotations

import pytest
import trio

from runsvc.http.routes import ROUTES
from tests.helpers import add_user, assert_error, database_of, login
from tests.webhooks.helpers import WEBHOOKS, create_webhook, deliveries

WEBHOOK_KEYS = {"id", "url", "events", "job", "statuses", "created_at"}
ALL_TERMINAL = ["succeeded", "failed", "cancelled", "timed_out", "interrupted"]


async def test_create_fills_defaults_and_shows_the_secret_once(server, admin, settings):
    """Defaults: every terminal status, run.finished, any job; a generated whsec_ secret in the creation
    answer only, stored encrypted (not in the database file in clear)."""
    with trio.fail_after(10):
        webhook, secret = await create_webhook(admin, {"url": "https://hooks.example.com/runsvc"})
        listed = (await admin.get(WEBHOOKS)).json()
    assert set(webhook) == WEBHOOK_KEYS
    assert webhook["events"] == ["run.finished"] and webhook["job"] is None and webhook["statuses"] == ALL_TERMINAL
    assert secret.startswith("whsec_") and len(secret) > 30
    assert listed == {"webhooks": [webhook]}
    assert secret not in str(listed)
    with database_of(settings) as conn:
        (stored,) = conn.execute("SELECT secret FROM webhooks WHERE id = ?", (webhook["id"],)).fetchone()
    assert secret.encode() not in stored and len(stored) == 12 + len(secret) + 16  # nonce, ciphertext, tag
    assert (settings.data_dir / "secret.key").stat().st_mode & 0o777 == 0o600


async def test_patch_changes_fields_but_never_the_secret(server, admin):
    """PATCH replaces the fields given, keeps the others, refuses `secret` (400 naming it) and answers 404
    for an unknown webhook."""
    with trio.fail_after(10):
        webhook, _ = await create_webhook(admin, {"url": "http://a.example/h", "job": "nightly"})
        response = await admin.patch(f"{WEBHOOKS}/{webhook['id']}", json={
            "url": "http://b.example/h", "statuses": ["failed", "timed_out", "failed"],
        })
        assert response.status_code == 200, response.text
        changed = response.json()["webhook"]
        assert changed == {**webhook, "url": "http://b.example/h", "statuses": ["failed", "timed_out"]}
        cleared = (await admin.patch(f"{WEBHOOKS}/{webhook['id']}", json={"job": None})).json()["webhook"]
        assert cleared["job"] is None
        assert_error(await admin.patch(f"{WEBHOOKS}/{webhook['id']}", json={"secret": "x"}), 400,
                     "invalid_request", "unknown field: secret")
        assert_error(await admin.patch(f"{WEBHOOKS}/999", json={}), 404, "not_found")


async def test_delete_drops_the_webhook_and_its_deliveries(server, admin, settings):
    """DELETE answers 204, the webhook leaves the list, its pending deliveries are gone, and a second
    DELETE is 404."""
    server.services.webhook_sender.max_in_flight = 0  # nothing is sent: the delivery stays pending
    with trio.fail_after(20):
        webhook, _ = await create_webhook(admin, {"url": "http://127.0.0.1:9/never"})
        run = (await admin.post("/api/v1/runs", json={"command": ["true"]})).json()["run"]
        while not await deliveries(admin, webhook["id"]):
            await trio.sleep(0.02)
        [pending] = await deliveries(admin, webhook["id"])
        assert pending["run_id"] == run["id"] and pending["attempts"] == 0 and pending["next_try_at"] is not None
        response = await admin.delete(f"{WEBHOOKS}/{webhook['id']}")
        assert response.status_code == 204
        assert (await admin.get(WEBHOOKS)).json() == {"webhooks": []}
        assert_error(await admin.delete(f"{WEBHOOKS}/{webhook['id']}"), 404, "not_found")
        assert_error(await admin.get(f"{WEBHOOKS}/{webhook['id']}/deliveries"), 404, "not_found")
    with database_of(settings) as conn:
        assert conn.execute("SELECT count(*) FROM webhook_deliveries").fetchone()[0] == 0


async def test_a_pending_delivery_looks_as_documented(server, admin):
    """Before its first attempt a delivery has 0 attempts, no code, error or delivered_at, and its
    creation time (the run's end) as next_try_at; `limit` bounds the newest-first list."""
    server.services.webhook_sender.max_in_flight = 0
    with trio.fail_after(20):
        webhook, _ = await create_webhook(admin, {"url": "http://127.0.0.1:9/never"})
        for _ in range(3):
            await admin.post("/api/v1/runs", json={"command": ["true"]})
        while len(await deliveries(admin, webhook["id"])) < 3:
            await trio.sleep(0.02)
        found = await deliveries(admin, webhook["id"])
        newest = await deliveries(admin, webhook["id"], limit=2)
        run = (await admin.get(f"/api/v1/runs/{found[0]['run_id']}")).json()["run"]
    assert [d["id"] for d in found] == sorted((d["id"] for d in found), reverse=True)
    assert newest == found[:2]
    assert found[0] == {
        "id": found[0]["id"], "event": "run.finished", "run_id": run["id"], "attempts": 0,
        "last_status_code": None, "last_error": None, "delivered_at": None, "next_try_at": run["ended_at"],
    }


@pytest.mark.parametrize(("body", "message"), [
    ({}, "url is required"),
    ({"url": "ftp://example.com/x"}, "url must be an http or https URL"),
    ({"url": "example.com/x"}, "url must be an http or https URL"),
    ({"url": "http://"}, "url must be an http or https URL"),
    ({"url": "http://example.com:99999/"}, "url must be an http or https URL"),
    ({"url": "http://exa mple.com/"}, "url must not contain spaces or control characters"),
    ({"url": "http://x/" + "a" * 2000}, "url must be at most 2000 characters"),
    ({"url": 7}, "url must be a string"),
    ({"url": "http://x/", "events": ["run.started"]},
     "events must hold only event types (run.finished), not 'run.started'"),
    ({"url": "http://x/", "events": []}, "events must not be empty"),
    ({"url": "http://x/", "statuses": ["running"]}, "statuses must hold only terminal statuses"),
    ({"url": "http://x/", "statuses": "failed"}, "statuses must be a list of strings"),
    ({"url": "http://x/", "job": "no spaces"}, "job must be 1-100 characters"),
    ({"url": "http://x/", "secret": ""}, "secret must be at least 1 characters"),
    ({"url": "http://x/", "secret": "s" * 257}, "secret must be at most 256 characters"),
    ({"url": "http://x/", "colour": "red"}, "unknown field: colour"),
])
async def test_bad_input_is_400_naming_the_field(server, admin, body, message):
    """Every broken rule of a webhook is a 400 whose message names the field."""
    with trio.fail_after(10):
        response = await admin.post(WEBHOOKS, json=body)
        assert_error(response, 400, "invalid_request")
        assert response.json()["error"]["message"].startswith(message), response.text
        webhook, _ = await create_webhook(admin, {"url": "http://x/"})
        # PATCH checks the same rules (the url's, too, when given).
        patched = await admin.patch(f"{WEBHOOKS}/{webhook['id']}", json=body)
        if body and "secret" not in body:
            assert_error(patched, 400, "invalid_request")
            assert patched.json()["error"]["message"].startswith(message), patched.text


async def test_bad_queries_are_400(server, admin):
    """`limit` outside 1–500, and unknown query parameters, are 400 naming them."""
    with trio.fail_after(10):
        webhook, _ = await create_webhook(admin, {"url": "http://x/"})
        path = f"{WEBHOOKS}/{webhook['id']}/deliveries"
        for params, message in (
            ({"limit": 0}, "limit must be >= 1"), ({"limit": 501}, "limit must be <= 500"),
            ({"limit": "x"}, "limit must be an integer"), ({"after": 1}, "unknown query parameter"),
        ):
            response = await admin.get(path, params=params)
            assert_error(response, 400, "invalid_request")
            assert response.json()["error"]["message"].startswith(message)
        assert_error(await admin.get(WEBHOOKS, params={"x": 1}), 400, "invalid_request")


WEBHOOK_ROUTES = [(route.method, route.path) for route in ROUTES if "/webhooks" in route.path]


async def test_every_route_is_admins_only(server, client):
    """Viewers and operators get 403 on every webhook route, before the body is looked at; without a
    session, 401."""
    assert len(WEBHOOK_ROUTES) == 5
    with trio.fail_after(20):
        for method, rule in WEBHOOK_ROUTES:
            path = rule.replace("<int:webhook_id>", "1")
            assert_error(await client.request(method, path, json={}), 401, "unauthenticated")
        for username, role in (("vic", "viewer"), ("otto", "operator")):
            await add_user(server, username, role)
            client.cookies.clear()
            csrf = await login(client, username)
            for method, rule in WEBHOOK_ROUTES:
                path = rule.replace("<int:webhook_id>", "1")
                response = await client.request(
                    method, path, json={"url": "http://x/"}, headers={"X-CSRF-Token": csrf}
                )
                assert_error(response, 403, "forbidden")
