"""The HTTP layer: app factory, route table, handlers per area, middleware, errors."""

from .app import create_app

__all__ = ["create_app"]
