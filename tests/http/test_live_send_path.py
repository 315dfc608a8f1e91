"""The WebSocket send path: a run's events arrive exactly once, in order, whether the watcher keeps up,
stalls and resumes, or negotiates compression."""

from __future__ import annotations

import json

import httpx
import pytest
import trio

from tests.helpers import add_user, login
from tests.http.raw_ws import raw_websocket
from tests.http.test_live import append_lines, open_ws, read_all, running_run


@pytest.fixture(name="session")
async def _session(server):
    await add_user(server, "olga", "operator")
    async with httpx.AsyncClient(base_url=server.url) as client:
        await login(client, "olga")
        return client.cookies["runsvc_session"]


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


async def test_a_watcher_that_keeps_up_gets_every_event_once(server, session):
    """A watcher that keeps up with a run committing every 5 ms sees the whole run once, in order, then
    `end` and 1000."""
    with trio.fail_after(30):
        run_id = await running_run(server.services)
        seqs, end, code = await _watch_while_appending(server, session, run_id, batches=100, lines=5, width=20)
    last = (await server.services.runs.get(run_id)).last_seq
    assert seqs == list(range(1, last + 1))
    assert end == {"type": "end", "last_seq": last} and code == 1000


async def test_a_socket_that_fills_gets_everything_once_it_reads_again(server, session):
    """A client with a small receive buffer that stops reading: its sender blocks inside a frame, later
    batches queue and lag. Once the client reads again it gets every event once, in order, then `end`
    and 1000."""
    services = server.services
    with trio.fail_after(60):
        run_id = await running_run(services)
        path = f"/api/v1/runs/{run_id}/events/ws"
        async with raw_websocket(server.url, path, cookie=session, receive_buffer=4096) as client:
            first = json.loads(await client.next_message())
            seqs = [e["seq"] for e in first["events"]]
            # The client reads nothing now; ~20 MB of ~60 KB frames overflow its socket's buffers (a few MB
            # at most) and its subscription's.
            for start in range(0, 20_000, 60):
                await services.eventlog.append(
                    run_id, [("stdout", f"{i} " + "y" * 1000) for i in range(start, start + 60)]
                )
                await trio.sleep(0.002)
            assert services.bus.statistics().lag_events >= 1
            await append_lines(services, run_id, 2000)
            await services.runs.cancel(run_id, by="t")
            *frames, end = await client.frames()
            seqs += [e["seq"] for frame in frames for e in frame["events"]]
    last = (await services.runs.get(run_id)).last_seq
    assert seqs == list(range(1, last + 1))
    assert end == {"type": "end", "last_seq": last} and client.close_code == 1000


async def test_a_socket_offering_permessage_deflate_gets_the_whole_run_uncompressed(server, session):
    """A client that offers compression (browsers do) gets the run-event socket without it (every watcher
    shares one framing of each batch), and the whole run once, in order."""
    services = server.services
    with trio.fail_after(30):
        run_id = await running_run(services)
        path = f"/api/v1/runs/{run_id}/events/ws"
        async with raw_websocket(server.url, path, cookie=session, deflate=True) as client:
            assert client.extensions == []
            seqs = [e["seq"] for e in json.loads(await client.next_message())["events"]]
            for b in range(50):
                await services.eventlog.append(run_id, [("stdout", f"{b} " + "z" * 200)] * 5)
                await trio.sleep(0.005)
            await services.runs.cancel(run_id, by="t")
            frames = await client.frames()
    last = (await services.runs.get(run_id)).last_seq
    assert seqs + [e["seq"] for f in frames[:-1] for e in f["events"]] == list(range(1, last + 1))
    assert frames[-1] == {"type": "end", "last_seq": last} and client.close_code == 1000
