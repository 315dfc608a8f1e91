"""The listener in front of Hypercorn (http/front.py): run-event WebSocket upgrades on our own transport,
everything else to Hypercorn exactly as the client sent it; and the Hypercorn internals it relies on."""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import tomllib
from pathlib import Path

import httpx
import trio
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.utils import wrap_app

from runsvc.http.front import ReplayedStream
from tests.conftest import make_settings
from tests.helpers import add_user, login, running_server, wait_until
from tests.http.raw_ws import raw_websocket
from tests.http.test_live import append_lines, running_run

ROOT = Path(__file__).resolve().parents[2]
UPGRADE = ("Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")


def _parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_hypercorn_is_the_pinned_version_with_the_internals_front_uses():
    """Fails loudly when Hypercorn moves: front.py serves connections with its non-public TCPServer,
    WorkerContext, Lifespan and wrap_app, so the version is pinned and their shapes are checked here."""
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"hypercorn=={importlib.metadata.version('hypercorn')}" in pins
    assert _parameters(TCPServer.__init__) == ["self", "app", "config", "context", "state", "stream"]
    assert inspect.iscoroutinefunction(TCPServer.run) and hasattr(TCPServer, "__await__")
    assert _parameters(WorkerContext.__init__) == ["self", "max_requests"]
    assert inspect.iscoroutinefunction(WorkerContext(None).terminated.set)
    assert _parameters(Lifespan.__init__) == ["self", "app", "config", "state"]
    for name in ("handle_lifespan", "wait_for_startup", "wait_for_shutdown"):
        assert inspect.iscoroutinefunction(getattr(Lifespan, name)), name
    assert _parameters(wrap_app) == ["app", "wsgi_max_body_size", "mode"]
    # What TCPServer reads of its stream, all of which ReplayedStream gives.
    source = inspect.getsource(TCPServer)
    used = {"receive_some", "send_all", "send_eof", "aclose", "socket", "do_handshake"}
    assert {name for name in used if f"self.stream.{name}" in source} == used
    assert all(hasattr(ReplayedStream, name) for name in used - {"do_handshake"})
    assert not hasattr(ReplayedStream, "do_handshake")  # how TCPServer tells plain TCP from TLS


async def _raw_request(url: str, request: bytes, *, pieces: int = 1) -> bytes:
    """Send `request` (in `pieces` writes, a moment apart) on a new connection; what comes back until the
    server closes or 2 s of silence."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        step = -(-len(request) // pieces)
        for start in range(0, len(request), step):
            await stream.send_all(request[start:start + step])
            await trio.sleep(0.05)
        answer = b""
        with trio.move_on_after(2):
            while data := await stream.receive_some(65536):
                answer += data
        return answer


async def _session(server) -> str:
    await add_user(server, "olga", "operator")
    async with httpx.AsyncClient(base_url=server.url) as client:
        await login(client, "olga")
        return client.cookies["runsvc_session"]


async def test_requests_in_pieces_reach_hypercorn_whole(tmp_path):
    """A request whose head arrives in several pieces, and keep-alive requests after it, are answered by
    Hypercorn as if nothing stood in front of it."""
    with trio.fail_after(30):
        async with running_server(make_settings(tmp_path)) as server:
            answer = await _raw_request(server.url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 2, pieces=7)
            assert answer.count(b"HTTP/1.1 200") == 2, answer
            answer = await _raw_request(server.url, b"GET /api/v1/runs/1 HTTP/1.1\r\nHost: x\r\n\r\n", pieces=3)
            assert answer.startswith(b"HTTP/1.1 401"), answer  # a run-ish path without an upgrade


async def test_a_run_event_upgrade_in_pieces_is_served_by_our_transport(tmp_path):
    """An upgrade whose head arrives in pieces is still recognised: the socket streams the run (the bus
    writes into it directly), without compression even when the client asks for it."""
    with trio.fail_after(30):
        async with running_server(make_settings(tmp_path)) as server:
            cookie = await _session(server)
            run_id = await running_run(server.services)
            await append_lines(server.services, run_id, 3)
            request = (f"GET /api/v1/runs/{run_id}/events/ws?after_seq=1 HTTP/1.1\r\nHost: x\r\n{UPGRADE}"
                       f"Sec-WebSocket-Extensions: permessage-deflate\r\n"
                       f"Cookie: runsvc_session={cookie}\r\n\r\n").encode()
            answer = await _raw_request(server.url, request, pieces=5)
    head, _, frames = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    assert b"sec-websocket-extensions" not in head.lower()
    assert frames[0] == 0x81  # a whole unmasked text frame, uncompressed (RSV1 clear)
    assert b'"seq":2' in frames and b'"seq":1,' not in frames


async def test_plain_get_of_the_socket_path_gets_hypercorns_answer(tmp_path):
    """A GET of the run-event socket's path that is not an upgrade goes to Quart, which answers it with
    an HTTP error as before (no handshake, no hang)."""
    with trio.fail_after(30):
        async with running_server(make_settings(tmp_path)) as server:
            answer = await _raw_request(server.url, b"GET /api/v1/runs/1/events/ws HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 4"), answer


async def test_oversized_head_goes_to_hypercorn(tmp_path):
    """A run-event upgrade whose head is longer than our bound (Hypercorn's h11_max_incomplete_size) is
    Hypercorn's to answer, as it was before."""
    with trio.fail_after(30):
        async with running_server(make_settings(tmp_path)) as server:
            request = (f"GET /api/v1/runs/1/events/ws HTTP/1.1\r\nHost: x\r\n{UPGRADE}"
                       f"X-Filler: {'a' * 20_000}\r\n\r\n").encode()
            answer = await _raw_request(server.url, request)
    assert b"server: hypercorn" in answer.partition(b"\r\n\r\n")[0], answer[:300]


async def test_allowed_hosts_refuses_a_run_event_upgrade_with_400(tmp_path):
    """With `allowed_hosts` set, a run-event upgrade naming another Host is refused with the same 400 and
    JSON error as every other request."""
    settings = make_settings(tmp_path, allowed_hosts=("127.0.0.1",))
    with trio.fail_after(30):
        async with running_server(settings) as server:
            answer = await _raw_request(
                server.url, f"GET /api/v1/runs/1/events/ws HTTP/1.1\r\nHost: evil.example\r\n{UPGRADE}\r\n".encode()
            )
            async with httpx.AsyncClient(base_url=server.url) as client:
                upgrade = dict(line.split(": ", 1) for line in UPGRADE.strip().split("\r\n"))
                same = await client.get("/api/v1/runs/1/events/ws", headers={"Host": "127.0.0.1", **upgrade})
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), head
    assert json.loads(body) == {"error": {"code": "invalid_request", "message": "host not allowed"}}
    assert same.status_code != 400  # a listed host gets past the check (to the handshake)


