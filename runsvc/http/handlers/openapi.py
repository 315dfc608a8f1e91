"""`GET /api/v1/openapi.json`: the OpenAPI 3.1 document, built once from the route table at startup."""

from __future__ import annotations

import json
from typing import Any

from quart import Response, current_app

OPENAPI_KEY = "RUNSVC_OPENAPI"  # app.config key of the document's JSON text (set by routes.register)


async def openapi_document() -> Response:
    return Response(current_app.config[OPENAPI_KEY], content_type="application/json")


def serialize(document: dict[str, Any]) -> str:
    return json.dumps(document, separators=(",", ":"))
