"""The HTTP error contract: JSON bodies of the documented shape, security headers everywhere."""

from __future__ import annotations

import trio

from tests.helpers import assert_error


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
