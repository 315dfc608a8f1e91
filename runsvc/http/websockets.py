"""What every WebSocket endpoint shares: close codes, the Origin and session checks, and the registry
that closes every open socket with 1001 when the server shuts down.

Refusals are close codes sent after the handshake, because a browser cannot read the HTTP status of a
refused upgrade.

A socket is served either by Quart (through Hypercorn) or, for run-event sockets, by our own transport
(http/transport.py, http/front.py). The code here is the same for both: it reads the handshake with
`handshake()` and talks to the socket through a `Peer`; the front sets both with `own_socket` for its
sockets, and Quart's `websocket` is both otherwise.
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from contextlib import aclosing, contextmanager
from functools import partial
from typing import Any, Protocol

import attrs
import trio
from quart import copy_current_websocket_context, websocket
from werkzeug.sansio.request import Request as Handshake

from ..events import DirectSink
from ..log import get_logger
from ..model import EventBatch
from ..store import StoreClosedError, StoreUnavailable
from .access import Principal, authenticate
from .sockets import SocketRegistry
from .types import services

log = get_logger(__name__)

NORMAL = 1000
GOING_AWAY = 1001  # server shutting down
UNSUPPORTED_DATA = 1003  # the client sent a binary frame
POLICY_VIOLATION = 1008  # the client sent a text frame that is not a message of the protocol
TRY_AGAIN_LATER = 1013  # runs feed: the client was too slow
BAD_REQUEST = 4400
UNAUTHENTICATED = 4401
FORBIDDEN = 4403
NOT_FOUND = 4404
CLOSE_WAIT_S = 5.0  # longest a request waits for its close to reach the peer and be answered


class Refused(Exception):
    """Close the socket with `code` and `reason` (a lowercase statement of the broken rule)."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Peer(Protocol):
    """How the plumbing below talks to a socket: Quart's `websocket`, or our own transport's socket."""

    async def accept(self) -> None: ...
    async def receive(self) -> str | bytes: ...
    async def send(self, frame: Any) -> None: ...  # a str; our transport also takes framed bytes
    async def close(self, code: int, reason: str) -> None: ...


@attrs.frozen
class _OwnSocket:
    handshake: Handshake
    peer: Peer
    write_now: Callable[[bytes], bool]  # see transport.OwnWebSocket.write_now


_own_socket: contextvars.ContextVar[_OwnSocket] = contextvars.ContextVar("runsvc_own_socket")


@contextmanager
def own_socket(handshake: Handshake, peer: Peer, write_now: Callable[[bytes], bool]) -> Iterator[None]:
    """Inside: the socket being served is `peer` of our own transport, its handshake `handshake`;
    `write_now` writes framed bytes at once if it can (a direct sink's write)."""
    token = _own_socket.set(_OwnSocket(handshake, peer, write_now))
    try:
        yield
    finally:
        _own_socket.reset(token)


def handshake() -> Handshake:
    """The current socket's handshake request: its headers, cookies, query arguments and scheme."""
    own = _own_socket.get(None)
    return websocket if own is None else own.handshake


def expected_origin() -> str:
    configured = services().settings.public_origin
    if configured:
        return configured.rstrip("/")
    request = handshake()
    scheme = "https" if request.scheme in ("wss", "https") else "http"
    return f"{scheme}://{request.headers.get('Host', '')}"


@attrs.define(eq=False)
class _SocketAuth:
    """What authenticated this socket, for the revocation watcher (set by check_origin_and_session)."""

    checked: trio.Event = attrs.Factory(trio.Event)
    user_id: int = 0
    generation: int = 0  # Revocations.generation before the check


_socket_auth: contextvars.ContextVar[_SocketAuth] = contextvars.ContextVar("runsvc_socket_auth")


async def check_origin_and_session() -> Principal:
    """Origin first (a browser's must be our own), then the caller (a bearer token or the session
    cookie, decided by access.authenticate like every HTTP route). Raises Refused.

    Inside serve_socket, the socket is then closed as soon as that session or token ends or its user's
    role may no longer watch (see _close_on_revocation)."""
    origin = handshake().headers.get("Origin")
    if origin is not None and origin.rstrip("/") != expected_origin():
        raise Refused(FORBIDDEN, "origin not allowed")
    generation = services().auth.revocations.generation
    principal = await _check_caller()
    record = _socket_auth.get(None)
    if record is not None:
        record.user_id, record.generation = principal.user.id, generation
        record.checked.set()
    return principal


async def _check_caller() -> Principal:
    request = handshake()
    principal = await authenticate(request.headers, request.cookies)
    if principal is None:
        raise Refused(UNAUTHENTICATED, "authentication required")
    if not principal.user.has_role("viewer"):
        raise Refused(FORBIDDEN, "role may not watch runs")
    return principal


