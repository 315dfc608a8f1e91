"""Liveness, and whether the database takes writes (SPEC §14)."""

from quart import Response

from ..types import json_response, services


async def healthz() -> Response:
    """200 {"status": "ok"}; 503 {"status": "degraded", "reason": …} while database writes fail or the
    database cannot be reached (a failed read makes the store check it: store/writer.py `suspect`)."""
    reason = services().store.unavailable
    if reason is not None:
        return json_response({"status": "degraded", "reason": reason}, status=503,
                             headers={"Retry-After": "5"})
    return json_response({"status": "ok"})
