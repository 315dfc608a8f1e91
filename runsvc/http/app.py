"""The quart-trio application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

from quart.wrappers.response import IterableBody, Response
from quart_trio import QuartTrio

from ..services import Services
from . import middleware, routes
from .types import SERVICES_KEY


class _TrioIterableBody(IterableBody):
    """Quart iterates a plain (sync) iterable body on asyncio's executor, which does not exist under
    Trio (its empty body for `Response(status=204)` is one): the answer goes out, then the connection
    breaks. Our sync iterables are in-memory lists, so they are iterated right here."""

    def __init__(self, iterable: Any) -> None:
        if isinstance(iterable, Iterable) and not isinstance(iterable, (str, bytes)):
            items = list(iterable)

            async def each() -> AsyncIterator[Any]:
                for item in items:
                    yield item

            self.iter = each()
        else:
            super().__init__(iterable)


class RunsvcResponse(Response):
    iterable_body_class = _TrioIterableBody


def create_app(services: Services) -> QuartTrio:
    app = QuartTrio("runsvc", static_folder=None)
    app.response_class = RunsvcResponse
    app.config[SERVICES_KEY] = services
    app.config["MAX_CONTENT_LENGTH"] = services.settings.max_body_bytes
    app.config["PROPAGATE_EXCEPTIONS"] = False
    middleware.install(app)
    routes.register(app)
    return app