async def _close_on_revocation(record: _SocketAuth) -> None:
    """Each time the socket's user has a revocation (logout, password change, disabled, role change),
    re-check this socket's own session: Refused(4401) once it has ended, Refused(4403) when the role
    may no longer watch. Runs until the socket closes."""
    await record.checked.wait()
    revocations = services().auth.revocations
    since = record.generation
    while True:
        since = await revocations.wait(record.user_id, since)
        try:
            await _check_caller()
        except Refused as refused:
            if refused.code == UNAUTHENTICATED:
                raise Refused(UNAUTHENTICATED, "session ended") from None
            raise


async def _reject_client_messages(peer: Peer) -> None:
    """The protocols are server-to-client. A `{"type": "ping"}` text frame is tolerated (some clients
    keep connections alive that way); anything else closes the socket."""
    while True:
        message = await peer.receive()
        if isinstance(message, bytes):
            raise Refused(UNSUPPORTED_DATA, "binary frames are not supported")
        try:
            is_ping = json.loads(message) == {"type": "ping"}
        except ValueError:
            is_ping = False
        if not is_ping:
            raise Refused(POLICY_VIOLATION, "clients send no messages on this socket")


# A stream hands its frames to the socket's sender task (see sockets.py) and waits once this many are
# queued; a live stream that waits lets its bus subscription lag and later resyncs from the database.
SEND_QUEUE = 1


@attrs.frozen
class _Close:
    code: int
    reason: str


@attrs.define(eq=False)
class _Relay:
    """A source of frames the sender task reads itself (see Outbox.relay)."""

    open_frames: Callable[[], AsyncGenerator[str | bytes, None]]
    done: trio.Event = attrs.Factory(trio.Event)
    error: Exception | None = None  # what the source raised, for the request task to re-raise
    stopped: bool = False  # the request no longer wants frames
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)  # around the sender's reading
    pulling: bool = False  # the sender is waiting for the source's next frame (not writing)

    def stop(self) -> None:
        """Ask the sender to stop reading the source: at once while it waits for a frame, else after
        the write it is in (a write is never cut off: a frame goes out whole or not at all)."""
        self.stopped = True
        if self.pulling:
            self.scope.cancel()


_Item = str | bytes | _Close | _Relay  # what the sender takes, in order


class Outbox:
    """A socket's outgoing frames, in order, handed to its sender task. Made by `open_outbox`; use as
    `async with outbox:`, which ends the frames (the sender stops after the close, or when they end).

    Every frame is written whole with respect to every other write on its connection: through Quart's
    public `websocket.send`, Hypercorn writes it under the connection's send lock; our own transport
    writes every frame, ping, pong and close under its own (issue 19). `wire`: the socket's `send` takes
    frames already framed (transport.wire_frames), built once per batch for every such socket."""

    def __init__(
        self, channel: trio.MemorySendChannel[Any], *, write_now: Callable[[bytes], bool] | None = None
    ):
        self._channel = channel
        self._write_now = write_now
        self.wire = write_now is not None
        self.sent_all = trio.Event()  # the sender has stopped: after the close, or the peer went away

    def direct(self, encode: Callable[[EventBatch], bytes]) -> DirectSink | None:
        """A direct sink for this socket (events/bus.py) writing `encode(batch)` — framed once per batch
        and shared by every socket — or None when the socket is not ours (Quart's: only its own path
        writes there)."""
        write_now = self._write_now
        if write_now is None:
            return None

        def sink(batch: EventBatch) -> bool:
            return not self.sent_all.is_set() and write_now(encode(batch))

        return sink

    async def __aenter__(self) -> Outbox:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._channel.aclose()

    async def send(self, frame: str) -> None:
        await self._put(frame)

    async def relay(self, open_frames: Callable[[], AsyncGenerator[str | bytes, None]]) -> None:
        """Have the sender task itself read the frames of `open_frames()` (an async generator it closes)
        and send each as it comes: one task hop per frame less than `send` (issue 19, round 2). Returns
        when the frames end or the peer went away; re-raises what the source raised. When this is
        cancelled the sender stops reading the source (see _Relay.stop), so the source's bus
        subscription ends with the request even if the sender is still blocked writing to a peer that
        stopped reading (that write fails once Hypercorn closes the socket, after the request ends)."""
        relay = _Relay(open_frames)
        try:
            await self._put(relay)
            await relay.done.wait()
        finally:
            relay.stop()
        if relay.error is not None:
            raise relay.error

    async def close(self, code: int, reason: str) -> None:
        """Queue the close frame, after every frame queued before it."""
        await self._put(_Close(code, reason))

    async def _put(self, item: _Item) -> None:
        # Without a checkpoint when the sender has room (the usual case): the stream task then goes
        # straight back to its next batch instead of one more pass through the scheduler.
        try:
            self._channel.send_nowait(item)
        except trio.WouldBlock:
            await self._channel.send(item)
        except trio.BrokenResourceError:  # the sender stopped: the peer went away, nothing can reach it
            pass


