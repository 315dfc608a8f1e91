"""Who may call a route: authentication, CSRF and role checks, applied from the route table.

Every route declares an `Access`; `guard()` wraps its handler so the checks run in the order of the
spec before the handler sees the request: authentication (401 `unauthenticated`), then the CSRF token
for state-changing methods (403 `csrf`), then the role (403 `forbidden`). Body size (413), validation
(400), missing things (404) and conflicts (409) are the handler's, so they always come after.

A guarded handler finds its caller with `current_user()` (and `current_session()`). A WebSocket
handler, which cannot use the CSRF header, authenticates the cookie with `authenticate_cookie()`.
"""

from __future__ import annotations

import enum
import functools
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from quart import g, request

from ..accounts import Auth, Session, User
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

    @property
    def minimum_role(self) -> str | None:
        return self.value if self in (Access.VIEWER, Access.OPERATOR, Access.ADMIN) else None


async def authenticate_cookie(auth: Auth, cookie_value: str | None) -> Session | None:
    """The live session behind a `runsvc_session` cookie value, or None (expired, logged out,
    user disabled, or no such session). For WebSocket handlers; HTTP routes get this from `guard()`."""
    return await auth.authenticate(cookie_value)


async def authenticate_request() -> Session | None:
    """The session of the current request's cookie, or None."""
    return await authenticate_cookie(services().auth, request.cookies.get(SESSION_COOKIE))


def current_session() -> Session:
    """The session of the current request; only inside a handler of a non-PUBLIC route."""
    session = g.get("session")
    if session is None:
        raise RuntimeError("current_session() outside a route that requires a session")
    return session


def current_user() -> User:
    """The user making the current request; only inside a handler of a non-PUBLIC route."""
    return current_session().user


def csrf_ok(session: Session) -> bool:
    sent = request.headers.get(CSRF_HEADER, "")
    return hmac.compare_digest(sent.encode(), session.csrf_token.encode())


def guard(handler: Callable[..., Awaitable[Any]], access: Access) -> Callable[..., Awaitable[Any]]:
    """`handler`, preceded by the checks `access` requires."""
    if access is Access.PUBLIC:
        return handler

    @functools.wraps(handler)
    async def guarded(*args: Any, **kwargs: Any) -> Any:
        session = await authenticate_request()
        if session is None:
            raise Unauthenticated("authentication required")
        if request.method in STATE_CHANGING_METHODS and not csrf_ok(session):
            raise CsrfRejected(f"missing or wrong {CSRF_HEADER} header")
        minimum = access.minimum_role
        if minimum is not None and not session.user.has_role(minimum):
            needs = minimum if minimum == "admin" else f"{minimum} or higher"
            raise Forbidden(f"role {session.user.role} may not do this (needs {needs})")
        g.session = session
        g.user = session.user
        return await handler(*args, **kwargs)

    return guarded
