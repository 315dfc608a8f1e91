"""The first visit and the `runsvc_logged_in` companion cookie, against `python -m runsvc serve`.

The UI asks /auth/me only when the readable companion cookie says a session may exist, so a visitor who
was never logged in reaches the login page without a single console error (no 401 for the browser to
log). The companion cookie grants nothing: only the HttpOnly session cookie does.
"""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.e2e.browser import ADMIN_PASSWORD, USER_PASSWORD, Api, checked_pages, log_in, serve
from tests.helpers import set_cookie_attributes

expect.set_options(timeout=20_000)  # a shared 2-core machine; these are deadlines, not timings
LOGGED_IN = "runsvc_logged_in"
SESSION = "runsvc_session"


@pytest.fixture(scope="module", name="server")
def _server(tmp_path_factory):
    with serve(tmp_path_factory.mktemp("ui-session") / "data") as server:
        api = Api(server.url)
        api.post("/users", {"username": "olga", "password": USER_PASSWORD, "role": "operator"})
        api.close()
        yield server


def api_requests(page: Page) -> list[str]:
    """The paths of the API calls the page makes from now on (a live list)."""
    seen: list[str] = []
    page.on("request", lambda request: seen.append(re.sub(r"^https?://[^/]+", "", request.url))
            if "/api/" in request.url else None)
    return seen


def cookie_names(page: Page) -> set[str]:
    return {cookie["name"] for cookie in page.context.cookies()}


def test_first_visit_logs_no_console_error_at_all(browser, server):
    """/login and / opened with no cookie: the login page, no API call, and no console error of any kind
    (not even the browser's note about a 401)."""
    with checked_pages(browser, expected_console_errors=()) as new_page:
        page = new_page()
        calls = api_requests(page)
        page.goto(server.url + "/login")
        expect(page.get_by_role("button", name="Log in")).to_be_visible()
        page.goto(server.url + "/runs/new")
        expect(page).to_have_url(server.url + "/login?next=%2Fruns%2Fnew")
        expect(page.get_by_label("Username")).to_be_visible()
        assert calls == []

        page.get_by_label("Username").fill("olga")
        page.get_by_label("Password").fill(USER_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(server.url + "/runs/new")
        assert {SESSION, LOGGED_IN} <= cookie_names(page)
        page.goto(server.url + "/")  # a new page load asks /auth/me, since a session may exist
        expect(page.get_by_role("button", name="Log out")).to_be_visible()
        assert "/api/v1/auth/me" in calls

        page.get_by_role("button", name="Log out").click()
        expect(page).to_have_url(server.url + "/login")
        assert cookie_names(page) & {SESSION, LOGGED_IN} == set()
        del calls[:]
        page.goto(server.url + "/")  # after logout, a clean first visit again
        expect(page).to_have_url(server.url + "/login?next=%2F")
        expect(page.get_by_role("button", name="Log in")).to_be_visible()
        assert calls == []


def test_a_companion_cookie_without_a_session_goes_to_login_and_is_forgotten(browser, server):
    """A companion cookie whose session is gone (expired, or the HttpOnly cookie removed) costs one
    /auth/me answered 401; the page goes to login and drops the companion, so the next visit is clean."""
    with checked_pages(browser) as new_page:
        page = new_page()
        log_in(page, server.url, "olga")
        page.context.clear_cookies(name=SESSION)
        assert cookie_names(page) == {LOGGED_IN}
        page.goto(server.url + "/runs/new")
        expect(page).to_have_url(server.url + "/login?next=%2Fruns%2Fnew")
        expect(page.get_by_role("button", name="Log in")).to_be_visible()
        assert LOGGED_IN not in cookie_names(page)


def test_the_companion_cookie_is_set_like_the_session_cookie_but_readable_and_grants_nothing(server):
    """Login sets runsvc_logged_in=1 with the session cookie's lifetime, path and SameSite, not HttpOnly;
    alone it is 401 everywhere (also with a CSRF header); logout clears it."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        login = client.post("/api/v1/auth/login", json={"username": "olga", "password": USER_PASSWORD})
        assert login.status_code == 200, login.text
        session = set_cookie_attributes(login, SESSION)
        companion = set_cookie_attributes(login, LOGGED_IN)
        assert companion["value"] == "1"
        assert "httponly" in session and "httponly" not in companion
        for attribute in ("max-age", "path", "samesite"):
            assert companion[attribute] == session[attribute], attribute
        assert "secure" not in companion

        csrf = {"X-CSRF-Token": login.json()["csrf_token"]}
        with httpx.Client(base_url=server.url, timeout=30, cookies={LOGGED_IN: "1"}) as impostor:
            assert impostor.get("/api/v1/auth/me").status_code == 401
            assert impostor.get("/api/v1/runs").status_code == 401
            assert impostor.post("/api/v1/runs", json={"command": ["true"]}, headers=csrf).status_code == 401
            assert impostor.post("/api/v1/tokens", json={"name": "x"}, headers=csrf).status_code == 401

        logout = client.post("/api/v1/auth/logout", headers=csrf)
        assert logout.status_code == 204
        cleared = set_cookie_attributes(logout, LOGGED_IN)
        assert cleared["value"] in ("", '""') and cleared["max-age"] == "0" and cleared["path"] == "/"


def test_the_companion_cookie_is_secure_when_the_session_cookie_is(tmp_path):
    """With --cookie-secure both cookies carry Secure."""
    with serve(tmp_path / "data", "--cookie-secure", "true") as server, httpx.Client(base_url=server.url) as client:
        login = client.post("/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
        assert login.status_code == 200, login.text
        assert "secure" in set_cookie_attributes(login, SESSION)
        assert "secure" in set_cookie_attributes(login, LOGGED_IN)


def test_login_next_never_leaves_the_site(browser, server):
    """`next` values that a browser resolves to another origin (`/\\evil`, `//evil`) or to the login page
    send the user to `/` after logging in; a path of this site is kept, query and fragment included."""
    hostile = ["/\\evil.example", "/\\/evil.example", "//evil.example", "https://evil.example",
               "/login", "javascript:alert(1)", ""]
    with checked_pages(browser) as new_page:
        page = new_page()
        page.goto(server.url + "/login")
        results = page.evaluate(
            "async (values) => { const { safeNext } = await import('/ui/router.js');"
            " return values.map((value) => safeNext(value)); }",
            [*hostile, "/runs/7?tab=log#L3"],
        )
        assert results == ["/"] * len(hostile) + ["/runs/7?tab=log#L3"]
        page.goto(server.url + "/login?next=" + "%2F%5Cevil.example")
        page.get_by_label("Username").fill("olga")
        page.get_by_label("Password").fill(USER_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(server.url + "/")
        expect(page.get_by_role("button", name="Log out")).to_be_visible()
