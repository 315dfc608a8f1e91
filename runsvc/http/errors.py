"""API errors and their JSON body: {"error": {"code": "<snake_case>", "message": "<human text>"}}."""

from __future__ import annotations

import json

from quart import Response

from .. import accounts as auth
from .. import agents
from ..jobs import service as jobs
from ..jobs.params import ParamError
from ..model import RunNotFound, StatusConflict, UnknownSecret, WebhookNotFound
from ..secrets import service as secrets
from ..store import StoreClosedError, StoreUnavailable

RETRY_AFTER_S = 5  # what a 503 tells clients to wait before trying again


class ApiError(Exception):
    """Raised anywhere below a handler; the error middleware turns it into the JSON answer."""

    status = 400
    code = "invalid_request"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class InvalidRequest(ApiError):
    status, code = 400, "invalid_request"


class Unauthenticated(ApiError):
    status, code = 401, "unauthenticated"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class CsrfRejected(ApiError):
    status, code = 403, "csrf"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class TooManyAttempts(ApiError):
    status, code = 429, "too_many_attempts"

    def __init__(self, message: str, *, retry_after_s: int):
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after_s))})
        self.retry_after_s = retry_after_s


class Unavailable(ApiError):
    """The database cannot serve this request now (SPEC §14): try again after Retry-After seconds."""

    status, code = 503, "unavailable"

    def __init__(self, message: str):
        super().__init__(message, headers={"Retry-After": str(RETRY_AFTER_S)})


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps({"error": {"code": code, "message": message}})
    return Response(body, status=status, headers=headers, content_type="application/json")


# The one mapping of the services' errors to HTTP answers; handlers let these propagate.
DOMAIN_ERRORS: tuple[tuple[type[Exception], type[ApiError]], ...] = (
    (auth.LoginFailed, Unauthenticated),
    (auth.InvalidAccountInput, InvalidRequest),
    (auth.UserNotFound, NotFound),
    (auth.UsernameTaken, Conflict),
    (auth.LastAdmin, Conflict),
    (auth.TokenNotFound, NotFound),
    (auth.RoleTooHigh, Forbidden),
    (RunNotFound, NotFound),
    (StatusConflict, Conflict),
    (agents.InvalidAgentInput, InvalidRequest),
    (agents.EnrollmentRefused, Unauthenticated),
    (agents.AgentNameTaken, Conflict),
    (agents.AgentNotFound, NotFound),
    (jobs.JobNotFound, NotFound),
    (jobs.JobNameTaken, Conflict),
    (jobs.InvalidJobInput, InvalidRequest),
    (ParamError, InvalidRequest),
    (WebhookNotFound, NotFound),
    (UnknownSecret, InvalidRequest),
    (secrets.SecretNotFound, NotFound),
    (secrets.SecretExists, Conflict),
    (secrets.InvalidSecretInput, InvalidRequest),
)


def api_error_for(error: Exception) -> ApiError:
    """The HTTP answer to an error of a service."""
    message = str(error)
    if isinstance(error, auth.LoginLocked):
        return TooManyAttempts(message, retry_after_s=error.retry_after_s)
    if isinstance(error, auth.HashingBusy):
        return Unavailable(message)
    if isinstance(error, StoreUnavailable):
        return Unavailable(f"{message}; try again later")
    if isinstance(error, StoreClosedError):
        return Unavailable("the server is shutting down")
    for kind, api_kind in DOMAIN_ERRORS:
        if isinstance(error, kind):
            return api_kind(message)
    raise TypeError(f"no HTTP answer for {type(error).__name__}") from error
