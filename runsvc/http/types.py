"""Shared helpers for handlers: the services, JSON answers."""

from __future__ import annotations

import json
from typing import Any

from quart import Response, current_app

from ..services import Services

SERVICES_KEY = "RUNSVC_SERVICES"


def services() -> Services:
    return current_app.config[SERVICES_KEY]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, headers=headers, content_type="application/json")
