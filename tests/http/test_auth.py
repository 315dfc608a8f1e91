"""Logging in and out over real HTTP: cookie, CSRF, refusals, throttle, expiry."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import httpx
import pytest
import trio

from runsvc.timeutil import utcnow
from tests.conftest import make_settings
from tests.helpers import (
    PASSWORD,
    add_user,
    assert_error,
    login,
    raw_request,
    running_server,
    set_cookie_attributes,
)

LOGIN = "/api/v1/auth/login"
LOGOUT = "/api/v1/auth/logout"
ME = "/api/v1/auth/me"
BAD_CREDENTIALS = "invalid username or password"


def moved_clock(offset_s: float):
    return lambda: utcnow() + dt.timedelta(seconds=offset_s)


async def test_login_sets_cookie_and_answers_user_and_csrf(server, client):
    """A good login answers {user, csrf_token} and sets an HttpOnly, SameSite=Lax, Path=/ cookie."""
    with trio.fail_after(10):
        user = await add_user(server, "alice", "operator")
        response = await client.post(LOGIN, json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user"] == {"id": user.id, "username": "alice", "role": "operator", "disabled": False,
                            "created_at": user.created_at}
    assert len(body["csrf_token"]) == 64
    cookie = set_cookie_attributes(response, "runsvc_session")
    assert "httponly" in cookie
    assert cookie["samesite"] == "Lax"
    assert cookie["path"] == "/"
    assert "secure" not in cookie
    assert cookie["max-age"] == str(7 * 86400)
    assert len(cookie["value"]) == 43  # 256 random bits, base64url


async def test_session_token_is_stored_only_as_its_sha256(server, client):
    """The sessions table holds sha256(token), never the token or the CSRF token."""
    with trio.fail_after(10):
        await add_user(server, "alice", "viewer")
        response = await client.post(LOGIN, json={"username": "alice", "password": PASSWORD})
        token = response.cookies["runsvc_session"]
        rows = await server.services.store.read(
            lambda conn: [tuple(r) for r in conn.execute("SELECT token_hash FROM sessions")]
        )
    assert rows == [(hashlib.sha256(token.encode()).digest(),)]


async def test_cookie_is_secure_when_configured(tmp_path):
    """With cookie_secure the session cookie also carries Secure."""
    with trio.fail_after(20):
        async with running_server(make_settings(tmp_path, cookie_secure=True)) as server:
            await add_user(server, "alice", "viewer")
            async with httpx.AsyncClient(base_url=server.url) as client:
                response = await client.post(LOGIN, json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 200
    cookie = set_cookie_attributes(response, "runsvc_session")
    assert "secure" in cookie and "httponly" in cookie and cookie["samesite"] == "Lax"


async def test_me_answers_the_same_csrf_token_for_the_session(server, client):
    """/auth/me answers the user and the CSRF token given at login, every time."""
    with trio.fail_after(10):
        await add_user(server, "alice", "admin")
        csrf = await login(client, "alice")
        first = await client.get(ME)
        second = await client.get(ME)
    assert first.status_code == 200
    assert first.json()["csrf_token"] == csrf == second.json()["csrf_token"]
    assert first.json()["user"]["username"] == "alice"
    assert first.json()["user"]["role"] == "admin"


async def test_username_is_case_insensitive(server, client):
    """ALICE logs in as alice; the user keeps the case it was created with."""
    with trio.fail_after(10):
        await add_user(server, "Alice", "viewer")
        response = await client.post(LOGIN, json={"username": "ALICE", "password": PASSWORD})
    assert response.status_code == 200
    assert response.json()["user"]["username"] == "Alice"


async def test_unknown_user_wrong_password_and_disabled_user_get_the_same_401(server, client):
    """The three refusals are indistinguishable: same status, same body."""
    with trio.fail_after(10):
        await add_user(server, "alice", "viewer")
        bob = await add_user(server, "bob", "viewer")
        await server.services.auth.update_user(bob.id, disabled=True)
        answers = [
            await client.post(LOGIN, json={"username": "nobody", "password": PASSWORD}),
            await client.post(LOGIN, json={"username": "alice", "password": "wrong-password"}),
            await client.post(LOGIN, json={"username": "bob", "password": PASSWORD}),
            await client.post(LOGIN, json={"username": "no such name!", "password": PASSWORD}),
        ]
    for response in answers:
        assert_error(response, 401, "unauthenticated", BAD_CREDENTIALS)
        assert "set-cookie" not in response.headers
    assert len({r.content for r in answers}) == 1


async def test_no_session_gets_401_on_session_routes(client):
    """Without a cookie, /auth/me and /auth/logout answer 401; a made-up cookie too."""
    with trio.fail_after(10):
        assert_error(await client.get(ME), 401, "unauthenticated")
        assert_error(await client.post(LOGOUT), 401, "unauthenticated")
        client.cookies.set("runsvc_session", "x" * 43)
        assert_error(await client.get(ME), 401, "unauthenticated")
        client.cookies.set("runsvc_session", "x" * 5000)
        assert_error(await client.get(ME), 401, "unauthenticated")


async def test_logout_deletes_the_session(server, client):
    """Logout answers 204, clears the cookie, and the old token no longer works anywhere."""
    with trio.fail_after(10):
        await add_user(server, "alice", "viewer")
        csrf = await login(client, "alice")
        token = client.cookies["runsvc_session"]
        response = await client.post(LOGOUT, headers={"X-CSRF-Token": csrf})
        assert response.status_code == 204
        cleared = set_cookie_attributes(response, "runsvc_session")
        assert cleared["value"] in ("", '""') and cleared["max-age"] == "0"
        async with httpx.AsyncClient(base_url=server.url, cookies={"runsvc_session": token}) as replay:
            assert_error(await replay.get(ME), 401, "unauthenticated")
        count = await server.services.store.read(lambda c: c.execute("SELECT count(*) FROM sessions").fetchone()[0])
    assert count == 0


@pytest.mark.parametrize("header", [None, "", "0" * 64, "not-even-hex", "é"])
async def test_state_change_without_the_right_csrf_token_is_403_csrf(server, client, header):
    """A cookie-authenticated POST with a missing or wrong X-CSRF-Token is refused; the session lives."""
    with trio.fail_after(10):
        await add_user(server, "alice", "viewer")
        await login(client, "alice")
        headers = {} if header is None else {"X-CSRF-Token": header.encode()}
        response = await client.post(LOGOUT, headers=headers)
        assert_error(response, 403, "csrf")
        assert (await client.get(ME)).status_code == 200


async def test_csrf_token_of_another_session_is_refused(server, client):
    """The CSRF token belongs to its session: another session's token does not work."""
    with trio.fail_after(10):
        await add_user(server, "alice", "viewer")
        async with httpx.AsyncClient(base_url=server.url) as other:
            other_csrf = await login(other, "alice")
        await login(client, "alice")
        assert_error(await client.post(LOGOUT, headers={"X-CSRF-Token": other_csrf}), 403, "csrf")


