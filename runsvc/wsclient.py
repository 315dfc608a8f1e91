"""The one WebSocket client of runsvc (the CLI's `follow`, the agent, the tests): trio-websocket over a
TCP stream this module opens, and therefore closes, itself.

trio-websocket's `open_websocket_url` leaves its TCP stream open when the server closes first (its
reader stops at EOF without closing it), and offers no public way to close it: every such connection
leaked a socket. `wrap_client_stream` (public API) takes a stream the caller owns, so here the stream is
opened first and closed last, whoever ended the WebSocket.

The errors are trio-websocket's, as `open_websocket_url` raises them: `HandshakeError` (with its
`ConnectionTimeout`, `DisconnectionTimeout` and `ConnectionRejected`) for a failed opening or closing,
`ConnectionClosed` from `get_message` / `send_message`.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import trio
import trio_websocket

CONNECT_TIMEOUT_S = 10.0  # TCP connect plus the opening handshake
DISCONNECT_TIMEOUT_S = 5.0  # the closing handshake
MESSAGE_QUEUE_SIZE = 1  # trio-websocket's default: messages read ahead of get_message()

Headers = Sequence[tuple[bytes | str, bytes | str]]


@asynccontextmanager
async def open_websocket(
    url: str,
    *,
    extra_headers: Headers = (),
    max_message_size: int,
    message_queue_size: int = MESSAGE_QUEUE_SIZE,
    connect_timeout: float = CONNECT_TIMEOUT_S,
    disconnect_timeout: float = DISCONNECT_TIMEOUT_S,
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """A client connection to `url` (ws:// or wss://) for the block; its TCP stream is closed at the end.

    `max_message_size` (no default: each caller knows what it expects) is the largest message received;
    a larger one closes the connection with 1009."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"not a ws:// or wss:// URL: {url!r}")
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    host_header = parts.hostname if parts.port is None else f"{parts.hostname}:{port}"
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = [(_bytes(name), _bytes(value)) for name, value in extra_headers]

    with trio.move_on_after(connect_timeout) as connecting:
        try:
            stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
            if secure:
                stream = await trio.open_ssl_over_tcp_stream(
                    parts.hostname, port, ssl_context=ssl.create_default_context(), https_compatible=True)
            else:
                stream = await trio.open_tcp_stream(parts.hostname, port)
        except OSError as exc:
            raise trio_websocket.HandshakeError(str(exc)) from exc
    if connecting.cancelled_caught:
        raise trio_websocket.ConnectionTimeout
    handshake_deadline = connecting.deadline
    async with stream:  # ours: closed last, whichever side ended the WebSocket
        try:
            async with trio.open_nursery() as nursery:  # trio-websocket's reader task lives here
                with trio.move_on_at(handshake_deadline) as handshake:
                    ws = await trio_websocket.wrap_client_stream(
                        nursery, stream, host_header, resource, extra_headers=headers,
                        message_queue_size=message_queue_size, max_message_size=max_message_size,
                    )
                if handshake.cancelled_caught:
                    nursery.cancel_scope.cancel()
                    raise trio_websocket.ConnectionTimeout
                try:
                    yield ws
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(disconnect_timeout) as closing:
                        await ws.aclose()
                    await stream.aclose()  # ends the reader task whatever state the WebSocket is in
                    if closing.cancelled_caught:
                        raise trio_websocket.DisconnectionTimeout
        except BaseExceptionGroup as group:
            raise _single(group) from None


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode("latin-1")


def _single(group: BaseExceptionGroup) -> BaseException | BaseExceptionGroup:
    """What the nursery raised, as itself when it is one thing (the caller's error, or the reader
    task's ConnectionRejected): callers catch `ConnectionClosed` and `HandshakeError`, not groups."""
    leaves = _leaves(group)
    real = [exc for exc in leaves if not isinstance(exc, trio.Cancelled)]
    if len(real) == 1:
        return real[0]
    if not real and leaves:
        return leaves[0]
    return group


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]
