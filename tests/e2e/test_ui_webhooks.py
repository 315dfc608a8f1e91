"""The Webhooks page (SPEC §9, §17) in headless Chromium against `python -m runsvc serve`: admins only;
create a webhook (its secret shown once, and the one that signs the POSTs a real receiver gets), the list
with each webhook's last delivery, one webhook's deliveries, delete after the browser's confirm."""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.browser import ADMIN_PASSWORD, log_in, serve

expect.set_options(timeout=20_000)  # a shared 2-core machine; these are deadlines, not timings


class _Hook(BaseHTTPRequestHandler):
    """/ok answers 204, /down 500; every POST is kept (path, headers, body)."""

    received: list[tuple[str, dict[str, str], bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, dict(self.headers), body))
        self.send_response(204 if self.path == "/ok" else 500)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module", name="receiver")
def _receiver() -> Iterator[str]:
    """A real receiver on 127.0.0.1 (stdlib http.server in a thread); yields its URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    thread.join(10)
    httpd.server_close()


@pytest.fixture(scope="module", name="server")
def _server(tmp_path_factory):
    with serve(tmp_path_factory.mktemp("ui-webhooks") / "data") as server:
        yield server


def webhook_row(page: Page, url: str):
    return page.get_by_role("row").filter(has=page.get_by_role("cell", name=url, exact=True))


def test_only_admins_see_webhooks(new_page, server, api):
    """Operators and viewers have no Webhooks link, and the page tells them it is for admins."""
    for username in ("olga", "vic"):
        page = new_page()
        log_in(page, server.url, username)
        expect(page.get_by_role("link", name="Runs")).to_be_visible()
        expect(page.get_by_role("link", name="Webhooks")).to_have_count(0)
        page.goto(server.url + "/webhooks")
        expect(page.get_by_role("heading", name="Admins only")).to_be_visible()


def test_admin_creates_watches_and_deletes_webhooks(new_page, server, api, receiver):
    """An admin creates a webhook (all statuses but one unchecked), sees its secret once, and after a run
    ends sees it delivered in the list and in its deliveries, signed with that secret; a failing receiver
    shows the failure; Delete asks first, and only an accepted confirm deletes."""
    answers = iter([False, True])
    seen: list[str] = []

    def answer(dialog) -> None:
        seen.append(dialog.message)
        dialog.accept() if next(answers) else dialog.dismiss()

    page = new_page(on_dialog=answer)
    log_in(page, server.url, "admin", ADMIN_PASSWORD)
    page.get_by_role("link", name="Webhooks").click()
    expect(page).to_have_url(server.url + "/webhooks")
    expect(page.get_by_role("heading", name="Webhooks")).to_be_visible()
    expect(page.get_by_text("No webhooks yet.")).to_be_visible()

    page.get_by_label("URL").fill(f"{receiver}/ok")
    expect(page.get_by_label("run.finished")).to_be_checked()
    page.get_by_label("cancelled").uncheck()
    page.get_by_role("button", name="Create webhook").click()
    [created] = api.get("/webhooks")["webhooks"]
    secret_box = page.get_by_label(f"Secret of webhook {created['id']}")
    expect(secret_box).to_have_value(re.compile(r"^whsec_[A-Za-z0-9_-]{43}$"))
    secret = secret_box.input_value()
    expect(page.get_by_text("it will not be shown again")).to_be_visible()
    assert created["statuses"] == ["succeeded", "failed", "timed_out", "interrupted"] and created["job"] is None
    expect(webhook_row(page, f"{receiver}/ok")).to_contain_text("no delivery yet")

    run = api.submit("echo hello")
    api.wait(run["id"])
    page.reload()  # the secret is gone for good; the last delivery shows
    expect(page.get_by_label(f"Secret of webhook {created['id']}")).to_have_count(0)
    assert secret not in page.content()
    row = webhook_row(page, f"{receiver}/ok")
    expect(row).to_contain_text("delivered (204)")
    expect(row).to_contain_text("every job")
    path, headers, body = next(item for item in _Hook.received if item[0] == "/ok")
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Runsvc-Signature"] == expected

    row.get_by_role("button", name=f"Deliveries of webhook {created['id']}").click()
    deliveries = page.get_by_role("region", name=f"Deliveries of webhook {created['id']}")
    expect(deliveries.get_by_role("link", name=f"#{run['id']}")).to_be_visible()
    expect(deliveries.get_by_role("row").nth(1)).to_contain_text("delivered (204)")

    page.get_by_label("URL").fill(f"{receiver}/down")
    page.get_by_label("Job").fill("nightly")
    page.get_by_role("button", name="Create webhook").click()
    expect(page.get_by_label(re.compile(r"^Secret of webhook \d+$"))).to_be_visible()
    expect(webhook_row(page, f"{receiver}/down")).to_contain_text("nightly")

    down = next(w for w in api.get("/webhooks")["webhooks"] if w["url"].endswith("/down"))
    down_row = webhook_row(page, f"{receiver}/down")
    down_row.get_by_role("button", name=f"Delete webhook {down['id']}").click()  # dismissed
    expect(down_row).to_be_visible()
    down_row.get_by_role("button", name=f"Delete webhook {down['id']}").click()  # accepted
    expect(page.get_by_role("status").filter(has_text=f"Deleted webhook {down['id']}")).to_be_visible()
    expect(webhook_row(page, f"{receiver}/down")).to_have_count(0)
    assert len(seen) == 2 and "Delete webhook" in seen[0]
    assert [w["id"] for w in api.get("/webhooks")["webhooks"]] == [created["id"]]


def test_a_failing_receiver_shows_its_failure(new_page, server, api, receiver):
    """A receiver answering 500 shows as failed with the code, the attempts and the next try."""
    hook = api.post("/webhooks", {"url": f"{receiver}/down", "statuses": ["failed"]})["webhook"]
    run = api.submit("exit 4")
    api.wait(run["id"])
    page = new_page()
    log_in(page, server.url, "admin", ADMIN_PASSWORD, path="/webhooks")
    row = webhook_row(page, f"{receiver}/down")
    expect(row).to_contain_text(re.compile(r"failed: HTTP 500; 1 attempt, next "))
    expect(row).to_contain_text("failed")  # the statuses column
    row.get_by_role("button", name=f"Deliveries of webhook {hook['id']}").click()
    deliveries = page.get_by_role("region", name=f"Deliveries of webhook {hook['id']}")
    expect(deliveries.get_by_role("link", name=f"#{run['id']}")).to_be_visible()