async def test_expired_session_is_401(server, client):
    """Once session_ttl_s has passed, the cookie no longer authenticates."""
    with trio.fail_after(10):
        await add_user(server, "alice", "viewer")
        await login(client, "alice")
        auth = server.services.auth
        auth.clock = moved_clock(7 * 86400 - 5)
        assert (await client.get(ME)).status_code == 200
        auth.clock = moved_clock(7 * 86400 + 1)
        assert_error(await client.get(ME), 401, "unauthenticated")


async def test_disabling_a_user_ends_their_session_at_once(server, client):
    """A disabled user's open session stops working on the next request."""
    with trio.fail_after(10):
        alice = await add_user(server, "alice", "operator")
        await login(client, "alice")
        await server.services.auth.update_user(alice.id, disabled=True)
        assert_error(await client.get(ME), 401, "unauthenticated")


# ---- request bodies ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "request body must be valid JSON (Expecting property name enclosed in double "
                       "quotes at line 1 column 2)"),
        (b"", "request body must be valid JSON (Expecting value at line 1 column 1)"),
        (b"[]", "request body must be a JSON object"),
        (b'"alice"', "request body must be a JSON object"),
        (b'{"username": "alice"}', "password is required"),
        (b'{"username": "alice", "password": 12345678}', "password must be a string"),
        (b'{"username": null, "password": "x"}', "username must be a string"),
        (b'{"username": "a", "password": "b", "colour": "red"}', "unknown field: colour"),
        (b'{"username": "a", "username": "b", "password": "c"}', "duplicate field: username"),
        (b'{"username": "a", "password": NaN}', "request body must be valid JSON (NaN is not a JSON value)"),
        (b'{"username": "\xff", "password": "b"}', "request body must be UTF-8"),
    ],
)
async def test_malformed_login_body_is_400_naming_the_problem(client, content, message):
    """Malformed JSON, a non-object, a missing, mistyped or unknown field: 400 with a precise message."""
    with trio.fail_after(10):
        response = await client.post(LOGIN, content=content, headers={"Content-Type": "application/json"})
    assert_error(response, 400, "invalid_request", message)


