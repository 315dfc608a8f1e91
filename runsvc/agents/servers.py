"""Which server the agent dials next, and how long it waits first (SPEC §11, §16 "Replicas").

An agent may be given several URLs: replicas of one service on one database, any of which can hold its
connection and its runs. It dials the first; whenever a connection is refused or lost it moves on to the
next URL in the list (round robin, wrapping around), so a dead replica costs one failed attempt, not the
agent's runs. Every attempt waits its backoff first, whichever URL it goes to: a list of dead servers is
dialled no faster than one dead server (jittered exponential backoff from BACKOFF_FIRST_S, doubling, at
most `cap_s` apart), and after a connection that was welcomed the backoff starts again from the bottom.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0  # reconnect attempts are at most this far apart


class ServerRotation:
    """The agent's servers in order, the one to dial now and the wait before the next attempt.
    `jitter` returns a factor in [0.5, 1] (random; tests pass a fixed one)."""

    def __init__(self, servers: Sequence[str], *, jitter: Callable[[], float] | None = None):
        if not servers:
            raise ValueError("an agent needs at least one server")
        self._servers = tuple(servers)
        self._index = 0
        self._backoff = BACKOFF_FIRST_S
        self._jitter = jitter or (lambda: random.uniform(0.5, 1.0))

    @property
    def servers(self) -> tuple[str, ...]:
        return self._servers

    @property
    def current(self) -> str:
        """The server to dial now."""
        return self._servers[self._index]

    def welcomed(self) -> None:
        """The current server accepted the agent: once that connection ends, the next attempt waits only
        the first backoff."""
        self._backoff = BACKOFF_FIRST_S

    def next_attempt(self, cap_s: float) -> float:
        """The current connection attempt failed or its connection was lost: move on to the next server
        and return how long to wait before dialling it (the backoff so far, jittered; it then doubles, up
        to `cap_s` and BACKOFF_MAX_S)."""
        self._index = (self._index + 1) % len(self._servers)
        delay = self._backoff * self._jitter()
        self._backoff = min(self._backoff * 2, BACKOFF_MAX_S, cap_s)
        return delay
