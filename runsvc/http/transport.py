"""Our own WebSocket transport for the run-event socket: wsproto over the connection's trio stream.

Why (issue 19): a server's frames are not masked (RFC 6455 §5.1), so without an extension a text
message is the same bytes on every socket. Through Quart and Hypercorn each watcher's frame was framed
again and went through four layers and a lock (~170 µs a frame); here a run's batch is framed once
(`wire_frames`, cached on the batch) and written with one `send_all` per watcher.

That is only safe because every write on the connection is ours, and each holds the connection's write
gate (a semaphore of one) for the whole of one frame, so nothing can land inside a frame however
partially the socket takes it: data frames, pings, pongs and the close (`_write`, `_write_event`), and
the bus's direct writes (`write_now`, a direct sink of events/bus.py): a batch published while the
watcher's sender waits is written at once, without waking a task, if the gate is free; if the socket
takes only part of it, the gate stays taken until this connection's flusher task has written the rest.
(Issue 19's defect was the opposite: the rest was left while Hypercorn's lock was free.) No extension is
offered (a client asking for permessage-deflate gets uncompressed frames), so the shared bytes are right
for every socket.

Keepalive is Hypercorn's rule, on our side: a ping every `ping_interval_s`, and a connection on which
nothing at all arrives for `ping_interval_s + ping_timeout_s` is dropped. A peer that pings while not
reading is owed at most one pong (RFC 6455 §5.5.3 allows answering the latest ping only), written by
whoever holds the lock next, so the reader never waits behind a write to such a peer and still sees its
close.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Awaitable, Callable

import trio
from wsproto import WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    TextMessage,
)

from ..log import get_logger

log = get_logger(__name__)

RECEIVE_BYTES = 65536  # per read of the socket
MAX_CLIENT_MESSAGE = 4096  # characters: clients send only `{"type": "ping"}`; a longer one is refused whole
CLOSE_ANSWER_WAIT_S = 5.0  # longest the reader waits to answer a client's close (a write may be in progress)


def text_frame(payload: bytes) -> bytes:
    """One whole, unmasked text frame (FIN set) holding `payload` (UTF-8), as a server sends it."""
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + payload


def wire_frames(messages: list[str]) -> bytes:
    """The bytes on the wire of these text messages, one whole frame each, back to back."""
    return b"".join(text_frame(message.encode()) for message in messages)


class OwnWebSocket:
    """One accepted run-event WebSocket on a connection this process serves itself. `serve(handler)`
    runs the handler (which calls `accept`, then `send`/`receive`/`close`) while reading the peer and
    pinging it; the handler is cancelled when the peer closes, goes silent or the connection breaks,
    as Quart cancels a request task on disconnect."""

    def __init__(
        self, stream: trio.SocketStream, connection: WSConnection, *, ping_interval_s: float,
        ping_timeout_s: float, count_direct_write: Callable[..., None] = lambda *, partial: None,
    ):
        self._stream = stream
        self._count_direct_write = count_direct_write  # SocketRegistry.count_direct_write
        self._connection = connection
        self._ping_interval_s = ping_interval_s
        self._silence_s = ping_interval_s + ping_timeout_s
        # Taken for each whole write; a semaphore, not a Lock, because a direct write that the socket
        # took only in part is finished by the flusher task, not by the task that started it.
        self._gate = trio.Semaphore(1, max_value=1)
        self._rest: memoryview | None = None  # the rest of a direct write, owed by the flusher (gate held)
        self._rest_owed = trio.Event()
        self._ended = False
        self._owed_pong: bytes | None = None
        self._accepted = trio.Event()
        self._messages_in, self._messages = trio.open_memory_channel[str | bytes](16)

    async def serve(self, handler: Callable[[], Awaitable[None]]) -> None:
        """Run `handler` until it returns or the connection ends; then close the TCP connection."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read, nursery.cancel_scope)
                nursery.start_soon(self._ping)
                nursery.start_soon(self._flush, nursery.cancel_scope)
                await handler()
                nursery.cancel_scope.cancel()
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the peer went away in the middle of a write (the handshake's answer, a ping)
        finally:
            self._ended = True
            # A sender still blocked writing to this connection (a peer that stopped reading) fails now,
            # and one waiting for the gate a cut-off flush held gets it and fails too.
            await trio.aclose_forcefully(self._stream)
            if self._rest is not None:
                self._rest = None
                self._gate.release()

    # ---- what the WebSocket plumbing calls (http/websockets.py, Peer) ----------------------------------

    async def accept(self) -> None:
        """Answer the handshake (101, no subprotocol, no extension)."""
        await self._stream.send_all(self._connection.send(AcceptConnection()))
        self._accepted.set()

    async def send(self, frame: str | bytes) -> None:
        """Write one message: `bytes` are whole frames already (`wire_frames`), shared with other sockets;
        a `str` is framed here. Nothing is written once the close has been sent or received."""
        data = frame if isinstance(frame, bytes) else text_frame(frame.encode())
        await self._write(data, data_frame=True)

    async def close(self, code: int, reason: str) -> None:
        """Send the close frame (after every frame written before it); the peer's answer ends `serve`."""
        await self._write_event(CloseConnection(code, reason))

    async def receive(self) -> str | bytes:
        """The client's next message (a text longer than MAX_CLIENT_MESSAGE is cut there). Once the
        connection has ended this waits until `serve` cancels the handler, as it does then."""
        try:
            return await self._messages.receive()
        except trio.EndOfChannel:
            pass
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    def write_now(self, data: bytes) -> bool:
        """Write whole frames (`wire_frames`) without waiting, if they can go now: True when they went, or
        started to and the flusher owes the rest (the gate stays taken until then); False when nothing
        was written — the gate is taken (another write is in progress), the socket's buffer is full, or
        the connection is closing. Synchronous: no other task runs between the checks and the write."""
        if self._gate.value == 0 or self._ended or self._connection.state is not ConnectionState.OPEN:
            return False
        try:
            # Our own connection's descriptor (no trio task is writing to it: the gate is free).
            written = os.write(self._stream.socket.fileno(), data)
        except OSError:  # full (BlockingIOError), or the peer is gone: the sender's path finds out
            return False
        partial = written < len(data)
        if partial:
            self._gate.acquire_nowait()
            self._rest = memoryview(data)[written:]
            self._rest_owed.set()
        self._count_direct_write(partial=partial)
        return True

    # ---- writing -----------------------------------------------------------------------------------

    async def _take_gate(self) -> None:
        if self._gate.value:
            self._gate.acquire_nowait()  # no extra pass through the scheduler in the usual case
        else:
            await self._gate.acquire()

    async def _write(self, data: bytes, *, data_frame: bool = False) -> None:
        """Write `data` whole under the gate, then the pong owed meanwhile, if any. A data frame is
        dropped once the connection is closing (only the close's answer may follow a close)."""
        await self._take_gate()
        try:
            if data_frame and self._connection.state is not ConnectionState.OPEN:
                return
            await self._stream.send_all(data)
            await self._pay_pong()
        finally:
            self._gate.release()

    async def _pay_pong(self) -> None:
        while self._owed_pong is not None and self._connection.state is ConnectionState.OPEN:
            payload, self._owed_pong = self._owed_pong, None
            await self._stream.send_all(self._connection.send(Pong(payload)))

    async def _write_event(self, event: CloseConnection | Ping) -> None:
        """A control frame from wsproto. wsproto's state changes when the frame is made, inside the gate,
        so a data frame never follows a close."""
        await self._take_gate()
        try:
            state = self._connection.state
            if state is ConnectionState.OPEN or (
                isinstance(event, CloseConnection) and state is ConnectionState.REMOTE_CLOSING
            ):
                await self._stream.send_all(self._connection.send(event))
        finally:
            self._gate.release()

    async def _flush(self, scope: trio.CancelScope) -> None:
        """Write the rest of each direct write the socket took only in part, then give the gate back."""
        try:
            while True:
                await self._rest_owed.wait()
                self._rest_owed = trio.Event()
                rest = self._rest
                if rest is None:
                    continue
                try:
                    await self._stream.send_all(rest)
                    await self._pay_pong()
                finally:
                    self._rest = None
                    self._gate.release()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            scope.cancel()  # the peer went away

    async def _ping(self) -> None:
        await self._accepted.wait()
        while True:
            await trio.sleep(self._ping_interval_s)
            if self._connection.state is not ConnectionState.OPEN:
                return
            if self._gate.value:  # a write in progress says as much as a ping would
                await self._write_event(Ping(b"runsvc"))

    # ---- reading -----------------------------------------------------------------------------------

    async def _read(self, scope: trio.CancelScope) -> None:
        """Read and answer the peer until it closes, goes silent or away; then cancel `scope` (the handler)."""
        parts: list[str] = []
        size = 0
        try:
            async with self._messages_in:
                await self._accepted.wait()
                while True:  # every return cancels the handler (finally) before the channel closes
                    for event in self._connection.events():  # the handshake's trailing bytes first
                        if isinstance(event, TextMessage):
                            if size <= MAX_CLIENT_MESSAGE:
                                parts.append(event.data)
                                size += len(event.data)
                            if event.message_finished:
                                await self._messages_in.send("".join(parts)[: MAX_CLIENT_MESSAGE + 1])
                                parts, size = [], 0
                        elif isinstance(event, BytesMessage):
                            if event.message_finished:
                                await self._messages_in.send(b"")
                        elif isinstance(event, Ping):
                            await self._pong(event.payload)
                        elif isinstance(event, CloseConnection):
                            await self._closed_by_peer(event)
                            return
                        elif not isinstance(event, Pong):
                            return  # nothing else can come after the handshake
                    with trio.move_on_after(self._silence_s):
                        data = await self._stream.receive_some(RECEIVE_BYTES)
                        if not data:
                            return  # the peer closed the TCP connection
                        self._connection.receive_data(data)
                        continue
                    log.debug("websocket peer silent; dropping it", silence_s=self._silence_s)
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the peer went away
        finally:
            scope.cancel()

    async def _pong(self, payload: bytes) -> None:
        """Answer a ping now if nobody is writing, else leave it owed to whoever writes next."""
        self._owed_pong = payload
        if self._gate.value:
            await self._write(b"")  # nothing itself, then the owed pong

    async def _closed_by_peer(self, event: CloseConnection) -> None:
        """The peer's close (or wsproto's verdict on a malformed frame, the connection still OPEN):
        answer it, after any write in progress, then the connection ends."""
        with trio.move_on_after(CLOSE_ANSWER_WAIT_S):
            state = self._connection.state
            if state is ConnectionState.REMOTE_CLOSING:
                await self._write_event(event.response())
            elif state is ConnectionState.OPEN:  # a protocol error: close with wsproto's code (1002, 1007…)
                await self._write_event(CloseConnection(event.code, event.reason or ""))
