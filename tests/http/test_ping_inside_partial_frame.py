"""Issue 19's repro: no ping, pong or close lands inside a frame the socket took only in part.

On b219277 (the direct-write path past Hypercorn's lock) the first test failed in ~3 s with close 1007
"can't decode byte 0x89" (0x89 = a ping frame's header inside a text payload). Now run-event sockets are
our own transport, whose direct writes keep the connection's write gate until their rest is written. The
first two tests are the repro and its client-ping variant (whether a direct write is partial there
depends on timing); the third makes one partial direct write for certain and pings into it. All three
fail (1007, 1006) when the gate is given back before the rest is written."""

from __future__ import annotations

import json

import httpx
import pytest
import trio
from wsproto.events import CloseConnection, Ping, Pong
from wsproto.utilities import RemoteProtocolError

from tests.conftest import make_settings
from tests.helpers import add_user, login, running_server, wait_until
from tests.http.raw_ws import raw_websocket
from tests.http.test_live import running_run


async def _produce(services, run_id) -> None:
    """~1 KB lines, 30 every 4 ms, until cancelled."""
    for start in range(0, 2_000_000, 30):
        await services.eventlog.append(run_id, [("stdout", f"{i} " + "y" * 1000) for i in range(start, start + 30)])
        await trio.sleep(0.004)


async def _read_in_bursts(server, seconds: float, *, ping_every_s: float | None) -> tuple[list, int]:
    """Watch a flooding run with a small receive buffer, reading in bursts (so the server's socket keeps
    filling and draining), answering pings, optionally pinging the server; (errors, pongs received)."""
    services = server.services
    await add_user(server, "olga", "operator")
    async with httpx.AsyncClient(base_url=server.url) as client:
        await login(client, "olga")
        cookie = client.cookies["runsvc_session"]
    run_id = await running_run(services)
    errors: list = []
    pongs = 0
    async with raw_websocket(server.url, f"/api/v1/runs/{run_id}/events/ws", cookie=cookie,
                             receive_buffer=4096) as c:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_produce, services, run_id)
            if ping_every_s is not None:

                async def ping() -> None:
                    for n in range(1_000_000):
                        await c.send(Ping(f"p{n}".encode()))
                        await trio.sleep(ping_every_s)

                nursery.start_soon(ping)
            with trio.move_on_after(seconds):
                try:
                    while (ev := await c.next_event()) is not None:
                        if isinstance(ev, Ping):
                            await c.send(ev.response())
                        elif isinstance(ev, Pong):
                            pongs += 1
                        elif isinstance(ev, CloseConnection):
                            errors.append((ev.code, ev.reason))
                            break
                        await trio.sleep(0.002 if (trio.current_time() % 1.0) < 0.5 else 0)
                except RemoteProtocolError as exc:
                    errors.append(("protocol", str(exc)))
            nursery.cancel_scope.cancel()
    return errors, pongs


@pytest.mark.slow
async def test_ping_inside_partial_frame(tmp_path):
    """Server pings every 250 ms while the client's socket fills and drains: every frame decodes."""
    settings = make_settings(tmp_path, ws_ping_interval_s=0.25, ws_ping_timeout_s=30)
    with trio.fail_after(60):
        async with running_server(settings) as server:
            errors, _ = await _read_in_bursts(server, 10, ping_every_s=None)
            statistics = server.services.sockets.statistics()
    assert not errors, (statistics, errors)


@pytest.mark.slow
async def test_client_pings_while_frames_are_partial(tmp_path):
    """The client pings every 5 ms while the server's socket fills and drains: each pong goes between
    frames (owed while a frame's rest is pending), never inside one, and every frame decodes."""
    settings = make_settings(tmp_path, ws_ping_interval_s=0.1, ws_ping_timeout_s=30)
    with trio.fail_after(60):
        async with running_server(settings) as server:
            errors, pongs = await _read_in_bursts(server, 10, ping_every_s=0.005)
            statistics = server.services.sockets.statistics()
    assert not errors, (statistics, errors)
    assert pongs > 0


async def test_pings_and_pongs_wait_for_the_rest_of_a_partial_direct_write(tmp_path):
    """A caught-up watcher that stops reading gets a ~2 MB batch: the bus's direct write goes out in part
    (its socket and the client's buffer are small); the pongs to the client's pings, the server's pings
    (every 10 ms) and the later frames all wait for the rest. Once the client reads, every frame decodes,
    with every event once, in order."""
    settings = make_settings(tmp_path, ws_ping_interval_s=0.01, ws_ping_timeout_s=30)
    with trio.fail_after(60):
        async with running_server(settings) as server:
            services = server.services
            await add_user(server, "olga", "operator")
            async with httpx.AsyncClient(base_url=server.url) as client:
                await login(client, "olga")
                cookie = client.cookies["runsvc_session"]
            run_id = await running_run(services)
            await services.eventlog.append(run_id, [("stdout", "first")])
            path = f"/api/v1/runs/{run_id}/events/ws"
            async with raw_websocket(server.url, path, cookie=cookie, receive_buffer=4096) as c:
                seqs = [e["seq"] for e in json.loads(await c.next_message())["events"]]
                # The sender now waits for live batches, having sent everything: the next one is written
                # by the bus itself.
                await wait_until(lambda: services.bus.subscription_statistics(run_id)[0].direct_last == seqs[-1])
                await services.eventlog.append(run_id, [("stdout", f"{i} " + "y" * 1000) for i in range(2000)])
                assert services.sockets.statistics().partial_direct_writes == 1
                for n in range(20):  # pings from the client while the rest is pending: pongs owed
                    await c.send(Ping(f"p{n}".encode()))
                await services.runs.cancel(run_id, by="t")
                frames = await c.frames()  # raises (1007) on a frame with a ping or pong inside it
            last = (await services.runs.get(run_id)).last_seq
    seqs += [e["seq"] for frame in frames[:-1] for e in frame["events"]]
    assert seqs == list(range(1, last + 1))
    assert frames[-1] == {"type": "end", "last_seq": last} and c.close_code == 1000
