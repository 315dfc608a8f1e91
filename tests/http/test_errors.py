"""The HTTP error contract: JSON bodies of the documented shape, security headers everywhere."""

from __future__ import annotations

import trio

from tests.helpers import add_user, assert_error, login


async def test_healthz(client):
    """/healthz answers {"status": "ok"} with the security headers."""
    with trio.fail_after(10):
        response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["referrer-policy"] == "no-referrer"


async def test_unknown_route_is_json_404(client):
    """An unknown path gets the JSON error body, not HTML."""
    with trio.fail_after(10):
        response = await client.get("/no/such/thing")
    assert_error(response, 404, "not_found")
    assert response.headers["x-frame-options"] == "DENY"


async def test_wrong_method_is_json_405(client):
    """A known path with the wrong method gets 405 method_not_allowed and an Allow header."""
    with trio.fail_after(10):
        response = await client.delete("/healthz")
    assert_error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["allow"]


async def test_keep_alive_survives_an_answer_given_before_the_body(server):
    """A 405 answered while the request body is still on its way leaves the keep-alive connection
    usable: the next request on it is answered (Hypercorn would otherwise stop reading it)."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    body = b'{"username": "x", "password": "y"}'
    head = (f"PUT /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            for _ in range(3):
                await stream.send_all(head)
                await trio.sleep(0.2)  # let an answer that does not wait for the body go out first
                await stream.send_all(body)
                answer = b""
                while b"method_not_allowed" not in answer:
                    answer += await stream.receive_some()
                assert answer.startswith(b"HTTP/1.1 405")
            await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while b'"ok"' not in answer:
                answer += await stream.receive_some()


async def test_numbers_past_64_bits_are_4xx_not_500(server, client):
    """An id past SQLite's INTEGER range is a 400 in a path and in a query (SPEC §14); the largest id
    that fits is an ordinary 404."""
    with trio.fail_after(10):
        await add_user(server, "alice", "viewer")
        await login(client, "alice")
        too_big = str(2**63)
        path = await client.get(f"/api/v1/runs/{too_big}")
        largest = await client.get(f"/api/v1/runs/{2**63 - 1}")
        before = await client.get(f"/api/v1/runs?before={too_big}")
    assert_error(path, 400, "invalid_request")
    assert_error(largest, 404, "not_found")
    assert_error(before, 400, "invalid_request", f"before must be <= {2**63 - 1}")
