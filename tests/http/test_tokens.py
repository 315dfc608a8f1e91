"""API tokens over real HTTP and WebSockets: create, list, revoke, Bearer use, roles, expiry."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import trio
import trio_websocket

from runsvc.store.dialect import SQLITE
from runsvc.timeutil import utcnow
from tests.helpers import add_user, all_rows_as_text, assert_error, login, open_websocket, wait_status

TOKENS = "/api/v1/tokens"
RUNS = "/api/v1/runs"
ME = "/api/v1/auth/me"
PY = sys.executable


@asynccontextmanager
async def session_client(server, username: str, role: str) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A client logged in as a new user `username`; and its CSRF token."""
    await add_user(server, username, role)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        yield client, await login(client, username)


async def make_token(client, csrf, **body) -> dict:
    body.setdefault("name", "ci")
    response = await client.post(TOKENS, json=body, headers={"X-CSRF-Token": csrf})
    assert response.status_code == 201, response.text
    return response.json()


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def test_create_answers_the_token_and_its_secret_once(server):
    """201 {token, secret}: rsv_ secret, role defaults to the creator's, 90 days; list never shows it."""
    with trio.fail_after(20):
        async with session_client(server, "alice", "operator") as (client, csrf):
            before = utcnow()
            created = await make_token(client, csrf, name="deploy bot")
            listed = (await client.get(TOKENS)).json()
    token, secret = created["token"], created["secret"]
    assert secret.startswith("rsv_") and len(secret) > 40
    assert set(token) == {"id", "name", "username", "role", "created_at", "expires_at", "last_used_at"}
    assert (token["name"], token["username"], token["role"]) == ("deploy bot", "alice", "operator")
    assert token["last_used_at"] is None
    expires = dt.datetime.fromisoformat(token["expires_at"].replace("Z", "+00:00"))
    assert dt.timedelta(days=89.99) < expires - before < dt.timedelta(days=90.01)
    assert listed == {"tokens": [token]}
    assert secret not in json.dumps(listed)


async def test_secret_is_stored_only_as_its_sha256(server):
    """The database file holds sha256(secret), and the secret appears nowhere in it."""
    with trio.fail_after(20):
        async with session_client(server, "alice", "operator") as (client, csrf):
            secret = (await make_token(client, csrf))["secret"]
            assert (await client.get(RUNS, headers=bearer(secret))).status_code == 200
        store = server.services.store
        hashes = await store.read(lambda conn: [bytes(r[0]) for r in conn.execute("SELECT token_hash FROM api_tokens")])
        if store.dialect == SQLITE:
            await store.write(lambda conn: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)"), transaction=False)
            stored = b"".join(path.read_bytes() for path in store.path.parent.glob(store.path.name + "*"))
        else:  # every row of every table, as PostgreSQL's text of the row
            stored = (await store.read(all_rows_as_text)).encode()
    assert hashes == [hashlib.sha256(secret.encode()).digest()]
    assert secret.encode() not in stored
    assert secret.removeprefix("rsv_").encode() not in stored


async def test_bearer_submits_without_csrf_and_me_answers_null_csrf(server):
    """A POST with a bearer token needs no CSRF header; /auth/me answers the effective role, null CSRF."""
    with trio.fail_after(30):
        async with session_client(server, "alice", "operator") as (client, csrf):
            secret = (await make_token(client, csrf))["secret"]
        async with httpx.AsyncClient(base_url=server.url, timeout=10, headers=bearer(secret)) as bot:
            me = (await bot.get(ME)).json()
            response = await bot.post(RUNS, json={"command": [PY, "-c", "print('hi')"]})
            assert response.status_code == 201, response.text
            run = await wait_status(bot, response.json()["run"]["id"])
    assert me["csrf_token"] is None and me["user"]["username"] == "alice" and me["user"]["role"] == "operator"
    assert run["status"] == "succeeded" and run["created_by"] == "alice"


async def test_viewer_token_cannot_submit(server):
    """An operator's viewer token reads but cannot submit (403 forbidden)."""
    with trio.fail_after(20):
        async with session_client(server, "alice", "operator") as (client, csrf):
            created = await make_token(client, csrf, role="viewer")
        headers = bearer(created["secret"])
        async with httpx.AsyncClient(base_url=server.url, timeout=10, headers=headers) as bot:
            assert (await bot.get(RUNS)).status_code == 200
            assert_error(await bot.post(RUNS, json={"command": ["true"]}), 403, "forbidden")
            assert (await bot.get(ME)).json()["user"]["role"] == "viewer"
    assert created["token"]["role"] == "viewer"


