"""Revocations: "what authenticated this user may have changed", published to long-lived holders.

A WebSocket is authenticated once, at its start; the session (or token) behind it can end later:
logout, a password change, disabling the user, a role change. The accounts service publishes the
user's id here right after such a change commits; each open socket of that user re-checks its own
credentials and closes if they no longer hold (SPEC §14: within 2 s, here at once). One small place,
so any other credential (API tokens) can publish the same way.

No event is missed between a check and the wait that follows it: a holder notes `generation` before
it authenticates, and `wait(user_id, since)` returns at once if the user had a revocation after that.
"""

from __future__ import annotations

import attrs
import trio


@attrs.define(eq=False)
class Revocations:
    generation: int = 0  # counts every publish
    waits: int = attrs.field(default=0, init=False)  # times a holder began waiting (tests await a holder's return)
    _last: dict[int, int] = attrs.field(factory=dict, init=False)  # user id -> generation of its last
    _waiting: dict[int, trio.Event] = attrs.field(factory=dict, init=False)

    def publish(self, user_id: int) -> None:
        """Call right after a change to the user's credentials or role has committed."""
        self.generation += 1
        self._last[user_id] = self.generation
        event = self._waiting.pop(user_id, None)
        if event is not None:
            event.set()

    async def wait(self, user_id: int, since: int) -> int:
        """Return once the user has had a revocation after generation `since`; returns the generation
        to pass as `since` next time."""
        while self._last.get(user_id, 0) <= since:
            event = self._waiting.setdefault(user_id, trio.Event())
            self.waits += 1
            await event.wait()
        return self.generation
