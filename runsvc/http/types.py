"""Shared helpers for handlers: the services, JSON answers."""

from __future__ import annotations

import json
from typing import Any

from quart import Response, current_app

from ..services import Services

SERVICES_KEY = "RUNSVC_SERVICES"


def services() -> Services:
    return current_app.config[SERVICES_KEY]


def no_content(status: int = 204) -> Response:
    """An answer without a body. Built from b"" on purpose: `quart.Response(status=204)` makes Quart
    iterate an empty list on asyncio's executor, which does not exist under Trio; the client gets its
    204 but the server then drops the keep-alive connection (and logs "Error in ASGI Framework").
    Handlers build answers from str/bytes or async generators only, never None or a plain iterable."""
    return Response(b"", status=status)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, headers=headers, content_type="application/json")
