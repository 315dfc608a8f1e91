"""Who may call a route: authentication, CSRF and role checks, applied from the route table.

Every route declares an `Access`; `guard()` wraps its handler so the checks run in the order of the
spec before the handler sees the request: authentication (401 `unauthenticated`), then the CSRF token
for state-changing methods (403 `csrf`), then the role (403 `forbidden`). Body size (413), validation
(400), missing things (404) and conflicts (409) are the handler's, so they always come after.

A caller is a `Principal`, reached one of two ways: a session cookie, or an API token in
`Authorization: Bearer rsv_…`. `authenticate()` is the one place that decides which, for HTTP routes
and WebSockets alike: a bearer header wins over a cookie, and a bad one is refused even with a good
cookie; other `Authorization` schemes are ignored. A bearer request needs no CSRF header (the token is
not ambient: a browser never attaches it by itself). Its role is the lower of the token's and the
user's current role, and governs its writes too: a viewer token changes nothing (403), not even the
tokens of its own user.

A guarded handler finds its caller with `current_principal()` / `current_user()`.
"""

from __future__ import annotations

import enum
import functools
import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import attrs
from quart import g, request

from ..accounts import ApiToken, Auth, Session, User
from .errors import CsrfRejected, Forbidden, Unauthenticated
from .types import services

SESSION_COOKIE = "runsvc_session"
CSRF_HEADER = "X-CSRF-Token"
STATE_CHANGING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class Access(enum.Enum):
    """What a route requires. Roles are ordered viewer < operator < admin."""

    PUBLIC = None  # anyone, no session needed
    SESSION = "session"  # any logged-in user, whatever the role
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"
    # anyone connecting from a loopback address to a loopback Host name (not a DNS-rebinding page), else admins
    LOOPBACK_OR_ADMIN = "loopback_or_admin"

    @property
    def minimum_role(self) -> str | None:
        if self is Access.LOOPBACK_OR_ADMIN:
            return "admin"
        return self.value if self in (Access.VIEWER, Access.OPERATOR, Access.ADMIN) else None


def from_loopback(remote_addr: str | None) -> bool:
    """Whether the peer's address is a loopback one (127.0.0.0/8, ::1)."""
    try:
        return remote_addr is not None and ipaddress.ip_address(remote_addr).is_loopback
    except ValueError:
        return False


def host_name(host: str | None) -> str:
    """The name in a Host header, lowercased, without its port or an IPv6 literal's brackets ("" for
    none): `[::1]:8080` -> `::1`, `Runs.Example.com:443` -> `runs.example.com`."""
    host = (host or "").strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    name, colon, port = host.rpartition(":")
    return name if colon and port.isdigit() and ":" not in name else host


def host_allowed(allowed_hosts: tuple[str, ...], host: str | None) -> bool:
    """Whether a request naming `host` in its Host header may be served: any host when `allowed_hosts`
    is empty, else only one of its names (with or without a port)."""
    return not allowed_hosts or host_name(host) in allowed_hosts


def loopback_host(host: str | None) -> bool:
    """Whether a Host header names this machine's loopback: `localhost` or a loopback address. A page
    that rebinds its own DNS name to 127.0.0.1 still sends its own name, so it is not."""
    name = host_name(host)
    return name == "localhost" or from_loopback(name)


class _Lookup(Protocol):
    """Request headers or cookies (werkzeug's Headers is not a Mapping)."""

    def get(self, key: str, /) -> str | None: ...


@attrs.frozen
class Principal:
    """Who makes a request: a user with the role in force for it, and how they proved it (exactly one
    of `session` and `token` is set)."""

    user: User  # `role` is the effective role: for a token, the lower of the token's and the user's
    session: Session | None = None
    token: ApiToken | None = None

    @property
    def csrf_token(self) -> str | None:
        """The CSRF token cookie-authenticated state changes must carry; None for a bearer token."""
        return None if self.session is None else self.session.csrf_token


