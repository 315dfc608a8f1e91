"""Liveness."""

from quart import Response

from ..types import json_response


async def healthz() -> Response:
    return json_response({"status": "ok"})