async def test_upgrade_after_a_request_on_the_same_connection_is_served_by_quart(tmp_path):
    """Only a connection's first request can be ours: an upgrade sent after another request on a kept-alive
    connection is served by Quart's route, and still gets the whole run, then `end` and 1000."""
    with trio.fail_after(30):
        async with running_server(make_settings(tmp_path)) as server:
            services = server.services
            cookie = await _session(server)
            run_id = await running_run(services)
            await append_lines(services, run_id, 5)
            await services.runs.cancel(run_id, by="t")
            request = (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                       + f"GET /api/v1/runs/{run_id}/events/ws HTTP/1.1\r\nHost: x\r\n{UPGRADE}"
                         f"Cookie: runsvc_session={cookie}\r\n\r\n".encode())
            answer = await _raw_request(server.url, request)
            assert services.sockets.statistics().direct_writes == 0
    assert answer.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 101" in answer, answer[:300]
    assert b"server: hypercorn" in answer.partition(b"HTTP/1.1 101")[2]  # Quart's, through Hypercorn
    assert b'{"type": "end", "last_seq": ' in answer
    assert b"\x88\x0e\x03\xe8run finished" in answer  # then the close, 1000


async def test_own_sockets_count_in_the_caps_and_metrics(tmp_path):
    """A run-event socket on our transport holds a slot of `max_websockets` and shows in /metrics like any
    other: the next one over the cap is accepted and closed with 1013."""
    settings = make_settings(tmp_path, max_websockets=1)
    with trio.fail_after(30):
        async with running_server(settings) as server:
            cookie = await _session(server)
            run_id = await running_run(server.services)
            path = f"/api/v1/runs/{run_id}/events/ws"
            async with raw_websocket(server.url, path, cookie=cookie) as first:
                await first.next_message()
                assert server.services.sockets.statistics().open_sockets == 1
                async with httpx.AsyncClient(base_url=server.url) as client:
                    scrape = (await client.get("/metrics")).text
                async with raw_websocket(server.url, path, cookie=cookie) as second:
                    assert await second.next_message() is None
                    assert second.close_code == 1013
    assert 'runsvc_websocket_connections{kind="run_events"} 1.0' in scrape


async def test_unauthenticated_upgrade_is_refused_with_4401(tmp_path):
    """The checks are the app's: without a session our transport accepts and closes with 4401."""
    with trio.fail_after(30):
        async with running_server(make_settings(tmp_path)) as server:
            run_id = await running_run(server.services)
            async with raw_websocket(server.url, f"/api/v1/runs/{run_id}/events/ws", cookie="nope") as ws:
                assert await ws.next_message() is None
                assert ws.close_code == 4401



async def test_a_peer_that_vanishes_mid_stream_frees_its_slot_quietly(tmp_path, caplog):
    """A watcher whose TCP connection is cut (no close frame) while a flood is written to it: its socket
    slot and bus subscription are freed, and nothing is logged as an error (pings every 10 ms meanwhile)."""
    with trio.fail_after(30):
        async with running_server(make_settings(tmp_path, ws_ping_interval_s=0.01)) as server:
            services = server.services
            cookie = await _session(server)
            run_id = await running_run(services)
            async with raw_websocket(server.url, f"/api/v1/runs/{run_id}/events/ws", cookie=cookie,
                                     receive_buffer=4096) as client:
                await append_lines(services, run_id, 2000)
                await client.next_message()
                client._stream.socket.setsockopt(  # an abortive close: RST, not FIN
                    trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            for _ in range(20):
                await append_lines(services, run_id, 500)
            await wait_until(
                lambda: not services.sockets.statistics().open_sockets and not services.bus.subscriber_count(run_id)
            )
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
