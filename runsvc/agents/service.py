"""The agents service: enrollment tokens, enrollment, the list of agents, revocation — what handlers call."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from functools import partial
from typing import Any

from ..accounts.service import token_hash
from ..names import MAX_LABELS, NAME_RE
from ..store import Store
from ..store import agents as sql
from ..timeutil import now_ts, ts_after
from .hub import AgentHub

DEFAULT_TOKEN_TTL_S = 3600
MAX_TOKEN_TTL_S = 7 * 86400


class AgentError(Exception):
    """Base of the agents service's errors (mapped to HTTP answers in http/errors.py)."""


class InvalidAgentInput(AgentError):
    """A name or label list breaks the rules (400)."""


class EnrollmentRefused(AgentError):
    """Unknown, used or expired enrollment token (401, the same answer for all three)."""


class AgentNameTaken(AgentError):
    """409: the name is taken; the token is not used up."""


class AgentNotFound(AgentError):
    """404: no such agent or enrollment token."""


def check_labels(labels: Sequence[str], field: str = "labels") -> list[str]:
    if len(labels) > MAX_LABELS:
        raise InvalidAgentInput(f"{field} must hold at most {MAX_LABELS} labels")
    for label in labels:
        if not NAME_RE.fullmatch(label):
            raise InvalidAgentInput(f"{field} must be 1-64 characters of A-Z a-z 0-9 _ . - each")
    return list(dict.fromkeys(labels))


class AgentService:
    def __init__(self, store: Store, hub: AgentHub):
        self._store = store
        self.hub = hub

    # ---- enrollment tokens ----------------------------------------------------------------------

    async def create_token(
        self, *, labels: Sequence[str], ttl_s: float, created_by: str | None
    ) -> tuple[dict[str, Any], str]:
        """A one-time token; returns it (without secret) and the secret, which is never stored."""
        labels = check_labels(labels)
        if not 1 <= ttl_s <= MAX_TOKEN_TTL_S:
            raise InvalidAgentInput(f"ttl_s must be between 1 and {MAX_TOKEN_TTL_S}")
        secret = "rse_" + secrets.token_urlsafe(32)
        token = await self._store.write(
            partial(sql.create_token, token_hash=token_hash(secret), labels=labels, created_by=created_by,
                    ts=now_ts(), expires_at=ts_after(ttl_s))
        )
        return token, secret

    async def list_tokens(self) -> list[dict[str, Any]]:
        return await self._store.read(sql.list_tokens)

    async def delete_token(self, token_id: int) -> None:
        if not await self._store.write(sql.delete_token, token_id):
            raise AgentNotFound(f"no enrollment token {token_id}")

    # ---- agents -----------------------------------------------------------------------------------

    async def enroll(self, *, token: str, name: str, labels: Sequence[str]) -> tuple[dict[str, Any], str]:
        """Use up `token` and create the agent; returns it and its secret (stored only as a hash).
        Checks, in order: the token (EnrollmentRefused), then the name (AgentNameTaken)."""
        labels = check_labels(labels)
        secret = "rsa_" + secrets.token_urlsafe(32)
        try:
            agent = await self._store.write(
                sql.enroll, token_hash(token), name, labels, token_hash(secret), now_ts()
            )
        except sql.NameTaken as exc:
            raise AgentNameTaken(str(exc)) from None
        if agent is None:
            raise EnrollmentRefused("unknown, used or expired enrollment token")
        return self._with_status(agent), secret

    async def list_agents(self) -> list[dict[str, Any]]:
        return [self._with_status(agent) for agent in await self._store.read(sql.list_agents)]

    async def revoke(self, agent_id: int) -> None:
        """Delete the agent: its secret is refused from now on, its connection closes (4401), its runs end
        interrupted ("agent revoked")."""
        agent = await self._store.write(sql.delete_agent, agent_id)
        if agent is None:
            raise AgentNotFound(f"no agent {agent_id}")
        self.hub.revoke(agent["name"])

    def _with_status(self, agent: dict[str, Any]) -> dict[str, Any]:
        connected, running, last_seen = self.hub.status(agent["name"])
        return {
            "id": agent["id"], "name": agent["name"], "labels": agent["labels"], "connected": connected,
            "last_seen_at": last_seen or agent["last_seen_at"], "running": running,
            "created_at": agent["created_at"],
        }
