"""Open WebSockets: the shutdown signal that closes each with 1001, and the nursery of their senders.

Hypercorn writes to a socket shielded from cancellation, so a task sending to a peer that has stopped
reading cannot be cancelled until Hypercorn closes that socket — and Hypercorn only closes it once the
request's own task has finished. So no request task ever writes: each WebSocket gets a sender task in
the nursery below, which outlives the requests, and the request only hands it frames over a bounded
channel (a wait that can be cancelled). A peer that stops reading then blocks its sender alone; the
request task still ends on disconnect, keepalive timeout or shutdown, Hypercorn closes the socket, and
the blocked write fails and frees the sender.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio


class SocketRegistry:
    def __init__(self) -> None:
        self._shutdown = trio.Event()
        self._senders: trio.Nursery | None = None

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
