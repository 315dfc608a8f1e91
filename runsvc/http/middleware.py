"""Cross-cutting request handling: error mapping and security headers.

Authentication, CSRF and role checks live in `access.py`, applied per route from the route table.
"""

from __future__ import annotations

import traceback
from urllib.parse import urlsplit, urlunsplit

from quart import Response, request, websocket
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from ..accounts import AccountError, HashingBusy
from ..agents import AgentError
from ..jobs.params import ParamError
from ..jobs.service import JobError
from ..log import get_logger
from ..model import RunNotFound, StatusConflict, UnknownSecret, WebhookNotFound
from ..secrets.service import SecretError
from ..store import StoreClosedError, StoreUnavailable
from .access import host_allowed
from .errors import ApiError, InvalidRequest, api_error_for, error_response
from .types import services

log = get_logger(__name__)

_HTTP_CODES = {
    400: ("invalid_request", "malformed request"),
    404: ("not_found", "no such resource"),
    405: ("method_not_allowed", "method not allowed on this resource"),
    413: ("payload_too_large", "request body is too large"),
}

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self'; img-src 'self' data:; object-src 'none'; "
        "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def install(app: QuartTrio) -> None:
    @app.errorhandler(ApiError)
    async def _api_error(error: ApiError) -> Response:
        return error_response(error.status, error.code, error.message, error.headers)

    async def _domain_error(error: Exception) -> Response:
        api_error = api_error_for(error)
        return error_response(api_error.status, api_error.code, api_error.message, api_error.headers)

    domain_errors = (
        AccountError, HashingBusy, AgentError, RunNotFound, StatusConflict, StoreUnavailable, StoreClosedError,
        JobError, ParamError, SecretError, UnknownSecret, WebhookNotFound,
    )
    for domain_error in domain_errors:
        app.register_error_handler(domain_error, _domain_error)

    @app.errorhandler(HTTPException)
    async def _http_error(error: HTTPException) -> Response:
        status = error.code or 500
        code, message = _HTTP_CODES.get(status, ("http_error", error.name.lower()))
        headers = {}
        valid_methods = getattr(error, "valid_methods", None)  # set on werkzeug's MethodNotAllowed
        if status == 405 and valid_methods:
            headers["Allow"] = ", ".join(sorted(valid_methods))
        if status == 413:
            # The rest of the body may still be on its way; closing is the only way the next request
            # on this connection does not wait behind (or get parsed out of) it.
            headers["Connection"] = "close"
        return error_response(status, code, message, headers)

    @app.errorhandler(Exception)
    async def _unexpected(error: Exception) -> Response:
        # Logged with its traceback for the operator; the client learns nothing about internals.
        log.error("unhandled error in request", error=repr(error), exc_info_text=_format(error))
        return error_response(500, "internal_error", "internal server error")

    @app.before_request
    async def _allowed_host() -> None:
        _check_host(request.headers.get("Host"))

    @app.before_websocket
    async def _allowed_websocket_host() -> None:
        _check_host(websocket.headers.get("Host"))

    @app.after_request
    async def _drain_request_body(response: Response) -> Response:
        # Hypercorn's h11 protocol stops serving a keep-alive connection whose request body arrives
        # after the response ended (the client's next request then hangs): an answer given without
        # reading the body (404, 405, 401) reads it first. Over the size limit, the 413 path applies.
        if request.content_length or "chunked" in request.headers.get("Transfer-Encoding", "").lower():
            try:
                await request.get_data(cache=False)
            except HTTPException:
                pass
        return response

    @app.after_request
    async def _relative_redirects(response: Response) -> Response:
        # Werkzeug's slash-merging redirect (308, `/api//v1/x` -> `/api/v1/x`) is absolute, built from
        # the Host header the client chose; a relative Location sends the client to the same server.
        location = response.headers.get("Location")
        if location is not None and 300 <= response.status_code < 400:
            parts = urlsplit(location)
            if parts.scheme or parts.netloc:
                path = "/" + parts.path.lstrip("/")  # never `//host`, which a browser reads as another origin
                response.headers["Location"] = urlunsplit(("", "", path, parts.query, parts.fragment))
        return response

    @app.after_request
    async def _security_headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        response.headers.setdefault("Cache-Control", "no-store")
        return response


def _check_host(host: str | None) -> None:
    """With `allowed_hosts` set, a request naming another host is refused (400): a page whose DNS name
    was rebound to this server's address sends its own name, so it cannot reach the API through it."""
    if not host_allowed(services().settings.allowed_hosts, host):
        raise InvalidRequest("host not allowed")


def _format(error: BaseException) -> str:
    return "".join(traceback.format_exception(error))
