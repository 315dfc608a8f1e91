"""The route table: every HTTP route with the access it requires, in one place."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs
from quart_trio import QuartTrio

from .handlers import health

API = "/api/v1"


@attrs.frozen
class Route:
    method: str
    path: str
    handler: Callable[..., Awaitable[object]]


ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", health.healthz),
)


def register(app: QuartTrio, routes: tuple[Route, ...] = ROUTES) -> None:
    for route in routes:
        endpoint = f"{route.method} {route.path}"
        app.add_url_rule(route.path, endpoint, route.handler, methods=[route.method])
