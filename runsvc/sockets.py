"""Open WebSockets, so that shutdown can close each of them with 1001."""

from __future__ import annotations

import trio


class SocketRegistry:
    """Open WebSockets; `close_all()` tells each to close with 1001 (server shutting down)."""

    def __init__(self) -> None:
        self._shutdown = trio.Event()

    def close_all(self) -> None:
        self._shutdown.set()

    async def wait_shutdown(self) -> None:
        await self._shutdown.wait()
