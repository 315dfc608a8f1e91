"""The HTTP listener: run-event WebSockets served by our own transport, every other connection by Hypercorn.

Each accepted connection's request head is read first (at most Hypercorn's `h11_max_incomplete_size`,
within its `keep_alive_timeout`). A `GET /api/v1/runs/{id}/events/ws` that is a valid WebSocket upgrade
(wsproto decides) is served here (http/transport.py): the same handler, checks and close codes as Quart's
route (routes.counted, handlers/live.py, websockets.py), only the bytes on the wire are written by us.
Any other connection goes to Hypercorn with the bytes already read replayed first, so it sees exactly
what the client sent. Only a connection's first request can be ours: a WebSocket upgrade sent on a
keep-alive connection after other requests is served by Quart's route, as before (correct, but each
watcher's frames are then framed on their own).

Hypercorn has no public way to serve a connection accepted by someone else: `hypercorn.trio.serve`
binds, accepts and serves. So this module does what `hypercorn.trio.run.worker_serve` does (lifespan,
sockets, graceful shutdown) with Hypercorn's per-connection `TCPServer`, `WorkerContext`, `Lifespan` and
`wrap_app`, which are not documented API: hypercorn is pinned to the version this was written against
(pyproject.toml), and tests/http/test_front.py fails loudly when those names or their signatures move.
runsvc serves plain HTTP only (TLS belongs to a reverse proxy), so there is no TLS path here.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import hypercorn.config
import trio
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app
from quart_trio import QuartTrio
from werkzeug.datastructures import Headers
from werkzeug.sansio.request import Request
from wsproto import ConnectionType, WSConnection
from wsproto.events import RejectConnection, RejectData
from wsproto.events import Request as Upgrade

from ..log import get_logger
from .access import host_allowed
from .handlers import live
from .query import MAX_INT64
from .routes import API, counted
from .transport import OwnWebSocket
from .types import services
from .websockets import own_socket

log = get_logger(__name__)

RECEIVE_BYTES = 65536
_OURS_PREFIX = f"GET {API}/runs/".encode()
_RUN_EVENTS_LINE = re.compile(
    rb"GET " + re.escape(API.encode()) + rb"/runs/([0-9]+)/events/ws(?:\?([^ #]*))? HTTP/1\.1\r\n"
)
_run_events = counted("run_events", live.run_events_ws)


class ReplayedStream(trio.abc.HalfCloseableStream):
    """A connection's stream with the bytes already read from it given back first (for Hypercorn)."""

    def __init__(self, stream: trio.SocketStream, already_read: bytes):
        self._stream = stream
        self._already_read = already_read

    @property
    def socket(self) -> trio.socket.SocketType:  # Hypercorn reads the peer's and its own address here
        return self._stream.socket

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._already_read:
            data, self._already_read = self._already_read, b""
            await trio.lowlevel.checkpoint()
            return data
        return await self._stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()


def _may_be_ours(head: bytes) -> bool:
    """Whether the bytes so far may still begin a run-event WebSocket request."""
    return head[: len(_OURS_PREFIX)] == _OURS_PREFIX[: len(head)]


async def _read_head(stream: trio.SocketStream, limit: int) -> tuple[bytes, bool]:
    """What the client sent before its request head ended, or before it cannot be ours, or past `limit`
    bytes; and whether a head that may be ours is complete. b"" when the client sent nothing."""
    head = b""
    while True:
        data = await stream.receive_some(RECEIVE_BYTES)
        if not data:
            return head, False
        head += data
        if not _may_be_ours(head) or len(head) > limit:
            return head, False
        if b"\r\n\r\n" in head:
            return head, True


def _handshake_request(head: bytes, target_path: str, query: bytes, stream: trio.SocketStream) -> Request:
    """The handshake as a werkzeug request, as Quart would see it (headers, cookies, args, scheme)."""
    lines = head.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    headers = Headers()
    for line in lines:  # valid: wsproto (h11) has parsed this head already
        name, _, value = line.partition(b":")
        headers.add(name.decode("latin-1").strip(), value.decode("latin-1").strip())
    peer = stream.socket.getpeername()
    local = stream.socket.getsockname()
    return Request(
        method="GET", scheme="ws", server=(str(local[0]), int(local[1])), root_path="", path=target_path,
        query_string=query, headers=headers, remote_addr=str(peer[0]),
    )


