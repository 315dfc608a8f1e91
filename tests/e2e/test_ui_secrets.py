"""The Secrets page and the forms' Secrets field (SPEC §9, §17) in headless Chromium against
`python -m runsvc serve`: admins add, replace and delete (a value is typed once and never shown), operators
see names only, viewers have no page; a run and a job made in the forms use a secret, masked in the log.

One server and one browser for the module; every test gets fresh browser contexts and fails on any
uncaught page error, dialog or unexpected console error.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.browser import ADMIN_PASSWORD, line, log_in, serve

expect.set_options(timeout=20_000)  # a shared 2-core machine; these are deadlines, not timings

VALUE = "Sup3r-Secret-UI-Value"


@pytest.fixture(scope="module", name="server")
def _server(tmp_path_factory):
    with serve(tmp_path_factory.mktemp("ui-secrets") / "data") as server:
        yield server


def secret_row(page: Page, name: str):
    return page.get_by_role("row").filter(has=page.get_by_role("cell", name=name, exact=True))


def test_admin_adds_uses_replaces_and_deletes_a_secret(new_page, server, api):
    """Add (the value leaves the page), use it from New run (the log shows ***), replace its value, delete
    it after the confirm dialog."""
    dialogs: list[str] = []

    def accept(dialog) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page = new_page(on_dialog=accept)
    log_in(page, server.url, "admin", ADMIN_PASSWORD)
    page.get_by_role("link", name="Secrets").click()
    expect(page).to_have_url(server.url + "/secrets")
    expect(page.get_by_role("heading", name="Secrets", exact=True)).to_be_visible()
    expect(page.get_by_text("No secrets yet.")).to_be_visible()
    page.get_by_label("Secret name").fill("ui_db")
    page.get_by_label("Value", exact=True).fill(VALUE)
    page.get_by_role("button", name="Add secret").click()
    expect(page.get_by_role("status")).to_contain_text("Added ui_db. Its value is stored encrypted")
    expect(secret_row(page, "ui_db")).to_contain_text("admin")
    expect(page.get_by_label("Value", exact=True)).to_have_value("")
    assert VALUE not in page.content()
    assert [s["name"] for s in api.get("/secrets")["secrets"]] == ["ui_db"]

    page.get_by_role("link", name="New run").click()
    page.get_by_label("Command").fill('echo "db=$DB"')
    page.get_by_label("Secrets").fill("DB=ui_db")
    page.get_by_role("button", name="Submit run").click()
    expect(page.get_by_role("status", name="Run status")).to_have_text("succeeded")
    expect(line(page, 3)).to_contain_text("db=***")
    assert VALUE not in page.content()

    page.get_by_role("link", name="Secrets").click()
    page.get_by_role("button", name="Replace ui_db").click()
    page.get_by_label("New value of ui_db").fill("another value")
    page.get_by_role("button", name="Save ui_db").click()
    expect(page.get_by_role("status")).to_contain_text("Replaced the value of ui_db")
    expect(page.get_by_label("New value of ui_db")).to_have_count(0)

    page.get_by_role("button", name="Delete ui_db").click()
    expect(page.get_by_role("status")).to_contain_text("Deleted ui_db.")
    expect(secret_row(page, "ui_db")).to_have_count(0)
    assert dialogs == ["Delete the secret ui_db? Runs and jobs that use it will fail when they start."]


def test_operator_sees_names_only_and_a_viewer_no_page(new_page, server, api):
    """An operator lists names without any control that changes them; a viewer has no Secrets link and
    the page tells them it is not theirs."""
    api.post("/secrets", {"name": "op_visible", "value": VALUE})
    page = new_page()
    log_in(page, server.url, "olga")
    page.get_by_role("link", name="Secrets").click()
    expect(secret_row(page, "op_visible")).to_be_visible()
    expect(page.get_by_role("button", name="Add secret")).to_have_count(0)
    expect(page.get_by_role("button", name="Replace op_visible")).to_have_count(0)
    expect(page.get_by_role("button", name="Delete op_visible")).to_have_count(0)
    viewer = new_page()
    log_in(viewer, server.url, "vic")
    expect(viewer.get_by_role("link", name="Jobs")).to_be_visible()
    expect(viewer.get_by_role("link", name="Secrets")).to_have_count(0)
    viewer.goto(server.url + "/secrets")
    expect(viewer.get_by_role("heading", name="Operators and admins only")).to_be_visible()


def test_job_form_takes_secrets(new_page, server, api):
    """The job form's Secrets field saves the mapping and shows it again when the job is edited."""
    api.post("/secrets", {"name": "job_token", "value": VALUE})
    page = new_page()
    log_in(page, server.url, "olga", path="/jobs/new")
    page.get_by_label("Name", exact=True).fill("with-secret")
    page.get_by_label("Command").fill("true")
    page.get_by_label("Secrets").fill("TOKEN=job_token\nOTHER = job_token")
    page.get_by_role("button", name="Save job").click()
    expect(page.get_by_role("heading", name="with-secret")).to_be_visible()
    [job] = [j for j in api.get("/jobs")["jobs"] if j["name"] == "with-secret"]
    assert job["secrets"] == {"TOKEN": "job_token", "OTHER": "job_token"}
    page.get_by_role("link", name="Edit job").click()
    expect(page.get_by_label("Secrets")).to_have_value("TOKEN=job_token\nOTHER=job_token")
