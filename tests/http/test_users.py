"""The users API over real HTTP: admin only, checks in the documented order, last-admin protection."""

from __future__ import annotations

import json

import httpx
import pytest
import trio

from runsvc.http.routes import ROUTES, Access
from tests.helpers import PASSWORD, add_user, assert_error, login, raw_request

USERS = "/api/v1/users"
ME = "/api/v1/auth/me"
LOGIN = "/api/v1/auth/login"

# Every admin route, with a request body that would be valid for it.
ADMIN_REQUESTS = [
    ("GET", USERS, None),
    ("POST", USERS, {"username": "carol", "password": PASSWORD, "role": "viewer"}),
    ("PATCH", f"{USERS}/1", {"role": "viewer"}),
    ("POST", "/api/v1/enrollment-tokens", {"labels": ["gpu"]}),
    ("GET", "/api/v1/enrollment-tokens", None),
    ("DELETE", "/api/v1/enrollment-tokens/1", None),
    ("GET", "/api/v1/agents", None),
    ("DELETE", "/api/v1/agents/1", None),
    ("POST", "/api/v1/secrets", {"name": "db", "value": "v"}),
    ("PUT", "/api/v1/secrets/db", {"value": "v"}),
    ("DELETE", "/api/v1/secrets/db", None),
    ("POST", "/api/v1/webhooks", {"url": "http://127.0.0.1:9/hook"}),
    ("GET", "/api/v1/webhooks", None),
    ("PATCH", "/api/v1/webhooks/1", {"url": "http://127.0.0.1:9/other"}),
    ("DELETE", "/api/v1/webhooks/1", None),
    ("GET", "/api/v1/webhooks/1/deliveries", None),
]


def test_admin_requests_cover_every_admin_route():
    """The refusal tests below exercise every route the table marks ADMIN."""
    admin_routes = {(r.method, r.path) for r in ROUTES if r.access is Access.ADMIN}
    assert admin_routes == {
        ("GET", USERS), ("POST", USERS), ("PATCH", f"{USERS}/<int:user_id>"),
        ("POST", "/api/v1/enrollment-tokens"), ("GET", "/api/v1/enrollment-tokens"),
        ("DELETE", "/api/v1/enrollment-tokens/<int:token_id>"), ("GET", "/api/v1/agents"),
        ("DELETE", "/api/v1/agents/<int:agent_id>"), ("POST", "/api/v1/secrets"),
        ("PUT", "/api/v1/secrets/<name>"), ("DELETE", "/api/v1/secrets/<name>"),
        ("POST", "/api/v1/webhooks"), ("GET", "/api/v1/webhooks"), ("PATCH", "/api/v1/webhooks/<int:webhook_id>"),
        ("DELETE", "/api/v1/webhooks/<int:webhook_id>"), ("GET", "/api/v1/webhooks/<int:webhook_id>/deliveries"),
    }


@pytest.fixture(name="admin")
async def _admin(server, client):
    """`client` logged in as the admin `root`; yields its CSRF token."""
    await add_user(server, "root", "admin")
    return await login(client, "root")


def _send(client, method, path, body, csrf=None):
    headers = {} if csrf is None else {"X-CSRF-Token": csrf}
    return client.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize("role", ["viewer", "operator"])
@pytest.mark.parametrize(("method", "path", "body"), ADMIN_REQUESTS)
async def test_admin_routes_refuse_other_roles(server, client, role, method, path, body):
    """A viewer or an operator (with a valid CSRF token) gets 403 forbidden on every admin route."""
    with trio.fail_after(10):
        await add_user(server, "someone", role)
        csrf = await login(client, "someone")
        response = await _send(client, method, path, body, csrf)
    assert_error(response, 403, "forbidden")


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_REQUESTS)
async def test_admin_routes_refuse_no_session(client, method, path, body):
    """Without a session every admin route answers 401 unauthenticated."""
    with trio.fail_after(10):
        response = await _send(client, method, path, body)
    assert_error(response, 401, "unauthenticated")


@pytest.mark.parametrize(("method", "path", "body"), [r for r in ADMIN_REQUESTS if r[0] != "GET"])
async def test_csrf_is_checked_before_the_role(server, client, method, path, body):
    """A viewer without a CSRF token gets 403 csrf, not forbidden: CSRF comes first."""
    with trio.fail_after(10):
        await add_user(server, "someone", "viewer")
        await login(client, "someone")
        response = await _send(client, method, path, body)
    assert_error(response, 403, "csrf")


async def test_authentication_comes_before_body_checks(client):
    """Without a session, even a malformed body gets 401 (not 400)."""
    with trio.fail_after(10):
        response = await client.post(USERS, content=b"{oops", headers={"Content-Type": "application/json"})
    assert_error(response, 401, "unauthenticated")


async def test_role_comes_before_body_checks(server, client):
    """An operator's malformed body gets 403 forbidden (not 400)."""
    with trio.fail_after(10):
        await add_user(server, "op", "operator")
        csrf = await login(client, "op")
        response = await client.post(USERS, content=b"{oops",
                                     headers={"Content-Type": "application/json", "X-CSRF-Token": csrf})
    assert_error(response, 403, "forbidden")


