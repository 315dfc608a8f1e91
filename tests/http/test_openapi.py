"""GET /api/v1/openapi.json: an OpenAPI 3.1 document of every route in the route table."""

from __future__ import annotations

import attrs
import pytest
import trio

from runsvc.http.access import Access
from runsvc.http.openapi import OPERATIONS, build_document, openapi_path
from runsvc.http.routes import ROUTES, WEBSOCKET_ROUTES, Route


async def test_document_lists_every_route(client):
    """Every route of the table is an operation of the served document, with its security."""
    with trio.fail_after(10):
        response = await client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    assert document["openapi"] == "3.1.0"
    served = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert served == {(route.method, openapi_path(route.path)) for route in ROUTES}
    for route in ROUTES:
        operation = document["paths"][openapi_path(route.path)][route.method.lower()]
        assert ("security" in operation) == (route.access is not Access.PUBLIC), route.path
        assert "200" in operation["responses"] or any(s in operation["responses"] for s in ("201", "202", "204"))
    assert document["x-websockets"] == [openapi_path(path) for path, _, _ in WEBSOCKET_ROUTES]
    assert document["paths"]["/api/v1/runs/{run_id}"]["get"]["parameters"][0]["name"] == "run_id"


def test_a_route_missing_from_the_description_fails_the_build():
    """A route added to the table without an OpenAPI description makes the build (and so the app) fail;
    so does a description whose route is gone."""
    extra = Route("GET", "/api/v1/new-thing", lambda: None, Access.VIEWER)  # type: ignore[arg-type,return-value]
    with pytest.raises(LookupError, match="new-thing"):
        build_document((*ROUTES, extra))
    with pytest.raises(LookupError, match="without a route"):
        build_document(ROUTES[1:])
    assert len(OPERATIONS) == len(ROUTES)


def test_operation_ids_are_unique():
    document = build_document(ROUTES)
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    assert attrs.has(Route)
