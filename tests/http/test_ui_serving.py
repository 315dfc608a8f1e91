"""The web UI's files over real HTTP: one page for every UI path, files under /ui/ with the right
caching, nothing outside runsvc/web/ reachable, and the log as a download."""

from __future__ import annotations

import trio

from runsvc.http.handlers.ui import WEB_ROOT
from tests.helpers import add_user, assert_error, login, raw_request, wait_status

UI_PATHS = ["/", "/login", "/runs/7", "/runs/new", "/users", "/tokens", "/agents", "/?status=running"]


async def test_every_ui_path_answers_the_page(client):
    """Every UI path answers index.html (not cached), with the self-only CSP and no inline script or style."""
    page = (WEB_ROOT / "index.html").read_text()
    for path in UI_PATHS:
        response = await client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert response.headers["cache-control"] == "no-store"
        assert response.text == page
        csp = response.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "unsafe-inline" not in csp
    assert "<script>" not in page and "<style" not in page and "style=" not in page
    assert '<script type="module" src="/ui/app.js">' in page


async def test_ui_files_and_their_caching(client):
    """Vendored files (version in the path) are cached for a year; our own modules are revalidated."""
    vendor = await client.get("/ui/vendor/preact-11.2.0/preact.mjs")
    assert vendor.status_code == 200
    assert vendor.headers["content-type"] == "text/javascript; charset=utf-8"
    assert vendor.headers["cache-control"] == "public, max-age=31536000, immutable"
    own = await client.get("/ui/app.js")
    assert own.status_code == 200 and own.headers["cache-control"] == "no-cache"
    css = await client.get("/ui/app.css")
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    licence = await client.get("/ui/vendor/ansi_up-6.0.6/LICENSE")
    assert licence.status_code == 200 and "MIT" in licence.text


async def test_nothing_outside_the_web_folder(client, server):
    """Missing files, directories and traversal attempts are a JSON 404, never a file from elsewhere."""
    for path in ["/ui/nope.js", "/ui/vendor", "/ui/vendor/", "/ui/.hidden", "/ui/log/%2e%2e/%2e%2e/server.py"]:
        assert_error(await client.get(path), 404, "not_found")
    # Sent as-is (httpx would normalize the dots away).
    head, body = await raw_request(server.url, "GET", "/ui/../../pyproject.toml", {}, [])
    assert b" 404 " in head.split(b"\r\n")[0] and b"not_found" in body
    head, body = await raw_request(server.url, "GET", "/ui/log/../../http/app.py", {}, [])
    assert b" 404 " in head.split(b"\r\n")[0] and b"import" not in body


async def test_log_download_is_an_attachment(client, server):
    """?download=1 makes the raw log a file named run-<id>.log; without it the log shows inline."""
    await add_user(server, "olga", "operator")
    csrf = await login(client, "olga")
    with trio.fail_after(20):
        response = await client.post("/api/v1/runs", json={"command": ["sh", "-c", "echo one; echo two"]},
                                     headers={"X-CSRF-Token": csrf})
        run = response.json()["run"]
        await wait_status(client, run["id"])
        download = await client.get(f"/api/v1/runs/{run['id']}/log", params={"download": 1})
        inline = await client.get(f"/api/v1/runs/{run['id']}/log")
        bad = await client.get(f"/api/v1/runs/{run['id']}/log", params={"download": "yes"})
    assert download.headers["content-disposition"] == f'attachment; filename="run-{run["id"]}.log"'
    assert download.text == "one\ntwo\n"
    assert inline.headers["content-disposition"] == f'inline; filename="run-{run["id"]}.log"'
    assert_error(bad, 400, "invalid_request", "download must be an integer")