async def _reject(stream: trio.SocketStream, connection: WSConnection, status: int, body: bytes) -> None:
    data = connection.send(RejectConnection(
        status_code=status, has_body=True,
        headers=[(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                 (b"connection", b"close")],
    ))
    data += connection.send(RejectData(data=body))
    await stream.send_all(data)


class Front:
    """Serves each accepted connection: ours (a run-event WebSocket) or Hypercorn's."""

    def __init__(self, app: QuartTrio, config: hypercorn.config.Config, hypercorn_connection: Callable[..., Any]):
        self._app = app
        self._config = config
        self._hypercorn_connection = hypercorn_connection

    async def handle(self, stream: trio.SocketStream) -> None:
        try:
            await self._handle(stream)
        except Exception as exc:  # one connection's failure never reaches the listener
            log.error("connection failed", error=repr(exc))
            await trio.aclose_forcefully(stream)

    async def _handle(self, stream: trio.SocketStream) -> None:
        config = self._config
        head, complete = b"", False
        with trio.move_on_after(config.keep_alive_timeout):
            head, complete = await _read_head(stream, config.h11_max_incomplete_size)
        if complete and await self._serve_own(stream, head):
            return
        if head:
            await self._hypercorn_connection(ReplayedStream(stream, head))
        else:  # nothing came, in Hypercorn's keep-alive time: it would close the connection as well
            await trio.aclose_forcefully(stream)

    async def _serve_own(self, stream: trio.SocketStream, head: bytes) -> bool:
        """Serve a run-event WebSocket; False (nothing sent) when the head is not one (Hypercorn's then)."""
        line = _RUN_EVENTS_LINE.match(head)
        if line is None:
            return False
        connection = WSConnection(ConnectionType.SERVER)
        try:
            connection.receive_data(head)
            upgrade = next(connection.events(), None)
        except Exception:  # not a valid upgrade (wsproto/h11 say why): Hypercorn answers it as before
            return False
        if not isinstance(upgrade, Upgrade):
            return False
        digits = line.group(1)
        run_id = int(digits) if len(digits) <= 40 else MAX_INT64 + 1  # refused by the handler (4400)
        path = upgrade.target.partition("?")[0]
        request = _handshake_request(head, path, line.group(2) or b"", stream)
        async with self._app.app_context():
            settings = services().settings
            if not host_allowed(settings.allowed_hosts, request.headers.get("Host")):
                await _reject(stream, connection, 400, b'{"error": {"code": "invalid_request", '
                                                       b'"message": "host not allowed"}}')
                await trio.aclose_forcefully(stream)
                return True
            socket = OwnWebSocket(
                stream, connection, ping_interval_s=settings.ws_ping_interval_s,
                ping_timeout_s=settings.ws_ping_timeout_s, count_direct_write=services().sockets.count_direct_write,
            )
            with own_socket(request, socket, socket.write_now):
                await socket.serve(partial(_run_events, run_id=run_id))
        return True


def _bound(config: hypercorn.config.Config) -> tuple[list[trio.SocketListener], list[str]]:
    sockets = config.create_sockets()
    if sockets.secure_sockets or sockets.quic_sockets:
        raise RuntimeError("runsvc serves plain HTTP only; put TLS in a reverse proxy")
    listeners, binds = [], []
    for sock in sockets.insecure_sockets:
        sock.listen(config.backlog)
        listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
        host, port = sock.getsockname()[:2]
        binds.append(f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}")
    return listeners, binds


async def serve(
    app: QuartTrio,
    config: hypercorn.config.Config,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` like `hypercorn.trio.serve` does (its lifespan, keep-alive and graceful shutdown:
    after `shutdown_trigger` returns no connection is accepted, and those open get
    `config.graceful_timeout`, read then), with run-event WebSockets served by our own transport."""
    asgi = wrap_app(app, config.wsgi_max_body_size, None)
    lifespan_state: dict[str, Any] = {}
    lifespan = Lifespan(asgi, config, lifespan_state)
    context = WorkerContext(None)
    hypercorn_connection = partial(TCPServer, asgi, config, context, ConnectionState(lifespan_state.copy()))
    front = Front(app, config, hypercorn_connection)
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as connections:
            listeners, binds = _bound(config)
            task_status.started(binds)
            try:
                async with trio.open_nursery() as accepting:
                    accepting.start_soon(partial(
                        trio.serve_listeners, front.handle, listeners, handler_nursery=connections
                    ))
                    await shutdown_trigger()
                    accepting.cancel_scope.cancel()
            finally:
                with trio.move_on_after(1.0, shield=True):  # setting an event: it does not wait
                    await context.terminated.set()  # Hypercorn's idle keep-alive connections close now
                connections.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
