"""The quart-trio application factory."""

from __future__ import annotations

from quart_trio import QuartTrio

from ..services import Services
from . import middleware, routes
from .handlers import metrics
from .types import SERVICES_KEY


def create_app(services: Services) -> QuartTrio:
    app = QuartTrio("runsvc", static_folder=None)
    app.config[SERVICES_KEY] = services
    app.config["MAX_CONTENT_LENGTH"] = services.settings.max_body_bytes
    app.config["PROPAGATE_EXCEPTIONS"] = False
    middleware.install(app)
    metrics.install(app)  # request latency for /metrics
    routes.register(app)
    return app