def bearer_secret(authorization: str | None) -> str | None:
    """The credential of an `Authorization: Bearer …` header ("" when it is empty); None when there is
    no header or it uses another scheme."""
    if authorization is None:
        return None
    scheme, _, credential = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credential.strip()


async def authenticate(headers: _Lookup, cookies: _Lookup) -> Principal | None:
    """The caller behind a request's (or WebSocket handshake's) headers and cookies, or None.

    The one decision for every route and socket: a bearer header, if present, decides alone (a bad
    one is None even with a good cookie); otherwise the session cookie."""
    svc = services()
    secret = bearer_secret(headers.get("Authorization"))
    if secret is not None:
        found = await svc.tokens.authenticate(secret)
        if found is None:
            return None
        user, token = found
        return Principal(user, token=token)
    session = await authenticate_cookie(svc.auth, cookies.get(SESSION_COOKIE))
    return None if session is None else Principal(session.user, session=session)


async def authenticate_cookie(auth: Auth, cookie_value: str | None) -> Session | None:
    """The live session behind a `runsvc_session` cookie value, or None (expired, logged out,
    user disabled, or no such session)."""
    return await auth.authenticate(cookie_value)


async def authenticate_request() -> Principal | None:
    """The caller of the current HTTP request, or None."""
    return await authenticate(request.headers, request.cookies)


def current_principal() -> Principal:
    """The caller of the current request; only inside a handler of a non-PUBLIC route."""
    principal = g.get("principal")
    if principal is None:
        raise RuntimeError("current_principal() outside a route that requires authentication")
    return principal


def current_session() -> Session:
    """The session of the current request; only inside a handler of a route closed to tokens."""
    session = current_principal().session
    if session is None:
        raise RuntimeError("current_session() in a request authenticated by a token")
    return session


def current_user() -> User:
    """The user making the current request, with the effective role; only inside a handler of a
    non-PUBLIC route."""
    return current_principal().user


def csrf_ok(session: Session) -> bool:
    sent = request.headers.get(CSRF_HEADER, "")
    return hmac.compare_digest(sent.encode(), session.csrf_token.encode())


def guard(
    handler: Callable[..., Awaitable[Any]], access: Access, *, tokens_allowed: bool = True
) -> Callable[..., Awaitable[Any]]:
    """`handler`, preceded by the checks `access` requires. With `tokens_allowed=False` a request
    made with an API token is refused (403) at the role check: only a logged-in session may do it."""
    if access is Access.PUBLIC:
        return handler

    @functools.wraps(handler)
    async def guarded(*args: Any, **kwargs: Any) -> Any:
        if (
            access is Access.LOOPBACK_OR_ADMIN
            and from_loopback(request.remote_addr)
            and loopback_host(request.headers.get("Host"))
        ):
            return await handler(*args, **kwargs)
        principal = await authenticate_request()
        if principal is None:
            raise Unauthenticated("authentication required")
        session = principal.session
        if session is not None and request.method in STATE_CHANGING_METHODS and not csrf_ok(session):
            raise CsrfRejected(f"missing or wrong {CSRF_HEADER} header")
        if principal.token is not None and not tokens_allowed:
            raise Forbidden("an API token cannot do this; log in with a password")
        if principal.token is not None and request.method in STATE_CHANGING_METHODS and not principal.user.has_role(
            "operator"
        ):
            # A token's writes follow its effective role, and a viewer's is read-only; a viewer's own
            # session may still manage its tokens.
            raise Forbidden("a viewer token may only read")
        minimum = access.minimum_role
        if minimum is not None and not principal.user.has_role(minimum):
            needs = minimum if minimum == "admin" else f"{minimum} or higher"
            raise Forbidden(f"role {principal.user.role} may not do this (needs {needs})")
        g.principal = principal
        return await handler(*args, **kwargs)

    return guarded