async def test_operator_cannot_mint_an_admin_token(server):
    """Asking for a role above one's own is 403; an unknown role is 400 (body checks first)."""
    with trio.fail_after(20):
        async with session_client(server, "alice", "operator") as (client, csrf):
            headers = {"X-CSRF-Token": csrf}
            too_high = await client.post(TOKENS, json={"name": "x", "role": "admin"}, headers=headers)
            unknown = await client.post(TOKENS, json={"name": "x", "role": "root"}, headers=headers)
            listed = (await client.get(TOKENS)).json()
    assert_error(too_high, 403, "forbidden", "a operator cannot create a token with role admin")
    assert_error(unknown, 400, "invalid_request")
    assert listed == {"tokens": []}


@pytest.mark.parametrize(
    "body, message",
    [
        ({}, None),
        ({"name": ""}, None),
        ({"name": "x" * 201}, None),
        ({"name": 5}, None),
        ({"name": "x", "expires_in_days": 0}, None),
        ({"name": "x", "expires_in_days": 3651}, None),
        ({"name": "x", "expires_in_days": 1.5}, None),
        ({"name": "x", "expires_in_days": "7"}, None),
        ({"name": "x", "extra": 1}, None),
    ],
)
async def test_create_refuses_bad_bodies(server, body, message):
    """Names 1-200 characters, expires_in_days an integer 1-3650 or null, nothing else: else 400."""
    with trio.fail_after(20):
        async with session_client(server, "alice", "admin") as (client, csrf):
            response = await client.post(TOKENS, json=body, headers={"X-CSRF-Token": csrf})
    assert_error(response, 400, "invalid_request", message)


async def test_never_expiring_and_bounds(server):
    """expires_in_days null never expires; 3650 and 200-character names are accepted."""
    with trio.fail_after(20):
        async with session_client(server, "alice", "viewer") as (client, csrf):
            forever = (await make_token(client, csrf, expires_in_days=None))["token"]
            longest = (await make_token(client, csrf, name="n" * 200, expires_in_days=3650))["token"]
    assert forever["expires_at"] is None
    assert longest["name"] == "n" * 200 and longest["expires_at"] is not None


async def test_a_token_cannot_make_tokens_nor_log_out(server):
    """POST /tokens and /auth/logout with a bearer token: 403 forbidden; listing works."""
    with trio.fail_after(20):
        async with session_client(server, "alice", "admin") as (client, csrf):
            secret = (await make_token(client, csrf))["secret"]
        async with httpx.AsyncClient(base_url=server.url, timeout=10, headers=bearer(secret)) as bot:
            assert_error(await bot.post(TOKENS, json={"name": "y"}), 403, "forbidden")
            assert_error(await bot.post("/api/v1/auth/logout"), 403, "forbidden")
            assert len((await bot.get(TOKENS)).json()["tokens"]) == 1


async def test_demoting_the_user_demotes_the_token_at_once(server):
    """Effective role = lower of token's and user's current role: a demotion applies to the next call;
    disabling the user makes the token 401."""
    with trio.fail_after(30):
        async with session_client(server, "alice", "operator") as (client, csrf):
            secret = (await make_token(client, csrf))["secret"]
        auth = server.services.auth
        alice = [u for u in await auth.list_users() if u.username == "alice"][0]
        async with httpx.AsyncClient(base_url=server.url, timeout=10, headers=bearer(secret)) as bot:
            assert (await bot.get(ME)).json()["user"]["role"] == "operator"
            await auth.update_user(alice.id, role="viewer")
            assert (await bot.get(ME)).json()["user"]["role"] == "viewer"
            assert_error(await bot.post(RUNS, json={"command": ["true"]}), 403, "forbidden")
            await auth.update_user(alice.id, role="admin")
            assert (await bot.get(ME)).json()["user"]["role"] == "operator"  # never above the token's
            await auth.update_user(alice.id, disabled=True)
            assert_error(await bot.get(RUNS), 401, "unauthenticated")
            await auth.update_user(alice.id, disabled=False)
            assert (await bot.get(RUNS)).status_code == 200


async def test_revoked_expired_and_garbage_tokens_are_401(server):
    """Revoked, expired, garbage and empty bearer credentials: 401 unauthenticated, even with a good
    cookie; another Authorization scheme is ignored (the cookie decides)."""
    with trio.fail_after(30):
        async with session_client(server, "alice", "operator") as (client, csrf):
            revoked = await make_token(client, csrf)
            expiring = await make_token(client, csrf, expires_in_days=1)
            response = await client.delete(f"{TOKENS}/{revoked['token']['id']}", headers={"X-CSRF-Token": csrf})
            assert response.status_code == 204
            tokens = server.services.tokens
            assert (await client.get(RUNS, headers=bearer(expiring["secret"]))).status_code == 200
            tokens.clock = lambda: utcnow() + dt.timedelta(days=1, seconds=1)
            try:
                for credential in (revoked["secret"], expiring["secret"], "rsv_garbage", "garbage", "", "x" * 5000):
                    answer = await client.get(RUNS, headers={"Authorization": f"Bearer {credential}".strip()})
                    assert_error(answer, 401, "unauthenticated")
            finally:
                tokens.clock = utcnow
            basic = await client.get(RUNS, headers={"Authorization": "Basic YWxpY2U6eA=="})
    assert basic.status_code == 200


