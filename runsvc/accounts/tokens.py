"""API tokens (SPEC §12): long-lived bearer secrets for scripts and CI, tied to a user.

A token's secret is `rsv_` followed by 256 random bits (base64url); only its sha256 is stored. A
request made with a token acts as the token's user with the LOWER of the token's role and the user's
role at that moment, so demoting a user demotes their tokens at once; a disabled user's tokens, and
expired or revoked ones, authenticate nobody. `last_used_at` is written at most once a minute per
token, off the request's path (a request never waits for that write).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Callable
from typing import Any

import attrs

from ..log import get_logger
from ..store import Store, StoreClosedError
from ..store import tokens as token_store
from ..timeutil import format_ts, parse_ts, utcnow
from .revocations import Revocations
from .service import ROLE_RANK, AccountError, InvalidAccountInput, User, check_role

log = get_logger(__name__)

SECRET_PREFIX = "rsv_"
_MAX_SECRET_CHARS = 128  # a secret is 47 characters; anything much longer is not one of ours
MAX_NAME_CHARS = 200
DEFAULT_EXPIRES_IN_DAYS = 90
MAX_EXPIRES_IN_DAYS = 3650
LAST_USED_RESOLUTION_S = 60.0  # last_used_at is written at most this often per token
_MAX_ROW_ID = 2**63 - 1  # SQLite INTEGER


class TokenNotFound(AccountError):
    """No such token, or (for a non-admin) somebody else's."""


class RoleTooHigh(AccountError):
    """A token may not have a role above its creator's."""


@attrs.frozen
class ApiToken:
    """A token as the API shows it (never with its secret or hash)."""

    id: int
    name: str
    username: str
    role: str
    created_at: str
    expires_at: str | None
    last_used_at: str | None

    @classmethod
    def from_row(cls, row: Any) -> ApiToken:
        return cls(row["id"], row["name"], row["username"], row["role"], row["created_at"],
                   row["expires_at"], row["last_used_at"])

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


def secret_hash(secret: str) -> bytes:
    """What the api_tokens table stores of a secret."""
    return hashlib.sha256(secret.encode()).digest()


def lower_role(a: str, b: str) -> str:
    return a if ROLE_RANK[a] <= ROLE_RANK[b] else b


@attrs.define(eq=False)
class ApiTokens:
    """The API-token service. `clock` is the wall clock (tests replace it to move time)."""

    store: Store
    clock: Callable[[], dt.datetime] = utcnow
    revocations: Revocations | None = None  # told when a token is revoked, like a logout
    # token id -> the wall-clock moment its last_used_at was last written (or queued) by this process
    _touched: dict[int, dt.datetime] = attrs.field(factory=dict, init=False)

    async def create(
        self, creator: User, name: str, role: str | None, expires_in_days: int | None
    ) -> tuple[ApiToken, str]:
        """A new token of `creator`; returns it and its secret (shown once, never stored).

        `role` defaults to the creator's and may not exceed it (RoleTooHigh); `expires_in_days` None
        means the token never expires."""
        if not 1 <= len(name) <= MAX_NAME_CHARS:
            raise InvalidAccountInput(f"name must be 1-{MAX_NAME_CHARS} characters")
        if expires_in_days is not None and not 1 <= expires_in_days <= MAX_EXPIRES_IN_DAYS:
            raise InvalidAccountInput(f"expires_in_days must be 1-{MAX_EXPIRES_IN_DAYS} or null")
        if role is None:
            role = creator.role
        check_role(role)
        if ROLE_RANK[role] > ROLE_RANK[creator.role]:
            raise RoleTooHigh(f"a {creator.role} cannot create a token with role {role}")
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        now = self.clock()
        expires_at = None if expires_in_days is None else format_ts(now + dt.timedelta(days=expires_in_days))
        row = await self.store.write(
            token_store.insert_token, secret_hash(secret), creator.id, name, role, format_ts(now), expires_at
        )
        return ApiToken.from_row(row), secret

    async def list(self, user: User, *, everyone: bool) -> list[ApiToken]:
        """`user`'s tokens, or everybody's when `everyone` (admins)."""
        rows = await self.store.read(token_store.list_tokens, None if everyone else user.id)
        return [ApiToken.from_row(row) for row in rows]

    async def revoke(self, user: User, token_id: int, *, any_owner: bool, max_role: str | None = None) -> None:
        """Delete a token of `user` (of anybody when `any_owner`); TokenNotFound otherwise. `max_role`:
        the effective role of the token making the request, if one does; a token with a higher role is
        RoleTooHigh (a token acts within its role, so a low one cannot take away a stronger one)."""
        owner = None if any_owner else user.id
        outcome: int | str | None = None
        if 1 <= token_id <= _MAX_ROW_ID:
            outcome = await self.store.write(_delete_token_within, token_id, owner, max_role)
        if outcome is None:
            raise TokenNotFound(f"no token with id {token_id}")
        if isinstance(outcome, str):
            raise RoleTooHigh(f"{_article(max_role or '')} token cannot revoke a token with role {outcome}")
        self._touched.pop(token_id, None)
        if self.revocations is not None:
            self.revocations.publish(outcome)  # sockets opened with the token close (4401)

    async def authenticate(self, secret: str) -> tuple[User, ApiToken] | None:
        """The user (with the effective role) and token behind a bearer secret, or None."""
        if not secret.startswith(SECRET_PREFIX) or len(secret) > _MAX_SECRET_CHARS:
            return None
        now = self.clock()
        row = await self.store.read(token_store.get_live_token, secret_hash(secret), format_ts(now))
        if row is None:
            return None
        user = User.from_row(row)
        token = ApiToken(row["token_id"], row["token_name"], user.username, row["token_role"],
                         row["token_created_at"], row["token_expires_at"], row["token_last_used_at"])
        self._note_use(token, now)
        return attrs.evolve(user, role=lower_role(token.role, user.role)), token

    def _note_use(self, token: ApiToken, now: dt.datetime) -> None:
        """Queue a last_used_at write if the stored one (or the last one queued here) is a minute old.
        The request does not wait for it."""
        resolution = dt.timedelta(seconds=LAST_USED_RESOLUTION_S)
        latest = self._touched.get(token.id)
        if latest is not None and now - latest < resolution:
            return
        if token.last_used_at is not None and token.last_used_at > format_ts(now - resolution):
            self._touched[token.id] = parse_ts(token.last_used_at)
            return
        self._touched[token.id] = now
        if len(self._touched) > 100_000:  # bound the memory; forgetting only costs an extra write
            self._touched.clear()
        try:
            self.store.submit_write(
                token_store.touch_token, token.id, format_ts(now), format_ts(now - resolution),
                on_error=lambda exc: log.warning("could not record token use", error=repr(exc)),
            )
        except StoreClosedError:
            pass  # shutting down: the next start notes the next use


def _delete_token_within(conn: Any, token_id: int, owner: int | None, max_role: str | None) -> int | str | None:
    """One transaction: delete the token (of `owner`, unless None) if its role is at most `max_role`
    (any role when None). Returns its owner's user id; the token's role when that is above `max_role`;
    None when there is no such token."""
    if max_role is not None and max_role != "admin":  # nothing is above admin
        for row in token_store.list_tokens(conn, owner):
            if row["id"] == token_id and ROLE_RANK[row["role"]] > ROLE_RANK[max_role]:
                return str(row["role"])
    return token_store.delete_token(conn, token_id, owner)


def _article(role: str) -> str:
    return f"an {role}" if role[:1] in "aeiou" else f"a {role}"
