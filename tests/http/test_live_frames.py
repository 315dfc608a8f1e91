"""Issue 19: every WebSocket frame reaches the client whole. The server's pings, its pongs and the close
are written between our frames, never inside one, however full the client's socket is — including the
frames the bus writes straight into a socket that takes only part of them (our own transport)."""

from __future__ import annotations

import json
import random
from functools import partial

import httpx
import pytest
import trio
from wsproto.events import CloseConnection, Ping, Pong, TextMessage
from wsproto.utilities import RemoteProtocolError

from tests.conftest import make_settings
from tests.helpers import add_user, login, running_server
from tests.http.raw_ws import raw_websocket
from tests.http.test_live import running_run

LINE = "y" * 1000  # ~1 KB lines: frames of ~30-60 KB, several socket buffers' worth per second


async def _cookie(server) -> str:
    await add_user(server, "olga", "operator")
    async with httpx.AsyncClient(base_url=server.url) as client:
        await login(client, "olga")
        return client.cookies["runsvc_session"]


async def _produce(services, run_id, seconds: float) -> None:
    """30 lines every 4 ms for `seconds`, then cancel the run (its watchers then get `end` and 1000)."""
    deadline = trio.current_time() + seconds
    start = 0
    while trio.current_time() < deadline:
        await services.eventlog.append(run_id, [("stdout", f"{i} {LINE}") for i in range(start, start + 30)])
        start += 30
        await trio.sleep(0.004)
    await services.runs.cancel(run_id, by="t")


async def _watch(server, cookie, run_id, *, rng: random.Random, ping_every_s: float | None = None,
                 close_after_s: float | None = None) -> dict:
    """Read the run's socket in bursts (a small receive buffer, so the server's socket keeps filling and
    draining), answering pings, optionally pinging the server, optionally closing early. What it saw."""
    seen: dict = {"seqs": [], "end": None, "code": None, "error": None, "pongs": 0}
    path = f"/api/v1/runs/{run_id}/events/ws"
    started = trio.current_time()
    async with raw_websocket(server.url, path, cookie=cookie, receive_buffer=4096) as client:
        async with trio.open_nursery() as nursery:
            if ping_every_s is not None:

                async def ping() -> None:
                    try:
                        for n in range(1_000_000):
                            await client.send(Ping(f"p{n}".encode()))
                            await trio.sleep(ping_every_s)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass  # the server closed the connection after its close frame; the reader sees it

                nursery.start_soon(ping)
            parts: list[str] = []
            try:
                while (event := await client.next_event()) is not None:
                    if isinstance(event, TextMessage):
                        parts.append(event.data)
                        if event.message_finished:
                            frame = json.loads("".join(parts))
                            parts.clear()
                            if frame["type"] == "end":
                                seen["end"] = frame
                            else:
                                seen["seqs"].extend(e["seq"] for e in frame["events"])
                    elif isinstance(event, Ping):
                        await client.send(event.response())
                    elif isinstance(event, Pong):
                        seen["pongs"] += 1
                    elif isinstance(event, CloseConnection):
                        seen["code"] = event.code
                        break
                    if close_after_s is not None and trio.current_time() - started > close_after_s:
                        await client.send(CloseConnection(1000, "bye"))
                        seen["code"] = "closed by client"
                        break
                    # Bursts: slow for half of each second, flat out for the other half.
                    await trio.sleep(rng.choice((0.002, 0.004)) if trio.current_time() % 1.0 < 0.5 else 0)
            except RemoteProtocolError as exc:  # a frame arrived corrupted (issue 19: close 1007/1002)
                seen["error"] = str(exc)
            except trio.BrokenResourceError as exc:
                seen["error"] = repr(exc)
            nursery.cancel_scope.cancel()
    return seen


def _check_whole_run(seen: dict, last: int) -> None:
    assert (seen["error"], seen["code"]) == (None, 1000)  # corrupted frame: wsproto closes with 1007
    assert seen["seqs"] == list(range(1, last + 1))
    assert seen["end"] == {"type": "end", "last_seq": last}


async def test_server_pings_never_land_inside_a_frame(tmp_path):
    """With Hypercorn pinging every 50 ms and a client whose socket fills and drains, the client decodes
    every frame (before issue 19: a ping inside a partly written frame, close 1007 within ~3 s)."""
    settings = make_settings(tmp_path, ws_ping_interval_s=0.05, ws_ping_timeout_s=30)
    with trio.fail_after(60):
        async with running_server(settings) as server:
            cookie = await _cookie(server)
            run_id = await running_run(server.services)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_produce, server.services, run_id, 6.0)
                seen = await _watch(server, cookie, run_id, rng=random.Random(1))
            last = (await server.services.runs.get(run_id)).last_seq
    _check_whole_run(seen, last)


async def test_pongs_to_client_pings_never_land_inside_a_frame(tmp_path):
    """A client that pings every 10 ms while its socket fills and drains gets each pong between frames,
    never inside one, and every frame decodes."""
    settings = make_settings(tmp_path, ws_ping_interval_s=30, ws_ping_timeout_s=30)
    with trio.fail_after(60):
        async with running_server(settings) as server:
            cookie = await _cookie(server)
            run_id = await running_run(server.services)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_produce, server.services, run_id, 6.0)
                seen = await _watch(server, cookie, run_id, rng=random.Random(2), ping_every_s=0.01)
            last = (await server.services.runs.get(run_id)).last_seq
    _check_whole_run(seen, last)
    assert seen["pongs"] > 0


@pytest.mark.slow
async def test_slow_readers_pings_and_closes_together_keep_every_frame_whole(tmp_path):
    """Stress (~12 s): eight watchers of one flooding run — slow bursty readers, readers that ping, readers
    that close mid-stream — with server pings every 30 ms. Nobody sees a corrupted frame; every watcher that
    stays gets the whole run in order, then `end` and 1000; the others see a prefix of it."""
    settings = make_settings(tmp_path, ws_ping_interval_s=0.03, ws_ping_timeout_s=30)
    with trio.fail_after(90):
        async with running_server(settings) as server:
            cookie = await _cookie(server)
            run_id = await running_run(server.services)
            results: list[tuple[str, dict]] = []
            async with trio.open_nursery() as nursery:

                async def watcher(kind: str, seed: int, **options) -> None:
                    results.append((kind, await _watch(server, cookie, run_id, rng=random.Random(seed), **options)))

                nursery.start_soon(_produce, server.services, run_id, 10.0)
                for n in range(3):
                    nursery.start_soon(watcher, "stays", n)
                for n in range(3):
                    nursery.start_soon(partial(watcher, "stays", 10 + n, ping_every_s=0.02))
                for n in range(2):
                    nursery.start_soon(partial(watcher, "leaves", 20 + n, close_after_s=2.0 + 2 * n))
            last = (await server.services.runs.get(run_id)).last_seq
    assert len(results) == 8
    for kind, seen in results:
        outcome = (kind, len(seen["seqs"]), last, seen)
        assert seen["error"] is None and seen["code"] in (1000, "closed by client"), outcome
        if kind == "stays":
            _check_whole_run(seen, last)
        else:
            assert seen["seqs"] == list(range(1, len(seen["seqs"]) + 1))