async def test_list_and_revoke_ownership(server):
    """Users see and revoke their own tokens (another's is 404); an admin sees and revokes all."""
    with trio.fail_after(30):
        async with (
            session_client(server, "alice", "operator") as (alice, alice_csrf),
            session_client(server, "bob", "viewer") as (bob, bob_csrf),
            session_client(server, "root", "admin") as (admin, admin_csrf),
        ):
            a = (await make_token(alice, alice_csrf, name="a"))["token"]
            b = (await make_token(bob, bob_csrf, name="b"))["token"]
            assert [t["id"] for t in (await bob.get(TOKENS)).json()["tokens"]] == [b["id"]]
            assert [t["id"] for t in (await admin.get(TOKENS)).json()["tokens"]] == [a["id"], b["id"]]
            other = await bob.delete(f"{TOKENS}/{a['id']}", headers={"X-CSRF-Token": bob_csrf})
            assert_error(other, 404, "not_found")
            missing = await bob.delete(f"{TOKENS}/999999", headers={"X-CSRF-Token": bob_csrf})
            assert_error(missing, 404, "not_found")
            no_csrf = await alice.delete(f"{TOKENS}/{a['id']}")
            assert_error(no_csrf, 403, "csrf")
            by_admin = await admin.delete(f"{TOKENS}/{a['id']}", headers={"X-CSRF-Token": admin_csrf})
            assert by_admin.status_code == 204
            assert (await alice.get(TOKENS)).json() == {"tokens": []}


async def test_tokens_routes_need_authentication(client):
    """Without a session or token every tokens route is 401."""
    with trio.fail_after(10):
        assert_error(await client.get(TOKENS), 401, "unauthenticated")
        assert_error(await client.post(TOKENS, json={"name": "x"}), 401, "unauthenticated")
        assert_error(await client.delete(f"{TOKENS}/1"), 401, "unauthenticated")


async def test_last_used_at_is_written_at_most_once_a_minute(server):
    """Many requests with one token cost one write; a minute later the next use writes again."""
    with trio.fail_after(30):
        async with session_client(server, "alice", "viewer") as (client, csrf):
            secret = (await make_token(client, csrf))["secret"]
            store, tokens = server.services.store, server.services.tokens
            before = store.statistics().write_requests
            async with httpx.AsyncClient(base_url=server.url, timeout=10, headers=bearer(secret)) as bot:
                for _ in range(20):
                    assert (await bot.get(ME)).status_code == 200
                # The touch is queued, not awaited by the request: wait until it has committed (a
                # write taken by the writer is no longer pending but not yet done either).
                while store.statistics().write_requests - before < 1 or store.statistics().pending_writes:
                    await trio.sleep(0.01)
                first = (await client.get(TOKENS)).json()["tokens"][0]["last_used_at"]
                assert store.statistics().write_requests - before == 1
                tokens.clock = lambda: utcnow() + dt.timedelta(seconds=61)
                try:
                    assert (await bot.get(ME)).status_code == 200
                    assert (await bot.get(ME)).status_code == 200
                finally:
                    tokens.clock = utcnow
                while store.statistics().write_requests - before < 2 or store.statistics().pending_writes:
                    await trio.sleep(0.01)
                second = (await client.get(TOKENS)).json()["tokens"][0]["last_used_at"]
    assert store.statistics().write_requests - before == 2
    assert first is not None and second > first


async def test_websocket_with_a_bearer_token_streams(server):
    """A run's events stream over a WebSocket authenticated by `Authorization: Bearer`; a bad token
    is closed with 4401."""
    with trio.fail_after(30):
        async with session_client(server, "alice", "operator") as (client, csrf):
            secret = (await make_token(client, csrf))["secret"]
            response = await client.post(
                RUNS, json={"command": [PY, "-c", "print('one'); print('two')"]}, headers={"X-CSRF-Token": csrf}
            )
            run_id = response.json()["run"]["id"]
        url = server.url.replace("http://", "ws://") + f"/api/v1/runs/{run_id}/events/ws"
        lines, end = [], None
        async with open_websocket(url, extra_headers=[(b"Authorization", f"Bearer {secret}".encode())]) as ws:
            try:
                while True:
                    frame = json.loads(await ws.get_message())
                    if frame["type"] == "end":
                        end = frame
                        continue
                    lines += [e["data"] for e in frame["events"] if e["kind"] == "stdout"]
            except trio_websocket.ConnectionClosed as closed:
                code = closed.reason.code
        async with open_websocket(url, extra_headers=[(b"Authorization", b"Bearer rsv_nope")]) as bad:
            with pytest.raises(trio_websocket.ConnectionClosed) as refused:
                await bad.get_message()
    assert lines == ["one", "two"] and end is not None and code == 1000
    assert refused.value.reason.code == 4401

