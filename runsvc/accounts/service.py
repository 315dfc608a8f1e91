"""Accounts: users and roles, password logins with a throttle, sessions, CSRF tokens.

Service functions on top of the store; nothing here knows about HTTP. Errors are `AccountError`s whose
message is one line for the user; the HTTP layer maps each kind to its status.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import trio

from ..names import NAME_RE, NAME_RULE
from ..store import Store
from ..store import sessions as session_store
from ..store import throttle as throttle_store
from ..store import users as user_store
from ..timeutil import format_ts, utcnow
from . import throttle
from .passwords import Passwords
from .revocations import Revocations

ROLES = ("viewer", "operator", "admin")
ROLE_RANK = {role: rank for rank, role in enumerate(ROLES, start=1)}  # viewer < operator < admin
USERNAME_RE = NAME_RE  # usernames follow the one name rule (see names.py for why)
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 1024
_MAX_TOKEN_CHARS = 128  # a session token is 43 characters; anything much longer is not one of ours
_MAX_ROW_ID = 2**63 - 1  # SQLite INTEGER


class AccountError(Exception):
    """Base of the errors below; the message is one line for the user."""


class InvalidAccountInput(AccountError):
    """A username, password or role breaks a rule."""


class UsernameTaken(AccountError):
    pass


class UserNotFound(AccountError):
    pass


class LastAdmin(AccountError):
    """The change would leave no enabled admin."""


class LoginFailed(AccountError):
    """Unknown user, wrong password or disabled user: deliberately indistinguishable."""


class LoginLocked(AccountError):
    """Too many failed logins for this username from this client, or too many logins in progress from
    this client."""

    def __init__(self, message: str, *, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


LOGIN_FAILED_MESSAGE = "invalid username or password"


@attrs.frozen
class User:
    id: int
    username: str
    role: str
    disabled: bool
    created_at: str

    @classmethod
    def from_row(cls, row: Any) -> User:
        return cls(row["id"], row["username"], row["role"], bool(row["disabled"]), row["created_at"])

    def has_role(self, minimum: str) -> bool:
        """At least `minimum` in viewer < operator < admin."""
        return ROLE_RANK[self.role] >= ROLE_RANK[minimum]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "username": self.username, "role": self.role, "disabled": self.disabled,
                "created_at": self.created_at}


@attrs.frozen
class Session:
    """A live session as seen by a request: who, and the CSRF token state changes must carry."""

    user: User
    csrf_token: str
    expires_at: str


def check_username(username: str) -> None:
    if not USERNAME_RE.fullmatch(username):
        raise InvalidAccountInput(f"username must be {NAME_RULE}")


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_CHARS:
        raise InvalidAccountInput(f"password must be at least {MIN_PASSWORD_CHARS} characters")
    if len(password) > MAX_PASSWORD_CHARS:
        raise InvalidAccountInput(f"password must be at most {MAX_PASSWORD_CHARS} characters")


def check_role(role: str) -> None:
    if role not in ROLE_RANK:
        raise InvalidAccountInput(f"role must be one of {', '.join(ROLES)}")


def token_hash(token: str) -> bytes:
    """What the sessions table stores of a session token."""
    return hashlib.sha256(token.encode()).digest()


def csrf_token_for(token: str) -> str:
    """The session's CSRF token: derived from the raw session token, so it needs no storage and cannot
    be computed by someone who can only read the database (which holds sha256(token))."""
    return hmac.new(token.encode(), b"csrf", hashlib.sha256).hexdigest()


@attrs.define(eq=False)
class Auth:
    """The accounts service. `clock` is the wall clock (tests replace it to move time).
    `max_logins_per_client`: logins one client address may have in progress at once."""

    store: Store
    passwords: Passwords
    session_ttl_s: float
    max_logins_per_client: int = 4
    clock: Callable[[], dt.datetime] = utcnow
    revocations: Revocations = attrs.field(factory=Revocations)  # told of logouts and user changes
    _login_locks: dict[tuple[str, str], list[Any]] = attrs.field(factory=dict, init=False)
    _logins_in_progress: dict[str, int] = attrs.field(factory=dict, init=False)  # by client address
    login_failures: int = attrs.field(default=0, init=False)  # bad credentials since start, for /metrics

    # ---- logins and sessions -----------------------------------------------------------------------

    async def login(self, username: str, password: str, client: str) -> tuple[Session, str]:
        """Check the password; return the new session and its token (for the cookie).

        Raises LoginLocked during a lockout (without checking the password) or while the client has
        `max_logins_per_client` logins in progress, HashingBusy when too many password checks wait
        already, and LoginFailed for an unknown user, a wrong password or a disabled user alike.
        """
        if not USERNAME_RE.fullmatch(username):
            # Cannot be anybody's name: nothing to throttle, no row to store, and no password to check.
            # The same 401 as any bad credential, but at once: the argon2 work that equalises the
            # time of an unknown user and a wrong password only matters for names that could exist
            # (it hides which of them do); spending it here would let a client queue unthrottled
            # hashing in front of every real login.
            self.login_failures += 1
            raise LoginFailed(LOGIN_FAILED_MESSAGE)
        key = (username.lower(), client)
        async with self._one_client_login(client), self._one_attempt_at_a_time(key):
            row = await self.store.read(throttle_store.get_throttle, *key)
            wait_s = throttle.retry_after_s(row, self.clock())
            if wait_s > 0:
                raise LoginLocked(f"too many failed logins; try again in {wait_s} s", retry_after_s=wait_s)
            user = await self._check_password(username, password)
            if user is None:
                advance = partial(throttle.after_failure, now=self.clock())
                await self.store.write(throttle_store.record_failure, *key, advance)
                self.login_failures += 1
                raise LoginFailed(LOGIN_FAILED_MESSAGE)
            token = secrets.token_urlsafe(32)  # 256 random bits
            now = self.clock()
            expires_at = format_ts(now + dt.timedelta(seconds=self.session_ttl_s))
            await self.store.write(
                _start_session, key, token_hash(token), user.id, format_ts(now), expires_at
            )
        return Session(user, csrf_token_for(token), expires_at), token

    async def authenticate(self, token: str | None) -> Session | None:
        """The live session of a raw session token (a cookie value), or None."""
        if not token or len(token) > _MAX_TOKEN_CHARS:
            return None
        row = await self.store.read(session_store.get_session_user, token_hash(token), self._now())
        if row is None:
            return None
        return Session(User.from_row(row), csrf_token_for(token), row["expires_at"])

    async def logout(self, token: str) -> None:
        hashed = token_hash(token)
        row = await self.store.read(session_store.get_session_user, hashed, self._now())
        await self.store.write(session_store.delete_session, hashed)
        if row is not None:
            self.revocations.publish(row["id"])

    async def _check_password(self, username: str, password: str) -> User | None:
        row = await self.store.read(user_store.get_user_with_hash, username)
        if row is None:
            await self.passwords.verify_dummy(password)
            return None
        if not await self.passwords.verify(row["password_hash"], password) or row["disabled"]:
            return None
        if self.passwords.needs_rehash(row["password_hash"]):
            new_hash = await self.passwords.hash(password)
            await self.store.write(
                user_store.replace_password_hash, row["id"], row["password_hash"], new_hash
            )
        return User.from_row(row)

    @asynccontextmanager
    async def _one_client_login(self, client: str) -> AsyncIterator[None]:
        """Count a login in progress from `client`; LoginLocked when it has the most it may have."""
        in_progress = self._logins_in_progress.get(client, 0)
        if in_progress >= self.max_logins_per_client:
            raise LoginLocked("too many logins in progress from this address; try again in 1 s", retry_after_s=1)
        self._logins_in_progress[client] = in_progress + 1
        try:
            yield
        finally:
            left = self._logins_in_progress[client] - 1
            if left:
                self._logins_in_progress[client] = left
            else:
                del self._logins_in_progress[client]

    @asynccontextmanager
    async def _one_attempt_at_a_time(self, key: tuple[str, str]) -> AsyncIterator[None]:
        """Serialize attempts per throttle key, so parallel guesses cannot all pass the lockout check."""
        entry = self._login_locks.setdefault(key, [trio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._login_locks[key]

    # ---- users -------------------------------------------------------------------------------------

    async def list_users(self) -> list[User]:
        return [User.from_row(row) for row in await self.store.read(user_store.list_users)]

    async def has_users(self) -> bool:
        return await self.store.read(user_store.count_users) > 0

    async def create_user(self, username: str, password: str, role: str) -> User:
        check_username(username)
        check_password(password)
        check_role(role)
        password_hash = await self.passwords.hash(password)
        row = await self.store.write(user_store.insert_user, username, password_hash, role, self._now())
        if row is None:
            raise UsernameTaken(f"username {username} is already taken")
        return User.from_row(row)

    async def create_first_admin(self, password: str) -> User | None:
        """Create `admin` with `password` if the database has no users at all; else None."""
        check_password(password)
        password_hash = await self.passwords.hash(password)
        row = await self.store.write(
            user_store.insert_first_user, "admin", password_hash, "admin", self._now()
        )
        return None if row is None else User.from_row(row)

    async def update_user(
        self,
        user_id: int,
        *,
        role: str | None = None,
        password: str | None = None,
        disabled: bool | None = None,
    ) -> User:
        """Change what is given. A new password or disabling ends the user's sessions."""
        if role is not None:
            check_role(role)
        if password is not None:
            check_password(password)
        if not 1 <= user_id <= _MAX_ROW_ID:
            raise UserNotFound(f"no user with id {user_id}")
        password_hash = None if password is None else await self.passwords.hash(password)
        outcome, row = await self.store.write(user_store.update_user, user_id, role, password_hash, disabled)
        if outcome == "not_found":
            raise UserNotFound(f"no user with id {user_id}")
        if outcome == "last_admin":
            raise LastAdmin("the last enabled admin cannot be demoted or disabled")
        self.revocations.publish(user_id)  # its sockets re-check their session and role
        return User.from_row(row)

    async def set_password(self, username: str, password: str) -> User:
        """Give the user named `username` a new password (ending its sessions)."""
        check_password(password)
        row = await self.store.read(user_store.get_user_with_hash, username)
        if row is None:
            raise UserNotFound(f"no user named {username}")
        return await self.update_user(row["id"], password=password)

    def _now(self) -> str:
        return format_ts(self.clock())


def _start_session(
    conn: Any, key: tuple[str, str], hashed: bytes, user_id: int, now: str, expires_at: str
) -> None:
    """One transaction: the login succeeded, so its throttle row goes and its session begins."""
    throttle_store.clear_throttle(conn, *key)
    session_store.insert_session(conn, hashed, user_id, now, expires_at)
