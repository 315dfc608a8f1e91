"""A WebSocket client over a plain trio socket and wsproto, for what trio-websocket cannot do: a small
receive buffer set before connecting (so the server's socket fills), and offering permessage-deflate."""

from __future__ import annotations

import collections
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate


class RawClient:
    def __init__(self, stream: trio.SocketStream, connection: WSConnection):
        self._stream = stream
        self._connection = connection
        self._events: collections.deque[Event] = collections.deque()
        self._eof = False
        self._send_lock = trio.Lock()
        self.extensions: list[str] = []
        self.close_code: int | None = None

    async def _next_event(self) -> Event | None:
        while not self._events:
            if self._eof:
                return None
            data = await self._stream.receive_some(65536)
            self._eof = not data
            self._connection.receive_data(data or None)
            self._events.extend(self._connection.events())
        return self._events.popleft()

    async def handshake(self) -> None:
        event = await self._next_event()
        if isinstance(event, RejectConnection):
            raise AssertionError(f"handshake refused: {event.status_code}")
        assert isinstance(event, AcceptConnection), event
        self.extensions = [extension.name for extension in event.extensions]

    async def next_event(self) -> Event | None:
        """The next wsproto event from the server, or None at the end of the stream."""
        return await self._next_event()

    async def send(self, event: Event) -> None:
        """Send a wsproto event (a Ping, a Pong, a CloseConnection) to the server; safe from several tasks.
        Once either side has started closing, only the close's answer may still be sent: others are
        dropped."""
        async with self._send_lock:
            if self._connection.state is ConnectionState.OPEN or isinstance(event, CloseConnection):
                await self._stream.send_all(self._connection.send(event))

    async def next_message(self) -> str | None:
        """The next text message, or None once the server has closed (then `close_code` is set)."""
        parts: list[str] = []
        while (event := await self._next_event()) is not None:
            if isinstance(event, TextMessage):
                parts.append(event.data)
                if event.message_finished:
                    return "".join(parts)
            elif isinstance(event, Ping):
                await self._stream.send_all(self._connection.send(event.response()))
            elif isinstance(event, CloseConnection):
                self.close_code = event.code
                await self._stream.send_all(self._connection.send(event.response()))
                return None
        return None

    async def frames(self) -> list[dict]:
        """Every remaining message, decoded, until the server closes."""
        frames = []
        while (text := await self.next_message()) is not None:
            frames.append(json.loads(text))
        return frames


@asynccontextmanager
async def raw_websocket(
    server_url: str, path: str, *, cookie: str, receive_buffer: int | None = None, deflate: bool = False
) -> AsyncIterator[RawClient]:
    url = urlsplit(server_url)
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)  # before connect: the window
    await sock.connect((url.hostname, url.port))
    stream = trio.SocketStream(sock)
    async with stream:
        connection = WSConnection(ConnectionType.CLIENT)
        request = Request(
            host=url.netloc,
            target=path,
            extra_headers=[(b"cookie", f"runsvc_session={cookie}".encode())],
            extensions=[PerMessageDeflate()] if deflate else [],
        )
        await stream.send_all(connection.send(request))
        client = RawClient(stream, connection)
        await client.handshake()
        yield client