async def test_validation_comes_before_not_found(client, admin):
    """PATCH of an unknown id with an invalid body is 400, with a valid body 404."""
    with trio.fail_after(10):
        invalid = await _send(client, "PATCH", f"{USERS}/999", {"role": 5}, admin)
        valid = await _send(client, "PATCH", f"{USERS}/999", {"role": "viewer"}, admin)
    assert_error(invalid, 400, "invalid_request", "role must be a string")
    assert_error(valid, 404, "not_found", "no user with id 999")


async def test_admin_lists_users(server, client, admin):
    """GET /users answers every user, oldest first, without password hashes."""
    with trio.fail_after(10):
        await add_user(server, "alice", "viewer")
        response = await client.get(USERS)
    assert response.status_code == 200
    users = response.json()["users"]
    assert [u["username"] for u in users] == ["admin", "root", "alice"]  # admin: the first-start account
    assert all(set(u) == {"id", "username", "role", "disabled", "created_at"} for u in users)


async def test_admin_creates_a_user_who_can_log_in(server, client, admin):
    """POST /users answers 201 {user}; the new user logs in with that password."""
    with trio.fail_after(10):
        response = await _send(client, "POST", USERS,
                               {"username": "carol", "password": "carols-password", "role": "operator"}, admin)
        assert response.status_code == 201, response.text
        user = response.json()["user"]
        assert user["username"] == "carol" and user["role"] == "operator" and user["disabled"] is False
        assert user["created_at"].endswith("Z")
        async with httpx.AsyncClient(base_url=server.url) as carol:
            await login(carol, "carol", "carols-password")


@pytest.mark.parametrize(
    ("body", "status", "code", "message"),
    [
        ({"username": "ROOT", "password": PASSWORD, "role": "viewer"}, 409, "conflict",
         "username ROOT is already taken"),
        ({"username": "bad name", "password": PASSWORD, "role": "viewer"}, 400, "invalid_request",
         "username must be 1-64 characters of A-Z a-z 0-9 _ . -"),
        ({"username": "a" * 65, "password": PASSWORD, "role": "viewer"}, 400, "invalid_request",
         "username must be 1-64 characters of A-Z a-z 0-9 _ . -"),
        ({"username": "", "password": PASSWORD, "role": "viewer"}, 400, "invalid_request",
         "username must be 1-64 characters of A-Z a-z 0-9 _ . -"),
        ({"username": "carol", "password": "short", "role": "viewer"}, 400, "invalid_request",
         "password must be at least 8 characters"),
        ({"username": "carol", "password": PASSWORD, "role": "root"}, 400, "invalid_request",
         "role must be one of viewer, operator, admin"),
        ({"username": "carol", "password": PASSWORD}, 400, "invalid_request", "role is required"),
        ({"username": "carol", "password": PASSWORD, "role": "viewer", "email": "c@x"}, 400,
         "invalid_request", "unknown field: email"),
        ({"username": ["carol"], "password": PASSWORD, "role": "viewer"}, 400, "invalid_request",
         "username must be a string"),
    ],
)
async def test_create_user_refusals(client, admin, body, status, code, message):
    """Duplicate (in any case), bad names, short passwords, unknown roles and fields are refused."""
    with trio.fail_after(10):
        response = await _send(client, "POST", USERS, body, admin)
    assert_error(response, status, code, message)


async def test_full_length_username_with_every_allowed_character(client, admin):
    """A 64-character name using letters, digits, _ . and - is fine."""
    name = ("Az09_.-" * 10)[:64]
    with trio.fail_after(10):
        response = await _send(client, "POST", USERS, {"username": name, "password": PASSWORD,
                                                       "role": "viewer"}, admin)
    assert response.status_code == 201, response.text


async def test_role_change_takes_effect_at_once(server, client, admin):
    """Promoting an operator to admin opens the admin routes on their existing session."""
    with trio.fail_after(10):
        op = await add_user(server, "op", "operator")
        async with httpx.AsyncClient(base_url=server.url) as op_client:
            await login(op_client, "op")
            assert_error(await op_client.get(USERS), 403, "forbidden")
            response = await _send(client, "PATCH", f"{USERS}/{op.id}", {"role": "admin"}, admin)
            assert response.status_code == 200
            assert response.json()["user"]["role"] == "admin"
            assert (await op_client.get(USERS)).status_code == 200


async def test_password_change_ends_sessions(server, client, admin):
    """A new password logs the user out everywhere; only the new password works afterwards."""
    with trio.fail_after(10):
        alice = await add_user(server, "alice", "viewer")
        async with httpx.AsyncClient(base_url=server.url) as alice_client:
            await login(alice_client, "alice")
            response = await _send(client, "PATCH", f"{USERS}/{alice.id}", {"password": "new-password"}, admin)
            assert response.status_code == 200
            assert_error(await alice_client.get(ME), 401, "unauthenticated")
            old = await alice_client.post(LOGIN, json={"username": "alice", "password": PASSWORD})
            assert_error(old, 401, "unauthenticated")
            await login(alice_client, "alice", "new-password")


