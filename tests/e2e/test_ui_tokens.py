"""The Tokens page (SPEC §9, §12) in headless Chromium against `python -m runsvc serve`: create a token
(its secret shown once, and working as a bearer token), list, revoke; roles offered up to one's own.

One server and one browser for the module; every test gets fresh browser contexts and fails on any
uncaught page error, dialog or unexpected console error.
"""

from __future__ import annotations

import datetime as dt
import re

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.e2e.browser import ADMIN_PASSWORD, USER_PASSWORD, Api, log_in, serve

expect.set_options(timeout=20_000)  # a shared 2-core machine; these are deadlines, not timings


@pytest.fixture(scope="module", name="server")
def _server(tmp_path_factory):
    with serve(tmp_path_factory.mktemp("ui-tokens") / "data") as server:
        yield server


def bearer_get(server, secret: str, path: str) -> httpx.Response:
    return httpx.get(f"{server.url}/api/v1{path}", headers={"Authorization": f"Bearer {secret}"}, timeout=30)


def token_row(page: Page, name: str):
    return page.get_by_role("row").filter(has=page.get_by_role("cell", name=name, exact=True))


def test_operator_creates_uses_and_revokes_a_token(new_page, server, api):
    """An operator is offered viewer and operator only (operator preselected, 90 days); the secret is shown
    once, can be copied, and works as a bearer token; the list shows the token; Revoke removes it and the
    secret then gets 401."""
    page = new_page()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    log_in(page, server.url, "olga")
    page.get_by_role("link", name="Tokens").click()
    expect(page).to_have_url(server.url + "/tokens")
    expect(page.get_by_role("heading", name="API tokens")).to_be_visible()
    role = page.get_by_label("Role")
    assert role.locator("option").all_text_contents() == ["viewer", "operator"]
    expect(role).to_have_value("operator")
    expect(page.get_by_label("Expires in (days)")).to_have_value("90")
    expect(page.get_by_text("Leave it empty for a token that never expires.")).to_be_visible()
    expect(page.get_by_role("columnheader", name="User")).to_have_count(0)  # one's own tokens only

    page.get_by_label("Token name").fill("deploy from ci")
    page.get_by_role("button", name="Create token").click()
    secret_box = page.get_by_label("Secret of deploy from ci")
    expect(secret_box).to_have_value(re.compile(r"^rsv_[A-Za-z0-9_-]{43}$"))
    secret = secret_box.input_value()
    expect(page.get_by_text("it will not be shown again")).to_be_visible()
    expect(secret_box).to_be_focused()  # ready to copy from the keyboard
    page.get_by_role("button", name="Copy secret").click()
    expect(page.get_by_role("status").filter(has_text="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == secret

    me = bearer_get(server, secret, "/auth/me")
    assert me.status_code == 200, me.text
    assert me.json() == {"user": {**me.json()["user"], "username": "olga", "role": "operator"}, "csrf_token": None}
    [token] = [t for t in api.get("/tokens")["tokens"] if t["name"] == "deploy from ci"]
    assert token["username"] == "olga" and token["role"] == "operator"
    expires = dt.datetime.fromisoformat(token["expires_at"]) - dt.datetime.fromisoformat(token["created_at"])
    assert expires == dt.timedelta(days=90)
    row = token_row(page, "deploy from ci")
    expect(row).to_contain_text("operator")
    expect(row.get_by_role("button")).to_have_text("Revoke")
    expect(row.get_by_role("button", name="Revoke")).to_have_accessible_name("Revoke deploy from ci")

    page.reload()  # the secret is gone for good, the token stays listed
    expect(token_row(page, "deploy from ci")).to_be_visible()
    expect(page.get_by_label("Secret of deploy from ci")).to_have_count(0)
    assert secret not in page.content()

    token_row(page, "deploy from ci").get_by_role("button", name="Revoke").click()
    expect(page.get_by_role("status")).to_have_text("Revoked deploy from ci.")
    expect(token_row(page, "deploy from ci")).to_have_count(0)
    assert bearer_get(server, secret, "/auth/me").status_code == 401
    assert [t for t in api.get("/tokens")["tokens"] if t["name"] == "deploy from ci"] == []


def test_viewer_has_the_tokens_link_and_makes_a_viewer_token_that_never_expires(page, server):
    """A viewer sees Tokens (not New run), is offered the viewer role only, and an emptied expiry makes
    a token that never expires; the token reads but cannot submit."""
    log_in(page, server.url, "vic")
    expect(page.get_by_role("link", name="New run")).to_have_count(0)
    page.get_by_role("link", name="Tokens").click()
    assert page.get_by_label("Role").locator("option").all_text_contents() == ["viewer"]
    page.get_by_label("Token name").fill("dashboard")
    page.get_by_label("Expires in (days)").fill("")
    page.get_by_role("button", name="Create token").click()
    secret = page.get_by_label("Secret of dashboard").input_value()
    expect(token_row(page, "dashboard")).to_contain_text("never")
    page.get_by_role("button", name="Done").click()
    expect(page.get_by_label("Secret of dashboard")).to_have_count(0)

    assert bearer_get(server, secret, "/auth/me").json()["user"]["role"] == "viewer"
    assert bearer_get(server, secret, "/runs").status_code == 200
    refused = httpx.post(f"{server.url}/api/v1/runs", json={"command": ["true"]},
                         headers={"Authorization": f"Bearer {secret}"}, timeout=30)
    assert refused.status_code == 403
    [token] = bearer_get(server, secret, "/tokens").json()["tokens"]
    assert token["name"] == "dashboard" and token["expires_at"] is None


def test_admin_sees_everyones_tokens_and_revokes_another_users(page, server, api):
    """An admin is offered every role, sees every user's tokens with a User column, and can revoke
    someone else's token (its button names the owner)."""
    olga = Api(server.url, "olga", USER_PASSWORD)
    made = olga.post("/tokens", {"name": "olga's nightly", "role": "viewer"})
    olga.close()
    log_in(page, server.url, "admin", password=ADMIN_PASSWORD, path="/tokens")
    assert page.get_by_label("Role").locator("option").all_text_contents() == ["viewer", "operator", "admin"]
    expect(page.get_by_label("Role")).to_have_value("admin")
    expect(page.get_by_role("columnheader", name="User")).to_be_visible()
    row = token_row(page, "olga's nightly")
    expect(row.get_by_role("cell", name="olga", exact=True)).to_be_visible()
    row.get_by_role("button", name="Revoke olga's nightly of olga").click()
    expect(token_row(page, "olga's nightly")).to_have_count(0)
    assert bearer_get(server, made["secret"], "/auth/me").status_code == 401


def test_an_api_refusal_shows_in_an_alert(page, server, api):
    """A user demoted while the page is open asks for their old role: the API's 403 shows in role alert
    and no secret appears."""
    pat = api.post("/users", {"username": "pat", "password": USER_PASSWORD, "role": "operator"})["user"]
    log_in(page, server.url, "pat", path="/tokens")
    expect(page.get_by_label("Role")).to_have_value("operator")
    response = api.client.patch(f"/api/v1/users/{pat['id']}", json={"role": "viewer"}, headers=api.csrf)
    assert response.status_code == 200, response.text
    page.get_by_label("Token name").fill("too strong")
    page.get_by_role("button", name="Create token").click()
    expect(page.get_by_role("alert")).to_have_text("a viewer cannot create a token with role operator")
    expect(page.get_by_role("button", name="Copy secret")).to_have_count(0)
    expect(token_row(page, "too strong")).to_have_count(0)