async def test_login_body_must_be_sent_as_json(client):
    """A form-encoded or text/plain login (what a cross-site form can send) is refused."""
    with trio.fail_after(10):
        form = await client.post(LOGIN, data={"username": "a", "password": "b"})
        plain = await client.post(LOGIN, content=b'{"username": "a", "password": "b"}',
                                  headers={"Content-Type": "text/plain"})
    message = "request body must be JSON sent as Content-Type: application/json"
    assert_error(form, 400, "invalid_request", message)
    assert_error(plain, 400, "invalid_request", message)


async def test_oversized_body_is_413(server, settings):
    """A body over max_body_bytes with a Content-Length is 413 payload_too_large."""
    size = settings.max_body_bytes + 1
    chunks = [b"a" * 65536] * (size // 65536) + [b"a" * (size % 65536)]
    with trio.fail_after(10):
        head, body = await raw_request(server.url, "POST", LOGIN, {"Content-Length": str(size)}, chunks)
    assert head.startswith(b"HTTP/1.1 413"), head
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body)["error"]["code"] == "payload_too_large"


async def test_oversized_chunked_body_is_413(server, settings):
    """A chunked body (no Content-Length) is cut off at max_body_bytes with a JSON 413 too."""
    chunk = b"a" * 65536
    chunks = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * (2 * settings.max_body_bytes // len(chunk))
    with trio.fail_after(10):
        head, body = await raw_request(server.url, "POST", LOGIN, {"Transfer-Encoding": "chunked"}, chunks)
    assert head.startswith(b"HTTP/1.1 413"), head
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body)["error"]["code"] == "payload_too_large"


async def test_body_just_under_the_limit_is_read(settings, client):
    """A body of exactly max_body_bytes is accepted (and here fails only on its credentials)."""
    padding = settings.max_body_bytes - len(b'{"username": "a", "password": ""}')
    body = b'{"username": "a", "password": "' + b"p" * padding + b'"}'
    assert len(body) == settings.max_body_bytes
    with trio.fail_after(10):
        response = await client.post(LOGIN, content=body, headers={"Content-Type": "application/json"})
    assert_error(response, 401, "unauthenticated")


# ---- throttle ---------------------------------------------------------------------------------------


async def _fail(client, username="alice", times=1):
    for _ in range(times):
        response = await client.post(LOGIN, json={"username": username, "password": "wrong-password"})
        assert_error(response, 401, "unauthenticated", BAD_CREDENTIALS)


