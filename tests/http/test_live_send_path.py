"""The WebSocket write paths (issue 13): the sender's frames go straight through the ASGI `send` callable,
and live batches are written into the socket directly when the sender has nothing to do; a run's events
arrive exactly once, in order, by either path."""

from __future__ import annotations

import json

import httpx
import pytest
import trio

from runsvc.http import websockets, wire
from tests.helpers import add_user, login
from tests.http.raw_ws import raw_websocket
from tests.http.test_live import append_lines, open_ws, read_all, running_run


@pytest.fixture(name="session")
async def _session(server):
    await add_user(server, "olga", "operator")
    async with httpx.AsyncClient(base_url=server.url) as client:
        await login(client, "olga")
        return client.cookies["runsvc_session"]


async def test_sender_writes_through_the_asgi_send(server, session, monkeypatch):
    """Under the Quart this server runs on, the sender finds the ASGI `send` (not Quart's wrapper, which
    would be the silent fallback), and what it writes is the whole run, in order, then `end` and 1000."""
    found: list[str] = []
    real = websockets._asgi_sender

    def recording(ws):
        send_text = real(ws)
        found.append("asgi" if send_text.__name__ == "send_text" else "quart")
        return send_text

    monkeypatch.setattr(websockets, "_asgi_sender", recording)
    services = server.services
    with trio.fail_after(30):
        run_id = await running_run(services)
        await append_lines(services, run_id, 300)
        async with open_ws(server, f"/api/v1/runs/{run_id}/events/ws", cookie=session) as ws:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(append_lines, services, run_id, 300)
                seqs, end, code = await read_all(ws, stop_after_seq=600)
            await services.runs.cancel(run_id, by="t")
            more, end, code = await read_all(ws)
    last = (await services.runs.get(run_id)).last_seq
    assert found == ["asgi"]
    assert seqs + more == list(range(1, last + 1))
    assert end == {"type": "end", "last_seq": last} and code == 1000


def test_asgi_sender_falls_back_to_the_public_send():
    """A websocket object laid out differently (a future Quart) is written through its own `send`."""

    class OtherWebsocket:
        _send = None

        async def send(self, data: str) -> None:
            raise AssertionError("not called here")

    ws = OtherWebsocket()
    assert websockets._asgi_sender(ws) == ws.send


def test_text_frames_are_the_bytes_wsproto_would_send():
    """The direct path's framing equals wsproto's own (server side, no extension) at every length class."""
    from wsproto.frame_protocol import FrameProtocol

    messages = ["", "x" * 125, "y" * 126, "é" * 40_000, "z" * 65_535, "w" * 65_536, "v" * 300_000]
    for message in messages:
        assert wire.text_frames([message]) == FrameProtocol(client=False, extensions=[]).send_data(message, True)
    assert wire.text_frames(messages[:3]) == b"".join(wire.text_frames([m]) for m in messages[:3])


def test_raw_socket_is_not_found_behind_unknown_objects():
    """Anything but Hypercorn's own objects (another server, a future layout) keeps the ordinary path."""
    assert wire.RawSocket.find(None) is None
    assert wire.RawSocket.find(print) is None
    assert wire.asgi_send_of(object()) is None


async def _watch_while_appending(server, session, run_id, *, batches, lines, width):
    """Append `batches` commits of `lines` lines (each `width` characters) at a pace the client keeps up
    with, then cancel the run; (seqs, end, close code) as the client saw them."""
    services = server.services
    async with open_ws(server, f"/api/v1/runs/{run_id}/events/ws", cookie=session) as ws:
        async with trio.open_nursery() as nursery:

            async def produce() -> None:
                for b in range(batches):
                    await services.eventlog.append(
                        run_id, [("stdout", f"{b}.{i} " + "x" * width) for i in range(lines)]
                    )
                    await trio.sleep(0.005)
                await services.runs.cancel(run_id, by="t")

            nursery.start_soon(produce)
            return await read_all(ws)


async def test_live_batches_are_written_straight_into_the_socket(server, session):
    """A watcher that keeps up gets live batches through the direct path (the bus writes the frame's bytes
    into its socket), and sees the whole run once, in order, then `end` and 1000."""
    with trio.fail_after(30):
        run_id = await running_run(server.services)
        seqs, end, code = await _watch_while_appending(server, session, run_id, batches=100, lines=5, width=20)
    last = (await server.services.runs.get(run_id)).last_seq
    assert seqs == list(range(1, last + 1))
    assert end == {"type": "end", "last_seq": last} and code == 1000
    assert server.services.sockets.statistics().direct_writes > 0
    assert server.services.bus.statistics().direct_deliveries > 0


async def test_a_socket_that_fills_mid_frame_gets_the_rest_of_it_first(server, session):
    """A client with a small receive buffer that stops reading: a direct write finds the socket's buffer
    nearly full and writes part of a frame; the sender writes the rest before anything else, later batches
    queue and lag. Once the client reads again it gets every event once, in order, then `end` and 1000."""
    services = server.services
    with trio.fail_after(60):
        run_id = await running_run(services)
        path = f"/api/v1/runs/{run_id}/events/ws"
        async with raw_websocket(server.url, path, cookie=session, receive_buffer=4096) as client:
            first = json.loads(await client.next_message())
            seqs = [e["seq"] for e in first["events"]]
            # The client reads nothing now. Each 20 ms tick delivers ~60 KB frames until the socket is full
            # (its buffers hold a few MB at most; 20 MB is plenty).
            for start in range(0, 20_000, 60):
                await services.eventlog.append(
                    run_id, [("stdout", f"{i} " + "y" * 1000) for i in range(start, start + 60)]
                )
                await trio.sleep(0.002)
                if services.sockets.statistics().direct_partial_writes:
                    break
            assert services.sockets.statistics().direct_partial_writes >= 1
            await append_lines(services, run_id, 2000)
            await services.runs.cancel(run_id, by="t")
            *frames, end = await client.frames()
            seqs += [e["seq"] for frame in frames for e in frame["events"]]
    last = (await services.runs.get(run_id)).last_seq
    assert seqs == list(range(1, last + 1))
    assert end == {"type": "end", "last_seq": last} and client.close_code == 1000


async def test_a_socket_with_permessage_deflate_takes_the_ordinary_path(server, session):
    """A client that negotiates compression (browsers do) gets its own compressed frames through Hypercorn,
    never the shared uncompressed bytes: the direct path leaves its socket alone."""
    services = server.services
    with trio.fail_after(30):
        run_id = await running_run(services)
        path = f"/api/v1/runs/{run_id}/events/ws"
        async with raw_websocket(server.url, path, cookie=session, deflate=True) as client:
            assert client.extensions == ["permessage-deflate"]
            seqs = [e["seq"] for e in json.loads(await client.next_message())["events"]]
            for b in range(50):
                await services.eventlog.append(run_id, [("stdout", f"{b} " + "z" * 200)] * 5)
                await trio.sleep(0.005)
            await services.runs.cancel(run_id, by="t")
            frames = await client.frames()
    last = (await services.runs.get(run_id)).last_seq
    assert seqs + [e["seq"] for f in frames[:-1] for e in f["events"]] == list(range(1, last + 1))
    assert frames[-1] == {"type": "end", "last_seq": last} and client.close_code == 1000
    assert services.sockets.statistics().direct_writes == 0
