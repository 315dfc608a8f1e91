"""The route table: every HTTP route with the access it requires, in one place."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any

import attrs
from quart_trio import QuartTrio

from .access import Access, guard
from .handlers import agents, auth, health, jobs, live, metrics, openapi, runs, secrets, tokens, ui, users, webhooks
from .openapi import build_document
from .query import check_path_ints
from .sockets import TooManySockets
from .types import services
from .validation import Field
from .websockets import TRY_AGAIN_LATER, Outbox, Refused, serve_socket

API = "/api/v1"


@attrs.frozen
class Route:
    method: str
    path: str
    handler: Callable[..., Awaitable[object]]
    access: Access  # checked by access.guard() before the handler runs
    tokens_allowed: bool = True  # False: an API token is refused (403); only a session may do it
    body: Mapping[str, Field] | None = None  # the fields its handler validates; the document's request body


ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", health.healthz, Access.PUBLIC),
    Route("GET", "/metrics", metrics.metrics, Access.LOOPBACK_OR_ADMIN),
    Route("GET", f"{API}/openapi.json", openapi.openapi_document, Access.PUBLIC),
    Route("POST", f"{API}/auth/login", auth.login, Access.PUBLIC, body=auth.LOGIN_FIELDS),
    Route("POST", f"{API}/auth/logout", auth.logout, Access.SESSION, tokens_allowed=False),
    Route("GET", f"{API}/auth/me", auth.me, Access.SESSION),
    Route("GET", f"{API}/users", users.list_users, Access.ADMIN),
    Route("POST", f"{API}/users", users.create_user, Access.ADMIN, body=users.CREATE_FIELDS),
    Route("PATCH", f"{API}/users/<int:user_id>", users.update_user, Access.ADMIN, body=users.UPDATE_FIELDS),
    Route("POST", f"{API}/tokens", tokens.create_token, Access.SESSION, tokens_allowed=False,
          body=tokens.CREATE_FIELDS),
    Route("GET", f"{API}/tokens", tokens.list_tokens, Access.SESSION),
    Route("DELETE", f"{API}/tokens/<int:token_id>", tokens.revoke_token, Access.SESSION),
    Route("POST", f"{API}/runs", runs.submit_run, Access.OPERATOR, body=runs.SUBMIT_FIELDS),
    Route("GET", f"{API}/runs", runs.list_runs, Access.VIEWER),
    Route("GET", f"{API}/runs/<int:run_id>", runs.get_run, Access.VIEWER),
    Route("POST", f"{API}/runs/<int:run_id>/cancel", runs.cancel_run, Access.OPERATOR),
    Route("POST", f"{API}/runs/<int:run_id>/rerun", runs.rerun_run, Access.OPERATOR),
    Route("GET", f"{API}/runs/<int:run_id>/events", runs.run_events, Access.VIEWER),
    Route("GET", f"{API}/runs/<int:run_id>/log", runs.run_log, Access.VIEWER),
    Route("GET", f"{API}/jobs", jobs.list_jobs, Access.VIEWER),
    Route("POST", f"{API}/jobs", jobs.create_job, Access.OPERATOR, body=jobs.CREATE_FIELDS),
    Route("GET", f"{API}/jobs/<int:job_id>", jobs.get_job, Access.VIEWER),
    Route("PATCH", f"{API}/jobs/<int:job_id>", jobs.update_job, Access.OPERATOR, body=jobs.UPDATE_FIELDS),
    Route("DELETE", f"{API}/jobs/<int:job_id>", jobs.delete_job, Access.OPERATOR),
    Route("POST", f"{API}/jobs/<int:job_id>/runs", jobs.start_job, Access.OPERATOR, body=jobs.START_FIELDS),
    Route("GET", f"{API}/jobs/<int:job_id>/fires", jobs.job_fires, Access.VIEWER),
    Route("GET", f"{API}/schedule/preview", jobs.schedule_preview, Access.SESSION),
    Route("GET", f"{API}/secrets", secrets.list_secrets, Access.OPERATOR),
    Route("POST", f"{API}/secrets", secrets.create_secret, Access.ADMIN, body=secrets.CREATE_FIELDS),
    Route("PUT", f"{API}/secrets/<name>", secrets.replace_secret, Access.ADMIN, body=secrets.REPLACE_FIELDS),
    Route("DELETE", f"{API}/secrets/<name>", secrets.delete_secret, Access.ADMIN),
    Route("POST", f"{API}/enrollment-tokens", agents.create_enrollment_token, Access.ADMIN,
          body=agents.TOKEN_FIELDS),
    Route("GET", f"{API}/enrollment-tokens", agents.list_enrollment_tokens, Access.ADMIN),
    Route("DELETE", f"{API}/enrollment-tokens/<int:token_id>", agents.delete_enrollment_token, Access.ADMIN),
    Route("POST", f"{API}/agents/enroll", agents.enroll, Access.PUBLIC, body=agents.ENROLL_FIELDS),
    Route("GET", f"{API}/agents", agents.list_agents, Access.ADMIN),
    Route("DELETE", f"{API}/agents/<int:agent_id>", agents.delete_agent, Access.ADMIN),
    Route("POST", f"{API}/webhooks", webhooks.create_webhook, Access.ADMIN, body=webhooks.CREATE_FIELDS),
    Route("GET", f"{API}/webhooks", webhooks.list_webhooks, Access.ADMIN),
    Route("PATCH", f"{API}/webhooks/<int:webhook_id>", webhooks.update_webhook, Access.ADMIN,
          body=webhooks.UPDATE_FIELDS),
    Route("DELETE", f"{API}/webhooks/<int:webhook_id>", webhooks.delete_webhook, Access.ADMIN),
    Route("GET", f"{API}/webhooks/<int:webhook_id>/deliveries", webhooks.webhook_deliveries, Access.ADMIN),
)

# The web UI (SPEC §9): the page itself is public; its scripts ask /auth/me who is there. Not part of
# the API, so not in its OpenAPI document.
UI_ROUTES: tuple[Route, ...] = (
    *(Route("GET", path, ui.index_page, Access.PUBLIC) for path in ui.PAGE_PATHS),
    Route("GET", "/ui/<path:path>", ui.static_file, Access.PUBLIC),
)

# WebSockets check Origin and the caller themselves (see websockets.py): a refusal has to be a close
# code after the handshake, not an HTTP status. The kind labels runsvc_websocket_connections.
WEBSOCKET_ROUTES: tuple[tuple[str, str, Callable[..., Awaitable[None]]], ...] = (
    (f"{API}/runs/<int:run_id>/events/ws", "run_events", live.run_events_ws),
    (f"{API}/runs/feed/ws", "feed", live.runs_feed_ws),
    (f"{API}/agents/ws", "agent", agents.agents_ws),  # authenticated by the agent's Bearer secret
)


def counted(kind: str, handler: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """`handler`, holding a slot of the overall WebSocket cap and counted in
    runsvc_websocket_connections{kind} while it runs; over the cap, the socket is closed with 1013."""

    @functools.wraps(handler)
    async def holding_a_slot(*args: Any, **kwargs: Any) -> None:
        svc = services()
        try:
            svc.sockets.acquire()
        except TooManySockets as full:
            await serve_socket(partial(_refuse, TRY_AGAIN_LATER, str(full)))
            return
        metrics = svc.metrics
        metrics.websocket_opened(kind)
        try:
            await handler(*args, **kwargs)
        finally:
            metrics.websocket_closed(kind)
            svc.sockets.release()

    return holding_a_slot


async def _refuse(code: int, reason: str, _outbox: Outbox) -> tuple[int, str]:
    """A socket's stream that only refuses it (a close code after the handshake, like every refusal)."""
    raise Refused(code, reason)


def _bounded(handler: Callable[..., Awaitable[object]]) -> Callable[..., Awaitable[object]]:
    """`handler`, refusing path integers beyond 64 bits with a 400 before it runs."""

    @functools.wraps(handler)
    async def bounded(**kwargs: object) -> object:
        check_path_ints(kwargs)
        return await handler(**kwargs)

    return bounded


def register(app: QuartTrio, routes: tuple[Route, ...] = ROUTES) -> None:
    document = build_document(routes, [path for path, _, _ in WEBSOCKET_ROUTES])
    app.config[openapi.OPENAPI_KEY] = openapi.serialize(document)
    for route in (*routes, *UI_ROUTES):
        endpoint = f"{route.method} {route.path}"
        guarded = guard(_bounded(route.handler), route.access, tokens_allowed=route.tokens_allowed)
        app.add_url_rule(route.path, endpoint, guarded, methods=[route.method])
    for path, kind, handler in WEBSOCKET_ROUTES:
        app.add_websocket(path, f"WS {path}", counted(kind, handler))
