"""Open WebSockets: the shutdown signal that closes each with 1001, and the nursery of their senders.

Hypercorn writes to a socket shielded from cancellation, so a task sending to a peer that has stopped
reading cannot be cancelled until Hypercorn closes that socket — and Hypercorn only closes it once the
request's own task has finished. So no request task ever writes: each WebSocket gets a sender task in
the nursery below, which outlives the requests, and the request only hands it frames over a bounded
channel (a wait that can be cancelled). A peer that stops reading then blocks its sender alone; the
request task still ends on disconnect, keepalive timeout or shutdown, Hypercorn closes the socket, and
the blocked write fails and frees the sender. Run-event sockets on our own transport (transport.py) keep
this shape: their connection is closed once the request's handler ends, which fails a blocked write.

The registry also caps open WebSockets, in all and per user (issue 20 #5): each socket holds a file
descriptor for as long as it is open, and a process out of descriptors cannot accept a login, open the
database or start a run. A socket over a cap is accepted and closed with 1013 (try again later), like
the other refusals.
"""

from __future__ import annotations

import resource
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio


@attrs.frozen
class SocketStatistics:
    open_sockets: int  # WebSockets holding a slot of the overall cap
    users_with_sockets: int  # users holding at least one per-user slot
    refused: int  # sockets closed with 1013 because a cap was reached
    direct_writes: int  # frames the bus wrote straight into a socket of our own transport (transport.py)
    partial_direct_writes: int  # of which the socket took only part at once (its flusher wrote the rest)


class TooManySockets(Exception):
    """A WebSocket cap is reached; the message is the close reason (a lowercase statement of the rule)."""


def open_file_limit() -> int:
    """The process's soft limit on open file descriptors (RLIMIT_NOFILE); a large number if unlimited."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 2**31 - 1 if soft == resource.RLIM_INFINITY else soft


def websocket_cap(max_websockets: int, fd_reserve: int, fd_limit: int) -> int:
    """The overall cap: `max_websockets` (0: no number of its own), never more than the open-file limit
    minus the descriptors kept for runs, the database and plain HTTP requests (at least 1)."""
    ceiling = max(1, fd_limit - fd_reserve)
    return ceiling if max_websockets == 0 else min(max_websockets, ceiling)


class SocketRegistry:
    def __init__(self, *, max_total: int = 2**31 - 1, max_per_user: int = 2**31 - 1) -> None:
        self._shutdown = trio.Event()
        self._senders: trio.Nursery | None = None
        self.max_total = max_total
        self.max_per_user = max_per_user
        self._open = 0
        self._per_user: dict[int, int] = {}
        self._refused = 0
        self._direct_writes = 0
        self._partial_direct_writes = 0

    def statistics(self) -> SocketStatistics:
        return SocketStatistics(
            self._open, len(self._per_user), self._refused, self._direct_writes, self._partial_direct_writes
        )

    def count_direct_write(self, *, partial: bool) -> None:
        self._direct_writes += 1
        self._partial_direct_writes += partial

    def acquire(self) -> None:
        """Take one of the `max_total` slots (give it back with `release`); TooManySockets when none is
        free."""
        if self._open >= self.max_total:
            self._refused += 1
            raise TooManySockets(f"too many open websockets (at most {self.max_total}); try again later")
        self._open += 1

    def release(self) -> None:
        self._open -= 1

    def acquire_user(self, user_id: int) -> None:
        """Take one of user `user_id`'s `max_per_user` slots (give it back with `release_user`);
        TooManySockets when the user holds them all."""
        held = self._per_user.get(user_id, 0)
        if held >= self.max_per_user:
            self._refused += 1
            raise TooManySockets(
                f"too many open websockets for this user (at most {self.max_per_user}); close one first"
            )
        self._per_user[user_id] = held + 1

    def release_user(self, user_id: int) -> None:
        left = self._per_user[user_id] - 1
        if left:
            self._per_user[user_id] = left
        else:
            del self._per_user[user_id]

    def close_all(self) -> None:
        """Tell every open WebSocket to close with 1001 (server shutting down)."""
        self._shutdown.set()

    async def wait_shutdown(self) -> None:
        await self._shutdown.wait()

    async def run_senders(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the senders' nursery; the server cancels it after Hypercorn has stopped."""
        async with trio.open_nursery() as nursery:
            self._senders = nursery
            task_status.started()
            await trio.sleep_forever()

    def start_sender(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        if self._senders is None:
            raise RuntimeError("run_senders() is not running")
        self._senders.start_soon(fn, *args)
