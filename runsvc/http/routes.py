"""The route table: every HTTP route with the access it requires, in one place."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

import attrs
from quart_trio import QuartTrio

from .access import Access, guard
from .handlers import auth, health, live, runs, users
from .query import check_path_ints

API = "/api/v1"


@attrs.frozen
class Route:
    method: str
    path: str
    handler: Callable[..., Awaitable[object]]
    access: Access  # checked by access.guard() before the handler runs


ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", health.healthz, Access.PUBLIC),
    Route("POST", f"{API}/auth/login", auth.login, Access.PUBLIC),
    Route("POST", f"{API}/auth/logout", auth.logout, Access.SESSION),
    Route("GET", f"{API}/auth/me", auth.me, Access.SESSION),
    Route("GET", f"{API}/users", users.list_users, Access.ADMIN),
    Route("POST", f"{API}/users", users.create_user, Access.ADMIN),
    Route("PATCH", f"{API}/users/<int:user_id>", users.update_user, Access.ADMIN),
    Route("POST", f"{API}/runs", runs.submit_run, Access.OPERATOR),
    Route("GET", f"{API}/runs", runs.list_runs, Access.VIEWER),
    Route("GET", f"{API}/runs/<int:run_id>", runs.get_run, Access.VIEWER),
    Route("POST", f"{API}/runs/<int:run_id>/cancel", runs.cancel_run, Access.OPERATOR),
    Route("GET", f"{API}/runs/<int:run_id>/events", runs.run_events, Access.VIEWER),
    Route("GET", f"{API}/runs/<int:run_id>/log", runs.run_log, Access.VIEWER),
)

# WebSockets check Origin and the session themselves (see websockets.py): a refusal has to be a close
# code after the handshake, not an HTTP status.
WEBSOCKET_ROUTES: tuple[tuple[str, Callable[..., Awaitable[None]]], ...] = (
    (f"{API}/runs/<int:run_id>/events/ws", live.run_events_ws),
    (f"{API}/runs/feed/ws", live.runs_feed_ws),
)


def _bounded(handler: Callable[..., Awaitable[object]]) -> Callable[..., Awaitable[object]]:
    """`handler`, refusing path integers beyond 64 bits with a 400 before it runs."""

    @functools.wraps(handler)
    async def bounded(**kwargs: object) -> object:
        check_path_ints(kwargs)
        return await handler(**kwargs)

    return bounded


def register(app: QuartTrio, routes: tuple[Route, ...] = ROUTES) -> None:
    for route in routes:
        endpoint = f"{route.method} {route.path}"
        app.add_url_rule(route.path, endpoint, guard(_bounded(route.handler), route.access), methods=[route.method])
    for path, handler in WEBSOCKET_ROUTES:
        app.add_websocket(path, f"WS {path}", handler)