async def test_disable_ends_sessions_and_enable_restores_login(server, client, admin):
    """Disabling logs the user out and refuses logins with the usual 401; enabling lets them back."""
    with trio.fail_after(10):
        alice = await add_user(server, "alice", "operator")
        async with httpx.AsyncClient(base_url=server.url) as alice_client:
            await login(alice_client, "alice")
            response = await _send(client, "PATCH", f"{USERS}/{alice.id}", {"disabled": True}, admin)
            assert response.json()["user"]["disabled"] is True
            assert_error(await alice_client.get(ME), 401, "unauthenticated")
            refused = await alice_client.post(LOGIN, json={"username": "alice", "password": PASSWORD})
            assert_error(refused, 401, "unauthenticated", "invalid username or password")
            response = await _send(client, "PATCH", f"{USERS}/{alice.id}", {"disabled": False}, admin)
            assert response.json()["user"]["disabled"] is False
            await login(alice_client, "alice")


async def test_last_enabled_admin_cannot_be_demoted_or_disabled(server, client, admin):
    """With one enabled admin left, demoting or disabling it is 409; with two, it works once."""
    with trio.fail_after(10):
        users = (await client.get(USERS)).json()["users"]
        first_admin = next(u for u in users if u["username"] == "admin")
        root = next(u for u in users if u["username"] == "root")
        # Two enabled admins (the first-start `admin` and `root`): disabling one of them is fine.
        response = await _send(client, "PATCH", f"{USERS}/{first_admin['id']}", {"disabled": True}, admin)
        assert response.status_code == 200
        for change in ({"role": "operator"}, {"role": "viewer"}, {"disabled": True},
                       {"role": "viewer", "disabled": True}):
            response = await _send(client, "PATCH", f"{USERS}/{root['id']}", change, admin)
            assert_error(response, 409, "conflict", "the last enabled admin cannot be demoted or disabled")
        # Still an admin, still logged in; "demoting" to admin and re-enabling itself are harmless.
        assert (await client.get(ME)).json()["user"]["role"] == "admin"
        response = await _send(client, "PATCH", f"{USERS}/{root['id']}", {"role": "admin", "disabled": False},
                               admin)
        assert response.status_code == 200


async def test_patch_refusals(client, admin):
    """Unknown ids are 404, ids past SQLite's integer range 400 (SPEC §14); bad values are 400 naming the
    field."""
    with trio.fail_after(10):
        assert_error(await _send(client, "PATCH", f"{USERS}/424242", {"role": "viewer"}, admin), 404,
                     "not_found", "no user with id 424242")
        assert_error(await _send(client, "PATCH", f"{USERS}/{2**70}", {"role": "viewer"}, admin), 400,
                     "invalid_request", "user_id must be <= 9223372036854775807")
        assert_error(await _send(client, "PATCH", f"{USERS}/0", {"role": "viewer"}, admin), 404, "not_found")
        assert_error(await _send(client, "PATCH", f"{USERS}/abc", {"role": "viewer"}, admin), 404, "not_found")
        assert_error(await _send(client, "PATCH", f"{USERS}/2", {"disabled": "yes"}, admin), 400,
                     "invalid_request", "disabled must be a boolean")
        assert_error(await _send(client, "PATCH", f"{USERS}/2", {"password": "short"}, admin), 400,
                     "invalid_request", "password must be at least 8 characters")
        assert_error(await _send(client, "PATCH", f"{USERS}/2", {"role": "superuser"}, admin), 400,
                     "invalid_request", "role must be one of viewer, operator, admin")
        assert_error(await _send(client, "PATCH", f"{USERS}/2", {"username": "x"}, admin), 400,
                     "invalid_request", "unknown field: username")
        assert_error(await _send(client, "PATCH", f"{USERS}/2", [], admin), 400,
                     "invalid_request", "request body must be a JSON object")


async def test_empty_patch_changes_nothing(server, client, admin):
    """PATCH {} answers the user unchanged."""
    with trio.fail_after(10):
        alice = await add_user(server, "alice", "viewer")
        response = await _send(client, "PATCH", f"{USERS}/{alice.id}", {}, admin)
    assert response.status_code == 200
    assert response.json()["user"] == alice.to_json()


async def test_admin_body_over_the_limit_is_413(server, settings, client, admin):
    """An admin's oversized POST /users is 413 (checked after authentication, before validation)."""
    size = settings.max_body_bytes + 10
    cookie = f"runsvc_session={client.cookies['runsvc_session']}"
    headers = {"Content-Length": str(size), "Cookie": cookie, "X-CSRF-Token": admin}
    with trio.fail_after(10):
        head, body = await raw_request(server.url, "POST", USERS, headers, [b"{" * size])
    assert head.startswith(b"HTTP/1.1 413"), head
    assert json.loads(body)["error"]["code"] == "payload_too_large"
