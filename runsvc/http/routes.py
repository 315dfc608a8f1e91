"""The route table: every HTTP route with the access it requires, in one place."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs
from quart_trio import QuartTrio

from .access import Access, guard
from .handlers import agents, auth, health, live, runs, users

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
    Route("POST", f"{API}/enrollment-tokens", agents.create_enrollment_token, Access.ADMIN),
    Route("GET", f"{API}/enrollment-tokens", agents.list_enrollment_tokens, Access.ADMIN),
    Route("DELETE", f"{API}/enrollment-tokens/<int:token_id>", agents.delete_enrollment_token, Access.ADMIN),
    Route("POST", f"{API}/agents/enroll", agents.enroll, Access.PUBLIC),
    Route("GET", f"{API}/agents", agents.list_agents, Access.ADMIN),
    Route("DELETE", f"{API}/agents/<int:agent_id>", agents.delete_agent, Access.ADMIN),
)

# WebSockets check Origin and the session themselves (see websockets.py): a refusal has to be a close
# code after the handshake, not an HTTP status.
WEBSOCKET_ROUTES: tuple[tuple[str, Callable[..., Awaitable[None]]], ...] = (
    (f"{API}/runs/<int:run_id>/events/ws", live.run_events_ws),
    (f"{API}/runs/feed/ws", live.runs_feed_ws),
    (f"{API}/agents/ws", agents.agents_ws),  # authenticated by the agent's Bearer secret
)


def register(app: QuartTrio, routes: tuple[Route, ...] = ROUTES) -> None:
    for route in routes:
        endpoint = f"{route.method} {route.path}"
        app.add_url_rule(route.path, endpoint, guard(route.handler, route.access), methods=[route.method])
    for path, handler in WEBSOCKET_ROUTES:
        app.add_websocket(path, f"WS {path}", handler)
