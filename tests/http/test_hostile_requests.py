"""Low-severity hostile requests (issue 20 #10): odd static paths, a viewer token's writes, redirects
built from the Host header, and Host names /metrics and `allowed_hosts` refuse (DNS rebinding)."""

from __future__ import annotations

import httpx
import trio

from tests.conftest import make_settings
from tests.helpers import assert_error, running_server
from tests.http.test_tokens import TOKENS, bearer, make_token, session_client


async def test_odd_ui_paths_are_404_not_500(client):
    """A NUL byte or an over-long name in a UI file path is a 404 JSON answer, never a 500."""
    with trio.fail_after(10):
        for path in ("/ui/app.js%00.png", "/ui/%00", "/ui/" + "a" * 300 + ".js", "/ui/vendor/" + "b" * 5000):
            assert_error(await client.get(path), 404, "not_found")


async def test_a_viewer_token_cannot_revoke_tokens(server):
    """A token's writes follow its effective role: a viewer token of an admin gets 403 on DELETE
    /tokens/{id}, and the admin's other token survives."""
    with trio.fail_after(20):
        async with session_client(server, "root", "admin") as (client, csrf):
            viewer = await make_token(client, csrf, role="viewer", name="read-only")
            admin = await make_token(client, csrf, role="admin", name="deploy")
            for target in (admin, viewer):
                answer = await client.delete(f"{TOKENS}/{target['token']['id']}", headers=bearer(viewer["secret"]))
                assert_error(answer, 403, "forbidden", "a viewer token may only read")
            listed = await client.get(TOKENS, headers=bearer(admin["secret"]))
            assert {token["name"] for token in listed.json()["tokens"]} == {"read-only", "deploy"}


async def test_a_token_cannot_revoke_a_token_above_its_role(server):
    """An operator token of an admin cannot revoke the admin's admin token (403); it may revoke an
    operator token, and the admin's session may revoke anything of theirs."""
    with trio.fail_after(20):
        async with session_client(server, "root", "admin") as (client, csrf):
            operator = await make_token(client, csrf, role="operator", name="ci")
            other = await make_token(client, csrf, role="operator", name="ci-2")
            admin = await make_token(client, csrf, role="admin", name="deploy")
            answer = await client.delete(f"{TOKENS}/{admin['token']['id']}", headers=bearer(operator["secret"]))
            assert_error(answer, 403, "forbidden", "an operator token cannot revoke a token with role admin")
            answer = await client.delete(f"{TOKENS}/{other['token']['id']}", headers=bearer(operator["secret"]))
            assert answer.status_code == 204
            answer = await client.delete(f"{TOKENS}/{admin['token']['id']}", headers={"X-CSRF-Token": csrf})
            assert answer.status_code == 204


async def test_slash_merging_redirect_does_not_echo_the_host(client):
    """`/api//v1/openapi.json` redirects (308) to a relative Location, whatever the Host header says."""
    with trio.fail_after(10):
        answer = await client.get("/api//v1/openapi.json?x=1", headers={"Host": "evil.example"})
    assert answer.status_code == 308
    assert answer.headers["Location"] == "/api/v1/openapi.json?x=1"


async def test_metrics_on_loopback_needs_a_loopback_host(client):
    """The loopback exemption of /metrics holds only for a loopback Host (a DNS-rebinding page has its own
    name there): another Host needs an admin like any remote client."""
    with trio.fail_after(10):
        for host in ("localhost", "127.0.0.1", "[::1]", "localhost:8080", "127.0.0.1:9"):
            assert (await client.get("/metrics", headers={"Host": host})).status_code == 200, host
        for host in ("evil.example", "evil.example:8080", "127.0.0.1.evil.example", ""):
            assert_error(await client.get("/metrics", headers={"Host": host}), 401, "unauthenticated")


async def test_allowed_hosts_refuses_other_hosts_with_400(tmp_path):
    """With `allowed_hosts` set, a request naming another Host is a 400 (WebSockets included); a listed
    name, with or without a port, is served."""
    settings = make_settings(tmp_path, allowed_hosts=("runs.example.com", "127.0.0.1"))
    with trio.fail_after(20):
        async with running_server(settings) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
                assert (await client.get("/healthz")).status_code == 200  # Host: 127.0.0.1:<port>
                ok = await client.get("/healthz", headers={"Host": "RUNS.example.com"})
                assert ok.status_code == 200
                for host in ("evil.example", "runs.example.com.evil.example", ""):
                    answer = await client.get("/healthz", headers={"Host": host})
                    assert_error(answer, 400, "invalid_request", "host not allowed")
                answer = await client.get("/api/v1/runs/feed/ws", headers={
                    "Host": "evil.example", "Connection": "Upgrade", "Upgrade": "websocket",
                    "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
                assert answer.status_code == 400
