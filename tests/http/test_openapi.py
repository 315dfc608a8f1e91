"""GET /api/v1/openapi.json: an OpenAPI 3.1 document of every route in the route table."""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping

import attrs
import pytest
import trio

from runsvc.http.access import Access
from runsvc.http.errors import InvalidRequest
from runsvc.http.handlers import agents, auth, jobs, runs, tokens, users
from runsvc.http.openapi import OPERATIONS, build_document, openapi_path
from runsvc.http.routes import ROUTES, WEBSOCKET_ROUTES, Route
from runsvc.http.validation import Field, body_schema, integer, number, string, string_list, validate_object


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


def _validated_bodies() -> dict[str, Mapping[str, Field]]:
    """Every field table a handler validates request bodies with (the handler modules' `*_FIELDS`), by
    its qualified name."""
    found = {}
    for module in (agents, auth, jobs, runs, tokens, users):
        for name, value in vars(module).items():
            if name.endswith("_FIELDS") and isinstance(value, Mapping):
                assert all(isinstance(field, Field) for field in value.values()), name
                found[f"{module.__name__}.{name}"] = value
    return found


async def test_request_bodies_are_generated_from_the_validators(client):
    """Each validated body is the body of exactly one route, whose handler validates with it, and the
    served document's request body schema for that route is the one generated from it; routes without a
    body have none in the document."""
    with trio.fail_after(10):
        document = (await client.get("/api/v1/openapi.json")).json()
    bodies = _validated_bodies()
    assert len(bodies) == 10
    for qualified, fields in bodies.items():
        owners = [route for route in ROUTES if route.body is fields]
        assert len(owners) == 1, qualified
        assert f"read_json_object({qualified.rsplit('.', 1)[1]})" in inspect.getsource(owners[0].handler)
    for route in ROUTES:
        operation = document["paths"][openapi_path(route.path)][route.method.lower()]
        if route.body is None:
            assert "requestBody" not in operation, route.path
        else:
            schema = operation["requestBody"]["content"]["application/json"]["schema"]
            assert schema == json.loads(json.dumps(body_schema(route.body))), route.path


def test_a_field_schema_states_every_check_the_field_makes():
    """A field's schema carries the rules its checks enforce (length, pattern, choices, bounds, items),
    and nullable fields accept null."""
    fields = {
        "s": string(min_length=1, max_length=5, pattern="[a-z]+", rule="lowercase letters", choices=("ab",)),
        "n": number(required=False, default=3, exclusive_minimum=0, maximum=10),
        "i": integer(required=False, nullable=True, default=None, minimum=1),
        "l": string_list(non_empty=True, max_items=2, item_pattern="[0-9]+", item_rule="digits"),
    }
    assert body_schema(fields) == {
        "type": "object",
        "properties": {
            "s": {"type": "string", "minLength": 1, "maxLength": 5, "pattern": "^(?:[a-z]+)$", "enum": ["ab"]},
            "n": {"type": "number", "exclusiveMinimum": 0, "maximum": 10, "default": 3},
            "i": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}], "default": None},
            "l": {"type": "array", "items": {"type": "string", "pattern": "^(?:[0-9]+)$"}, "minItems": 1,
                  "maxItems": 2},
        },
        "required": ["s", "l"],
        "additionalProperties": False,
    }
    assert validate_object({"s": "ab", "l": ["1"], "i": None}, fields) == {"s": "ab", "n": 3, "i": None, "l": ["1"]}
    for body, message in [
        ({"s": "AB", "l": ["1"]}, "s must be lowercase letters"),
        ({"s": "ab", "l": ["1"], "n": 0}, "n must be > 0"),
        ({"s": "ab", "l": ["1", "2", "3"]}, "l must hold at most 2 items"),
        ({"s": "ab", "l": ["x"]}, "l must be digits each"),
        ({"s": "ab", "l": []}, "l must not be empty"),
    ]:
        with pytest.raises(InvalidRequest, match=f"^{message}$"):
            validate_object(body, fields)
