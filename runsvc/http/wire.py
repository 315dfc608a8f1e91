"""Writing pre-framed WebSocket messages straight into Hypercorn's socket (issue 13).

A server's frames are not masked (RFC 6455 §5.1), so without an extension the bytes of a text message are
the same on every socket: a run's batch is framed once and the same bytes go to each watcher with one
non-blocking `send`, instead of through Quart, Hypercorn's per-message path and wsproto once per socket.

This reaches into Hypercorn's objects (its TCP server's stream and send lock, the WebSocket stream and
its wsproto connection), found from the ASGI `send` callable. `RawSocket.find` returns None — and the
socket keeps the ordinary path — unless every one of them is where this Hypercorn version keeps it, the
connection is plain TCP (not TLS) and no extension (permessage-deflate) was negotiated; the tests fail if
the lookup stops finding them. Bytes are written only while Hypercorn's send lock is free, so they never
land inside a frame Hypercorn is writing (a pong, a close); wsproto keeps no state about sent messages
that are whole and unmasked, so it is not told.
"""

from __future__ import annotations

import os
import struct
from functools import partial
from typing import Any

import trio
from hypercorn.events import RawData
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.ws_stream import WSStream
from hypercorn.trio.tcp_server import TCPServer
from wsproto.connection import ConnectionState


def text_frames(messages: list[str]) -> bytes:
    """The wire bytes of these text messages, each one whole unmasked frame."""
    parts: list[bytes] = []
    for message in messages:
        payload = message.encode()
        size = len(payload)
        if size < 126:
            parts.append(struct.pack("!BB", 0x81, size))
        elif size < 1 << 16:
            parts.append(struct.pack("!BBH", 0x81, 126, size))
        else:
            parts.append(struct.pack("!BBQ", 0x81, 127, size))
        parts.append(payload)
    return b"".join(parts)


class RawSocket:
    """The TCP socket under one WebSocket, written past Hypercorn while it is not writing itself."""

    def __init__(self, tcp: TCPServer, ws_stream: WSStream, stream: trio.SocketStream):
        self._tcp = tcp
        self._ws_stream = ws_stream
        self._lock: trio.Lock = tcp.send_lock
        self._socket = stream.socket

    @classmethod
    def find(cls, asgi_send: Any) -> RawSocket | None:
        """The raw socket behind an accepted WebSocket's ASGI `send`, or None (see the module docstring)."""
        ws_stream = getattr(asgi_send, "__self__", None)
        if not isinstance(ws_stream, WSStream) or ws_stream.state.name != "CONNECTED":
            return None
        connection = getattr(ws_stream, "connection", None)
        proto = getattr(connection, "_proto", None)
        if proto is None or getattr(proto, "extensions", None) != []:
            return None  # an extension (permessage-deflate) makes every socket's bytes its own
        h11 = getattr(ws_stream.send, "__self__", None)
        if not isinstance(h11, H11Protocol):
            return None  # HTTP/2 WebSockets share a connection; their frames go inside HTTP/2 frames
        tcp = getattr(h11.send, "__self__", None)
        if not isinstance(tcp, TCPServer) or not isinstance(getattr(tcp, "send_lock", None), trio.Lock):
            return None
        stream = getattr(tcp, "stream", None)
        if type(stream) is not trio.SocketStream:
            return None  # TLS: the bytes must go through the SSL stream
        return cls(tcp, ws_stream, stream)

    def write_now(self, data: bytes) -> int | None:
        """Write what the socket takes without waiting: the number of bytes written (0 when its buffer is
        full), or None when nothing may be written now — Hypercorn is writing, or the WebSocket is closing
        or closed. Synchronous: no other task runs between the checks and the write."""
        ws_stream = self._ws_stream
        if self._lock.locked() or ws_stream.closed or ws_stream.connection.state is not ConnectionState.OPEN:
            return None
        fd = self._socket.fileno()
        if fd < 0:
            return None
        try:
            return os.write(fd, data)
        except BlockingIOError:
            return 0
        except OSError:
            return None  # the peer is gone; the ordinary path finds out and closes

    async def write_rest(self, data: bytes) -> None:
        """Write the rest of a frame that `write_now` started, waiting as long as it takes, under
        Hypercorn's send lock (Hypercorn's own write path: it handles a peer that went away)."""
        await self._tcp.protocol_send(RawData(data=data))


def asgi_send_of(ws: Any) -> Any:
    """The ASGI `send` callable behind a Quart websocket object, or None if Quart lays it out otherwise."""
    wrapped = getattr(ws, "_send", None)  # quart: partial(ASGIWebsocketConnection.send_data, send)
    send = wrapped.args[0] if isinstance(wrapped, partial) and len(wrapped.args) == 1 else None
    return send if callable(send) else None
