"""The OpenAPI 3.1 document of the HTTP API, built from the route table so that it cannot drift.

`build_document(ROUTES, ...)` walks every route: its method and path come from the table, and so do
the security requirements (from its `Access`), the CSRF header (state-changing methods), the error
answers the access checks can give (401, 403), and the request body, made from the very fields its
handler validates (validation.body_schema). The objects the API answers with are in api_schemas.py.
What the table cannot say — response bodies, query parameters — is in `OPERATIONS`, keyed by (method,
path); a route without an entry there fails the build (and so the test suite), and so does an entry
without a route.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from ..model import STATUSES
from .access import CSRF_HEADER, SESSION_COOKIE, STATE_CHANGING_METHODS, Access
from .api_schemas import SCHEMAS, TIMESTAMP, Schema, nullable, ref
from .validation import Field, body_schema

API = "/api/v1"
_PATH_PARAM = re.compile(r"<(?:int:)?([a-z_]+)>")
_INT_PARAM = re.compile(r"<int:([a-z_]+)>")
_MAX_ID = 2**63 - 1  # SQLite INTEGER

JSON = "application/json"


class RouteLike(Protocol):
    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def access(self) -> Access: ...
    @property
    def tokens_allowed(self) -> bool: ...
    @property
    def body(self) -> Mapping[str, Field] | None: ...


def obj(properties: dict[str, Schema], required: Iterable[str] = ()) -> Schema:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


def query(name: str, schema: Schema, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


USER_AND_CSRF = obj({"user": ref("User"), "csrf_token": nullable({"type": "string"})}, ["user", "csrf_token"])
RUN = obj({"run": ref("Run")}, ["run"])
JOB = obj({"job": ref("Job")}, ["job"])
SECRET = obj({"secret": ref("Secret")}, ["secret"])
SECRET_NAME: Schema = {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]{0,63}$"}
NO_CONTENT = None  # a 204

# (method, path) -> summary, parameters, requestBody schema, {status: response schema or a media type}
OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/healthz"): {
        "summary": "Liveness",
        "responses": {200: obj({"status": {"const": "ok"}}, ["status"])},
    },
    ("GET", "/metrics"): {
        "summary": "Prometheus metrics (open on loopback; an admin otherwise)",
        "responses": {200: "text/plain"},
    },
    ("GET", f"{API}/openapi.json"): {
        "summary": "This document (OpenAPI 3.1)",
        "responses": {200: {"type": "object", "required": ["openapi", "paths"]}},
    },
    ("POST", f"{API}/auth/login"): {
        "summary": "Log in; sets the runsvc_session cookie and its readable companion runsvc_logged_in=1",
        "responses": {200: USER_AND_CSRF, 401: "error", 429: "error"},
    },
    ("POST", f"{API}/auth/logout"): {"summary": "End the session", "responses": {204: NO_CONTENT}},
    ("GET", f"{API}/auth/me"): {
        "summary": "Who am I (csrf_token is null for an API token)",
        "responses": {200: USER_AND_CSRF},
    },
    ("GET", f"{API}/users"): {
        "summary": "List users",
        "responses": {200: obj({"users": {"type": "array", "items": ref("User")}}, ["users"])},
    },
    ("POST", f"{API}/users"): {
        "summary": "Create a user",
        "responses": {201: obj({"user": ref("User")}, ["user"]), 409: "error"},
    },
    ("PATCH", f"{API}/users/<int:user_id>"): {
        "summary": "Change a user's role, password or disabled flag",
        "responses": {200: obj({"user": ref("User")}, ["user"]), 404: "error", 409: "error"},
    },
    ("POST", f"{API}/tokens"): {
        "summary": "Create an API token (a logged-in session only); the secret is in this answer only",
        "responses": {201: obj({"token": ref("ApiToken"), "secret": {"type": "string", "pattern": "^rsv_"}},
                               ["token", "secret"])},
    },
    ("GET", f"{API}/tokens"): {
        "summary": "List one's API tokens (an admin: everybody's)",
        "responses": {200: obj({"tokens": {"type": "array", "items": ref("ApiToken")}}, ["tokens"])},
    },
    ("DELETE", f"{API}/tokens/<int:token_id>"): {
        "summary": "Revoke an API token", "responses": {204: NO_CONTENT, 404: "error"},
    },
    ("POST", f"{API}/runs"): {
        "summary": "Submit a run",
        "responses": {201: RUN},
    },
    ("GET", f"{API}/runs"): {
        "summary": "List runs, newest first (keyset pagination with `before`)",
        "parameters": [
            query("status", {"type": "string"}, "one status or a comma-separated list: " + ", ".join(STATUSES)),
            query("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "page size, default 50"),
            query("before", {"type": "integer", "minimum": 1, "maximum": _MAX_ID}, "the `next` of the previous page"),
            query("job_id", {"type": "integer", "minimum": 1, "maximum": _MAX_ID}, "only the runs of this job"),
        ],
        "responses": {200: obj({"runs": {"type": "array", "items": ref("RunSummary")},
                                "next": nullable({"type": "integer"})},
                               ["runs", "next"])},
    },
    ("GET", f"{API}/runs/<int:run_id>"): {"summary": "A run", "responses": {200: RUN, 404: "error"}},
    ("POST", f"{API}/runs/<int:run_id>/cancel"): {
        "summary": "Cancel a queued or running run", "responses": {202: RUN, 404: "error", 409: "error"},
    },
    ("POST", f"{API}/runs/<int:run_id>/rerun"): {
        "summary": "Start a new run like this one (finished or not): same command, env, timeout, labels, job, "
                   "params, retries and concurrency; trigger rerun, a first try",
        "responses": {201: RUN, 404: "error"},
    },
    ("GET", f"{API}/runs/<int:run_id>/events"): {
        "summary": "A page of a run's events after a seq",
        "parameters": [
            query("after_seq", {"type": "integer", "minimum": 0, "maximum": _MAX_ID}, "after this seq, default 0"),
            query("limit", {"type": "integer", "minimum": 1, "maximum": 10_000}, "page size, default 1000"),
        ],
        "responses": {
            200: obj({"events": {"type": "array", "items": ref("Event")}, "last_seq": {"type": "integer"},
                      "complete": {"type": "boolean"}}, ["events", "last_seq", "complete"]),
            404: "error",
        },
    },
    ("GET", f"{API}/secrets"): {
        "summary": "List secrets by name (never their values)",
        "responses": {200: obj({"secrets": {"type": "array", "items": ref("Secret")}}, ["secrets"])},
    },
    ("POST", f"{API}/secrets"): {
        "summary": "Create a secret (its value is stored encrypted and never shown again)",
        "responses": {201: SECRET, 409: "error"},
    },
    ("PUT", f"{API}/secrets/<name>"): {
        "summary": "Replace a secret's value (an unknown name is 404: PUT does not create)",
        "path_schemas": {"name": SECRET_NAME},
        "responses": {200: SECRET, 404: "error"},
    },
    ("DELETE", f"{API}/secrets/<name>"): {
        "summary": "Delete a secret (runs that name it and start later fail)",
        "path_schemas": {"name": SECRET_NAME},
        "responses": {204: NO_CONTENT, 404: "error"},
    },
    ("POST", f"{API}/enrollment-tokens"): {
        "summary": "Create a one-time agent enrollment token; the secret is in this answer only",
        "responses": {201: obj({"enrollment_token": ref("EnrollmentToken"), "token": {"type": "string"}},
                               ["enrollment_token", "token"])},
    },
    ("GET", f"{API}/enrollment-tokens"): {
        "summary": "List enrollment tokens (without their secrets)",
        "responses": {200: obj({"enrollment_tokens": {"type": "array", "items": ref("EnrollmentToken")}},
                               ["enrollment_tokens"])},
    },
    ("DELETE", f"{API}/enrollment-tokens/<int:token_id>"): {
        "summary": "Delete an enrollment token", "responses": {204: NO_CONTENT, 404: "error"},
    },
    ("POST", f"{API}/agents/enroll"): {
        "summary": "Enroll an agent with a one-time token (no session); the agent's secret is in this answer only",
        "responses": {201: obj({"agent": ref("Agent"), "secret": {"type": "string"}}, ["agent", "secret"]),
                      401: "error", 409: "error"},
    },
    ("GET", f"{API}/agents"): {
        "summary": "List agents",
        "responses": {200: obj({"agents": {"type": "array", "items": ref("Agent")}}, ["agents"])},
    },
    ("DELETE", f"{API}/agents/<int:agent_id>"): {
        "summary": "Revoke an agent: disconnected, its secret refused, its runs interrupted",
        "responses": {204: NO_CONTENT, 404: "error"},
    },
    ("GET", f"{API}/runs/<int:run_id>/log"): {
        "summary": "The run's stored stdout and stderr lines, streamed", "responses": {200: "text/plain", 404: "error"},
    },
    ("GET", f"{API}/jobs"): {
        "summary": "List jobs by name (ignoring case)",
        "responses": {200: obj({"jobs": {"type": "array", "items": ref("Job")}}, ["jobs"])},
    },
    ("POST", f"{API}/jobs"): {"summary": "Create a job", "responses": {201: JOB, 409: "error"}},
    ("GET", f"{API}/jobs/<int:job_id>"): {"summary": "A job", "responses": {200: JOB, 404: "error"}},
    ("PATCH", f"{API}/jobs/<int:job_id>"): {
        "summary": "Change a job's fields (a nested object given replaces the old one whole)",
        "responses": {200: JOB, 404: "error", 409: "error"},
    },
    ("DELETE", f"{API}/jobs/<int:job_id>"): {
        "summary": "Delete a job: its runs stay (job_id null), its queued runs are cancelled",
        "responses": {204: NO_CONTENT, 404: "error"},
    },
    ("POST", f"{API}/jobs/<int:job_id>/runs"): {
        "summary": "Start a run of the job with parameter values (each reaches the run as PARAM_<NAME>)",
        "responses": {201: RUN, 404: "error"},
    },
    ("GET", f"{API}/jobs/<int:job_id>/fires"): {
        "summary": "The job's recorded schedule fires, newest first",
        "parameters": [query("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "how many, default 50")],
        "responses": {200: obj({"fires": {"type": "array", "items": ref("Fire")}}, ["fires"]), 404: "error"},
    },
    ("POST", f"{API}/webhooks"): {
        "summary": "Create a webhook; its signing secret (given, or a new whsec_…) is in this answer only",
        "responses": {201: obj({"webhook": ref("Webhook"), "secret": {"type": "string"}}, ["webhook", "secret"])},
    },
    ("GET", f"{API}/webhooks"): {
        "summary": "List webhooks",
        "responses": {200: obj({"webhooks": {"type": "array", "items": ref("Webhook")}}, ["webhooks"])},
    },
    ("PATCH", f"{API}/webhooks/<int:webhook_id>"): {
        "summary": "Change a webhook's url, events, job or statuses (its secret cannot change)",
        "responses": {200: obj({"webhook": ref("Webhook")}, ["webhook"]), 404: "error"},
    },
    ("DELETE", f"{API}/webhooks/<int:webhook_id>"): {
        "summary": "Delete a webhook and its deliveries, pending ones included",
        "responses": {204: NO_CONTENT, 404: "error"},
    },
    ("GET", f"{API}/webhooks/<int:webhook_id>/deliveries"): {
        "summary": "The webhook's deliveries, newest first",
        "parameters": [query("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "how many, default 50")],
        "responses": {200: obj({"deliveries": {"type": "array", "items": ref("WebhookDelivery")}}, ["deliveries"]),
                      404: "error"},
    },
    ("GET", f"{API}/schedule/preview"): {
        "summary": "What a cron text means: the library's reading of it and its next 3 fire times",
        "parameters": [
            {**query("cron", {"type": "string", "maxLength": 200}, "the cron text"), "required": True},
            query("timezone", {"type": "string", "maxLength": 100}, "an IANA name, default UTC"),
        ],
        "responses": {200: obj({"explanation": {"type": "string"},
                                "next_fires": {"type": "array", "items": TIMESTAMP}},
                               ["explanation", "next_fires"])},
    },
}


def openapi_path(rule: str) -> str:
    """`/api/v1/runs/<int:run_id>` -> `/api/v1/runs/{run_id}`."""
    return _PATH_PARAM.sub(r"{\1}", rule)


def _error() -> dict[str, Any]:
    return {"description": "error", "content": {JSON: {"schema": ref("Error")}}}


def _response(status: int, spec: Any) -> dict[str, Any]:
    if spec is None:
        return {"description": "no content"}
    if spec == "error":
        return _error()
    if spec == "text/plain":
        return {"description": "text", "content": {"text/plain": {"schema": {"type": "string"}}}}
    return {"description": "OK" if status < 300 else "answer", "content": {JSON: {"schema": spec}}}


def _tag(path: str) -> str:
    """The group an operation belongs to (a generated client makes one module per tag): the first segment
    after /api/v1 (`runs`, `auth`, `agents`, ...); `service` for /healthz, /metrics and this document."""
    if not path.startswith(API + "/") or path == f"{API}/openapi.json":
        return "service"
    return path[len(API) + 1:].split("/", 1)[0]


def _operation(route: RouteLike, spec: dict[str, Any]) -> dict[str, Any]:
    method = route.method.upper()
    integers = set(_INT_PARAM.findall(route.path))
    parameters = [
        {"name": name, "in": "path", "required": True,
         "schema": {"type": "integer", "minimum": 0, "maximum": _MAX_ID} if name in integers else
         spec.get("path_schemas", {}).get(name, {"type": "string"})}
        for name in _PATH_PARAM.findall(route.path)
    ]
    parameters += spec.get("parameters", [])
    responses: dict[str, Any] = {str(status): _response(status, body) for status, body in spec["responses"].items()}
    for status in (400, 404, 405):
        responses.setdefault(str(status), _error())
    operation: dict[str, Any] = {
        "operationId": f"{method.lower()}_{openapi_path(route.path).strip('/').replace('/', '_')}"
        .replace("{", "").replace("}", "").replace("-", "_"),
        "summary": spec["summary"],
        "tags": [_tag(route.path)],
        "responses": responses,
    }
    if route.access is not Access.PUBLIC:
        # A state change with the session cookie also needs the CSRF header; a bearer token needs nothing
        # else (and is refused where tokens are not allowed).
        cookie: dict[str, list[str]] = {"cookieAuth": []}
        if method in STATE_CHANGING_METHODS:
            cookie["csrfHeader"] = []
        operation["security"] = [cookie] + ([{"bearerAuth": []}] if route.tokens_allowed else [])
        responses.setdefault("401", _error())
        responses.setdefault("403", _error())
    if route.body is not None:
        operation["requestBody"] = {"required": True, "content": {JSON: {"schema": body_schema(route.body)}}}
        responses.setdefault("413", _error())
    if parameters:
        operation["parameters"] = parameters
    notes = []
    minimum = route.access.minimum_role
    if minimum is not None:
        notes.append(f"role: {minimum}" + ("" if minimum == "admin" else " or higher"))
    if route.access is Access.LOOPBACK_OR_ADMIN:
        notes.append("open to loopback clients")
    if not route.tokens_allowed:
        notes.append("not with an API token (403)")
    if notes:
        operation["description"] = "; ".join(notes)
    return operation


def build_document(routes: Sequence[RouteLike], websocket_paths: Iterable[str] = ()) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `routes`. Raises LookupError if a route has no entry in OPERATIONS
    or an entry has no route."""
    keys = {(route.method.upper(), route.path) for route in routes}
    missing = keys - OPERATIONS.keys()
    if missing:
        raise LookupError(f"routes missing from the OpenAPI description: {sorted(missing)}")
    stale = OPERATIONS.keys() - keys
    if stale:
        raise LookupError(f"OpenAPI operations without a route: {sorted(stale)}")
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        spec = OPERATIONS[(route.method.upper(), route.path)]
        paths.setdefault(openapi_path(route.path), {})[route.method.lower()] = _operation(route, spec)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "runsvc",
            "version": "1",
            "description": "A self-hosted run service. Errors are {\"error\": {\"code\", \"message\"}}.",
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "cookieAuth": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE},
                "csrfHeader": {"type": "apiKey", "in": "header", "name": CSRF_HEADER,
                               "description": "the session's csrf_token (from login or /auth/me)"},
                "bearerAuth": {"type": "http", "scheme": "bearer", "description": "an API token, rsv_..."},
            },
        },
        "x-websockets": [openapi_path(path) for path in websocket_paths],
    }
