"""Logging in and out, and who am I."""

from __future__ import annotations

from quart import Response, request

from ..access import SESSION_COOKIE, current_principal
from ..types import json_response, no_content, services
from ..validation import read_json_object, string

LOGIN_FIELDS = {"username": string(), "password": string()}

# A readable companion of the HttpOnly session cookie, with the same lifetime, so the web UI can tell
# "probably logged in" from "certainly not" without asking /auth/me (whose 401 the browser would log
# as an error on every first visit). It holds no secret and the server never reads it: it grants nothing.
LOGGED_IN_COOKIE = "runsvc_logged_in"


async def login() -> Response:
    body = await read_json_object(LOGIN_FIELDS)
    svc = services()
    client = request.remote_addr or "unknown"
    session, token = await svc.auth.login(body["username"], body["password"], client)
    response = json_response({"user": session.user.to_json(), "csrf_token": session.csrf_token})
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(svc.settings.session_ttl_s),
        path="/",
        secure=svc.settings.cookie_secure,
        httponly=True,
        samesite="Lax",
    )
    response.set_cookie(
        LOGGED_IN_COOKIE,
        "1",
        max_age=int(svc.settings.session_ttl_s),
        path="/",
        secure=svc.settings.cookie_secure,
        httponly=False,
        samesite="Lax",
    )
    return response


async def logout() -> Response:
    svc = services()
    await svc.auth.logout(request.cookies[SESSION_COOKIE])
    response = no_content()
    response.delete_cookie(
        SESSION_COOKIE, path="/", secure=svc.settings.cookie_secure, httponly=True, samesite="Lax"
    )
    response.delete_cookie(
        LOGGED_IN_COOKIE, path="/", secure=svc.settings.cookie_secure, httponly=False, samesite="Lax"
    )
    return response


async def me() -> Response:
    """The caller, with the role in force (for a token: the lower of the token's and the user's), and
    the CSRF token (null for a token, which needs none)."""
    principal = current_principal()
    return json_response({"user": principal.user.to_json(), "csrf_token": principal.csrf_token})