async def test_fifth_failure_locks_out_even_the_right_password(server, client):
    """After 5 failures the 6th attempt is 429 with Retry-After: 60, even with the right password."""
    with trio.fail_after(10):
        await add_user(server, "alice", "viewer")
        await _fail(client, times=5)
        response = await client.post(LOGIN, json={"username": "alice", "password": PASSWORD})
    assert_error(response, 429, "too_many_attempts")
    assert response.headers["retry-after"] == "60"
    assert "set-cookie" not in response.headers


async def test_lockout_counts_down_then_doubles_then_success_clears(server, client):
    """Retry-After counts down; a failure after the lockout doubles it; a success clears the row."""
    with trio.fail_after(10):
        await add_user(server, "alice", "viewer")
        auth = server.services.auth
        await _fail(client, times=5)
        auth.clock = moved_clock(45)
        response = await client.post(LOGIN, json={"username": "alice", "password": PASSWORD})
        assert_error(response, 429, "too_many_attempts")
        assert int(response.headers["retry-after"]) in (14, 15)
        auth.clock = moved_clock(61)
        await _fail(client)  # the lockout is over: the password is checked again, and is wrong
        response = await client.post(LOGIN, json={"username": "alice", "password": PASSWORD})
        assert_error(response, 429, "too_many_attempts")
        assert response.headers["retry-after"] == "120"
        auth.clock = moved_clock(61 + 121)
        await login(client, "alice")
        rows = await server.services.store.read(
            lambda c: c.execute("SELECT count(*) FROM login_throttle").fetchone()[0]
        )
    assert rows == 0


async def test_success_resets_the_failure_count(server, client):
    """4 failures, a success, then 4 more failures: still no lockout."""
    with trio.fail_after(10):
        await add_user(server, "alice", "viewer")
        await _fail(client, times=4)
        await login(client, "alice")
        await _fail(client, times=4)
        await login(client, "alice")


async def test_throttle_applies_to_unknown_users_too(server, client):
    """Guessing at a name that does not exist is locked out the same way (no user enumeration)."""
    with trio.fail_after(10):
        await _fail(client, username="nobody", times=5)
        response = await client.post(LOGIN, json={"username": "NoBody", "password": PASSWORD})
    assert_error(response, 429, "too_many_attempts")


async def test_throttle_is_per_client_address(server, client):
    """A lockout of alice from 127.0.0.1 does not lock alice out from 127.0.0.2."""
    with trio.fail_after(10):
        await add_user(server, "alice", "viewer")
        await _fail(client, times=5)
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(base_url=server.url, transport=transport) as elsewhere:
            await login(elsewhere, "alice")
        assert (await client.post(LOGIN, json={"username": "alice", "password": PASSWORD})).status_code == 429


async def test_lockout_survives_a_restart(tmp_path):
    """The throttle lives in SQLite: a server restarted on the same data dir keeps the lockout."""
    settings = make_settings(tmp_path)
    with trio.fail_after(30):
        async with running_server(settings) as server:
            await add_user(server, "alice", "viewer")
            async with httpx.AsyncClient(base_url=server.url) as client:
                await _fail(client, times=5)
        async with running_server(settings) as server:
            async with httpx.AsyncClient(base_url=server.url) as client:
                response = await client.post(LOGIN, json={"username": "alice", "password": PASSWORD})
    assert_error(response, 429, "too_many_attempts")
    assert 1 <= int(response.headers["retry-after"]) <= 60


async def test_concurrent_guesses_cannot_slip_past_the_lockout(tmp_path):
    """Twenty guesses sent at once (logins_per_client raised so that all are in progress together): at
    most five are checked, the rest are refused with 429."""
    statuses: list[int] = []

    with trio.fail_after(20):
        async with running_server(make_settings(tmp_path, logins_per_client=20)) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:

                async def guess():
                    response = await client.post(LOGIN, json={"username": "alice", "password": "wrong-password"})
                    statuses.append(response.status_code)

                await add_user(server, "alice", "viewer")
                async with trio.open_nursery() as nursery:
                    for _ in range(20):
                        nursery.start_soon(guess)
    assert statuses.count(401) == 5
    assert statuses.count(429) == 15