async def _relay(ws: Peer, relay: _Relay) -> None:
    """Send the relay's frames as the source yields them, in this (the sender's) task. A failed write
    propagates (the peer went away); the source is closed in every case."""
    try:
        with relay.scope:  # cancelled by relay.stop only while `pulling` (one scope, not one per frame)
            async with aclosing(relay.open_frames()) as source:
                while not relay.stopped:
                    relay.pulling = True
                    try:
                        frame = await anext(source)
                    except StopAsyncIteration:
                        return
                    except Exception as exc:  # a refusal or a database error: the request reports it
                        relay.error = exc
                        return
                    finally:
                        relay.pulling = False
                    if relay.stopped:
                        return
                    await ws.send(frame)
    finally:
        relay.done.set()


async def _send_frames(ws: Peer, frames: trio.MemoryReceiveChannel[_Item], outbox: Outbox) -> None:
    """The socket's sender: frames in order, then the close. Runs outside the request's task."""
    try:
        async with frames:
            async for item in frames:
                if isinstance(item, _Close):
                    await ws.close(item.code, item.reason)
                    return
                if isinstance(item, _Relay):
                    await _relay(ws, item)
                else:
                    await ws.send(item)
    except Exception as exc:  # the peer went away mid-write; nothing is left to tell it
        log.debug("websocket sender stopped", error=repr(exc))
    finally:
        outbox.sent_all.set()


def open_outbox(queue: int) -> Outbox:
    """Start the current (accepted) WebSocket's sender task, which takes up to `queue` frames before
    `send` waits; its outbox."""
    registry: SocketRegistry = services().sockets
    outgoing, frames = trio.open_memory_channel[_Item](queue)
    own = _own_socket.get(None)
    if own is not None:
        outbox = Outbox(outgoing, write_now=own.write_now)
        registry.start_sender(_send_frames, own.peer, frames, outbox)
        return outbox
    # The sender runs in a task of its own, outside this request's context: Quart's public
    # copy_current_websocket_context gives it a copy of the context, so `websocket` means this socket there.
    outbox = Outbox(outgoing)
    registry.start_sender(copy_current_websocket_context(_send_frames), websocket, frames, outbox)
    return outbox


def _peer() -> Peer:
    own = _own_socket.get(None)
    return websocket if own is None else own.peer


async def serve_socket(stream: Callable[[Outbox], Awaitable[tuple[int, str]]]) -> None:
    """Accept, run `stream(outbox)` (which does its own checks, raising Refused), then close with the code
    it returns — or 1001 if the server shuts down first, or the refusal's code."""
    registry: SocketRegistry = services().sockets
    peer = _peer()
    await peer.accept()
    outbox = open_outbox(SEND_QUEUE)
    code, reason = NORMAL, ""
    record = _SocketAuth()
    _socket_auth.set(record)  # inherited by the tasks below
    async with outbox:
        async with trio.open_nursery() as nursery:

            async def run(fn: Callable[[], Awaitable[tuple[int, str] | None]]) -> None:
                nonlocal code, reason
                try:
                    result = await fn()
                except Refused as refused:
                    result = refused.code, refused.reason
                except (StoreUnavailable, StoreClosedError):
                    result = TRY_AGAIN_LATER, "database unavailable; reconnect later"
                if result is not None:
                    code, reason = result
                nursery.cancel_scope.cancel()

            async def shutdown() -> tuple[int, str]:
                await registry.wait_shutdown()
                return GOING_AWAY, "server shutting down"

            nursery.start_soon(run, partial(stream, outbox))
            nursery.start_soon(run, partial(_reject_client_messages, peer))
            nursery.start_soon(run, shutdown)
            nursery.start_soon(run, partial(_close_on_revocation, record))
        # Bounded: a peer that stopped reading blocks its sender (and so this hand-over) until
        # Hypercorn's keepalive timeout; the request task ends regardless (see sockets.py).
        with trio.move_on_after(CLOSE_WAIT_S):
            await outbox.close(code, reason)
            await outbox.sent_all.wait()
            # Linger until the peer answers the close: Hypercorn then reports the disconnect and Quart
            # cancels this task. Ending at once would make Hypercorn close the TCP connection while the
            # peer's pings or messages sit unread in it: the kernel then resets the connection, and a
            # peer still reading our last frames loses them, `end` and the close included.
            await trio.sleep_forever()
