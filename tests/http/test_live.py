"""Run events and runs feed over real WebSockets (trio-websocket clients against a real server)."""

from __future__ import annotations

import json
import logging
import random
import sys
from contextlib import asynccontextmanager

import httpx
import pytest
import trio
import trio.lowlevel
import trio_websocket

from runsvc.model import Run
from runsvc.server import serve
from tests.conftest import make_settings
from tests.helpers import FAST_HASHER, add_user, login, open_websocket, running_server, wait_until

PY = sys.executable
SLEEPER = [PY, "-c", "import time; time.sleep(60)"]


@asynccontextmanager
async def open_ws(server, path, *, cookie=None, origin=None, queue=1):
    headers = []
    if cookie:
        headers.append((b"Cookie", f"runsvc_session={cookie}".encode()))
    if origin:
        headers.append((b"Origin", origin.encode()))
    url = server.url.replace("http://", "ws://") + path
    async with open_websocket(
        url, extra_headers=headers, message_queue_size=queue, max_message_size=2**24
    ) as ws:
        yield ws


async def read_all(ws, stop_after_seq=None):
    """(seqs, end frame or None, close code) read until the server closes (or stop_after_seq)."""
    seqs, end = [], None
    try:
        while True:
            frame = json.loads(await ws.get_message())
            if frame["type"] == "end":
                end = frame
                continue
            assert frame["type"] == "events"
            seqs.extend(e["seq"] for e in frame["events"])
            if stop_after_seq is not None and seqs and seqs[-1] >= stop_after_seq:
                return seqs, end, None
    except trio_websocket.ConnectionClosed as closed:
        return seqs, end, closed.reason.code


async def operator_cookie(server) -> str:
    """Create an operator and log in as it; the session cookie value."""
    await add_user(server, "olga", "operator")
    async with httpx.AsyncClient(base_url=server.url) as client:
        await login(client, "olga")
        return client.cookies["runsvc_session"]


@pytest.fixture(name="session")
async def _session(server, client):
    """A logged-in operator: the session cookie value."""
    await add_user(server, "olga", "operator")
    await login(client, "olga")
    return client.cookies["runsvc_session"]


async def running_run(services):
    """A run whose process sleeps; returned once it is running."""
    run = await services.runs.submit(command=SLEEPER, env={}, timeout_s=60, name=None, created_by="t")
    while (await services.runs.get(run.id)).status != "running":
        await trio.sleep(0.01)
    return run.id


async def append_lines(services, run_id, count, per_append=100):
    for start in range(0, count, per_append):
        await services.eventlog.append(
            run_id, [("stdout", f"line {i}") for i in range(start, min(count, start + per_append))]
        )


async def test_mid_run_client_and_resume_from_k(server, session):
    """A client joining mid-run gets seq 1..n once, in order; a client with after_seq=k gets k+1..n;
    both get `end` with the last seq and close 1000."""
    services = server.services
    with trio.fail_after(30):
        run_id = await running_run(services)
        await append_lines(services, run_id, 500)
        async with trio.open_nursery() as nursery:
            results = {}

            async def watch(key, after):
                async with open_ws(server, f"/api/v1/runs/{run_id}/events/ws?after_seq={after}", cookie=session) as ws:
                    results[key] = await read_all(ws)

            nursery.start_soon(watch, "full", 0)
            nursery.start_soon(watch, "tail", 300)
            await wait_until(lambda: services.bus.subscriber_count(run_id) == 2)  # both joined mid-run
            await append_lines(services, run_id, 500)
            await services.runs.cancel(run_id, by="t")
    last = (await services.runs.get(run_id)).last_seq
    seqs, end, code = results["full"]
    assert seqs == list(range(1, last + 1)) and end == {"type": "end", "last_seq": last} and code == 1000
    seqs, end, code = results["tail"]
    assert seqs == list(range(301, last + 1)) and end["last_seq"] == last and code == 1000


@pytest.mark.slow
async def test_disconnect_and_resume_is_exactly_once(server, session):
    """Dropping the connection at a random point and resuming from the last seq seen gives 1..n."""
    services = server.services
    with trio.fail_after(30):
        run_id = await running_run(services)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(append_lines, services, run_id, 3000, 7)
            cut = random.randint(10, 2500)
            async with open_ws(server, f"/api/v1/runs/{run_id}/events/ws", cookie=session) as ws:
                first, _, _ = await read_all(ws, stop_after_seq=cut)
            async with open_ws(server, f"/api/v1/runs/{run_id}/events/ws?after_seq={first[-1]}", cookie=session) as ws:
                nursery.start_soon(_cancel_when_appended, services, run_id, 3002)
                second, end, code = await read_all(ws)
    last = (await services.runs.get(run_id)).last_seq
    assert first + second == list(range(1, last + 1))
    assert end["last_seq"] == last and code == 1000


async def _cancel_when_appended(services, run_id, seq):
    while (await services.runs.get(run_id)).last_seq < seq:
        await trio.sleep(0.02)
    await services.runs.cancel(run_id, by="t")


@pytest.mark.slow
async def test_slow_client_resyncs_with_bounded_memory(tmp_path):
    """A client that stops reading while 200,000 events are produced lags (bounded buffers) and then
    receives everything, in order."""
    settings = make_settings(tmp_path, bus_capacity=64)
    async with running_server(settings) as server:
        services = server.services
        cookie = await operator_cookie(server)
        with trio.fail_after(120):
            run_id = await running_run(services)
            async with open_ws(server, f"/api/v1/runs/{run_id}/events/ws", cookie=cookie) as ws:
                first = json.loads(await ws.get_message())  # connected and streaming
                # The client now reads nothing; TCP backpressure stalls the server's sends.
                await append_lines(services, run_id, 200_000, per_append=200)
                stats = services.bus.statistics()
                assert stats.lag_events > 0
                [subscription] = services.bus.subscription_statistics(run_id)
                assert subscription.buffered_batches <= 64
                await services.runs.cancel(run_id, by="t")
                seqs, end, code = await read_all(ws)
    seqs = [e["seq"] for e in first["events"]] + seqs
    assert seqs == list(range(1, end["last_seq"] + 1)) and code == 1000
    assert end["last_seq"] >= 200_000


@pytest.mark.slow
async def test_watcher_behind_gets_several_commits_per_frame(server, session):
    """A client that stopped reading while 500 commits of 50 lines were made gets them, once it reads
    again, in frames that each carry the output of several commits — in order, without gap."""
    services = server.services
    with trio.fail_after(60):
        run_id = await running_run(services)
        async with open_ws(server, f"/api/v1/runs/{run_id}/events/ws", cookie=session) as ws:
            first = json.loads(await ws.get_message())
            # 25,000 lines of ~200 bytes: more than the socket buffers hold, so the server falls behind.
            for start in range(0, 25_000, 50):
                lines = [("stdout", f"{i} " + "z" * 200) for i in range(start, start + 50)]
                await services.eventlog.append(run_id, lines)
            await services.runs.cancel(run_id, by="t")
            sizes, seqs = [], [e["seq"] for e in first["events"]]
            with pytest.raises(trio_websocket.ConnectionClosed):
                while True:
                    frame = json.loads(await ws.get_message())
                    if frame["type"] == "events":
                        sizes.append(len(frame["events"]))
                        seqs.extend(e["seq"] for e in frame["events"])
    assert seqs == list(range(1, seqs[-1] + 1)) and seqs[-1] >= 25_000
    assert len(sizes) < 500 and max(sizes) > 50  # frames carried several commits each


@pytest.mark.slow
async def test_hundred_clients_see_identical_sequences(tmp_path):
    """100 concurrent clients on one run (one user: its socket cap raised) all receive the same complete
    sequence."""
    results = []
    settings = make_settings(tmp_path, max_websockets_per_user=100)
    with trio.fail_after(60):
        async with running_server(settings) as server:
            services = server.services
            session = await operator_cookie(server)
            run_id = await running_run(services)

            async def watch():
                async with open_ws(server, f"/api/v1/runs/{run_id}/events/ws", cookie=session, queue=16) as ws:
                    results.append(await read_all(ws))

            async with trio.open_nursery() as nursery:
                for _ in range(100):
                    nursery.start_soon(watch)
                while services.bus.subscriber_count(run_id) < 100:
                    await trio.sleep(0.01)
                await append_lines(services, run_id, 2000, 20)
                await services.runs.cancel(run_id, by="t")
            last = (await services.runs.get(run_id)).last_seq
    assert len(results) == 100
    assert all(seqs == list(range(1, last + 1)) and code == 1000 for seqs, _, code in results)


def _startup_passes_done(caplog) -> bool:
    logged = {r.getMessage() for r in caplog.records if r.name == "runsvc.maintenance"}
    return {"maintenance pass", "retention pass"} <= logged


@pytest.mark.slow
async def test_idle_websockets_run_no_sql(tmp_path, caplog):
    """200 open WebSockets on a quiet run (one user: its socket cap raised): no SQL statement at all over a
    real 5 s window."""
    # The window starts once the startup passes of maintenance and retention have logged that they ran.
    caplog.set_level(logging.INFO, logger="runsvc.maintenance")
    async with running_server(make_settings(tmp_path, max_websockets_per_user=200)) as server:
        services = server.services
        session = await operator_cookie(server)
        with trio.fail_after(60):
            run_id = await running_run(services)
            async with trio.open_nursery() as nursery:
                connected = trio.Semaphore(0)

                async def watch():
                    async with open_ws(server, f"/api/v1/runs/{run_id}/events/ws", cookie=session) as ws:
                        await ws.get_message()
                        connected.release()
                        await trio.sleep_forever()

                for _ in range(200):
                    nursery.start_soon(watch)
                for _ in range(200):
                    await connected.acquire()
                while services.bus.subscriber_count(run_id) < 200 or not _startup_passes_done(caplog):
                    await trio.sleep(0.01)
                # The sleeper runs; the scheduler waits on its wakeup (its safety net is 60 s away).
                scheduler = services.scheduler.statistics()
                assert scheduler.running == 1 and not scheduler.claiming
                before = services.store.statistics().statements
                await trio.sleep(5)
                after = services.store.statistics().statements
                nursery.cancel_scope.cancel()
    assert after == before


@pytest.mark.parametrize(
    ("path", "origin", "use_cookie", "code"),
    [
        ("/api/v1/runs/{run}/events/ws", None, False, 4401),
        ("/api/v1/runs/{run}/events/ws", "http://evil.example", True, 4403),
        ("/api/v1/runs/424242/events/ws", None, True, 4404),
        ("/api/v1/runs/{run}/events/ws?after_seq=-1", None, True, 4400),
        ("/api/v1/runs/{run}/events/ws?after_seq=abc", None, True, 4400),
        ("/api/v1/runs/feed/ws", None, False, 4401),
        ("/api/v1/runs/feed/ws", "http://evil.example", True, 4403),
    ],
)
async def test_refusals_are_close_codes(server, session, path, origin, use_cookie, code):
    """Each refusal is a close code after the handshake, with a reason."""
    with trio.fail_after(20):
        run_id = await running_run(server.services)
        cookie = session if use_cookie else None
        async with open_ws(server, path.format(run=run_id), cookie=cookie, origin=origin) as ws:
            _, _, closed = await read_all(ws)
    assert closed == code


async def test_own_origin_is_accepted(server, session):
    """A browser Origin equal to the server's own origin is allowed."""
    with trio.fail_after(20):
        run_id = await running_run(server.services)
        async with open_ws(server, f"/api/v1/runs/{run_id}/events/ws", cookie=session, origin=server.url) as ws:
            frame = json.loads(await ws.get_message())
    assert frame["events"][0]["seq"] == 1


@pytest.mark.parametrize(("message", "code"), [(b"\x00\x01", 1003), ("hello", 1008)])
async def test_garbage_from_client_closes(server, session, message, code):
    """A client that sends data the protocol does not have is closed with 1003/1008."""
    with trio.fail_after(20):
        run_id = await running_run(server.services)
        async with open_ws(server, f"/api/v1/runs/{run_id}/events/ws", cookie=session) as ws:
            await ws.get_message()
            await ws.send_message(message)
            _, _, closed = await read_all(ws)
    assert closed == code


async def test_finished_run_past_end_gets_end_at_once(server, session):
    """after_seq at or past the end of a finished run: `end` at once, then 1000."""
    services = server.services
    with trio.fail_after(20):
        run_id = await running_run(services)
        await services.runs.cancel(run_id, by="t")
        while (await services.runs.get(run_id)).status == "running":
            await trio.sleep(0.02)
        last = (await services.runs.get(run_id)).last_seq
        async with open_ws(server, f"/api/v1/runs/{run_id}/events/ws?after_seq={last + 5}", cookie=session) as ws:
            seqs, end, code = await read_all(ws)
    assert seqs == [] and end == {"type": "end", "last_seq": last} and code == 1000


async def test_deleted_run_closes_watchers_4404(server, session):
    """When retention deletes a watched run, its watchers are closed with 4404."""
    services = server.services
    with trio.fail_after(20):
        run_id = await running_run(services)
        async with open_ws(server, f"/api/v1/runs/{run_id}/events/ws", cookie=session) as ws:
            await ws.get_message()
            services.runs.runs_deleted([run_id])
            _, _, code = await read_all(ws)
    assert code == 4404
    assert services.bus.subscriber_count(run_id) == 0


@pytest.mark.slow
async def test_shutdown_closes_sockets_with_1001(tmp_path):
    """On shutdown every open WebSocket is closed with 1001, before the drain window ends."""
    settings = make_settings(tmp_path, drain_s=2)
    with trio.fail_after(30):
        async with running_server(settings) as server:
            cookie = await operator_cookie(server)
            run_id = await running_run(server.services)
            async with open_ws(server, f"/api/v1/runs/{run_id}/events/ws", cookie=cookie) as ws, \
                    open_ws(server, "/api/v1/runs/feed/ws", cookie=cookie) as feed:
                await ws.get_message()
                server.request_shutdown()
                asked = trio.current_time()
                _, _, code = await read_all(ws)
                closed_after = trio.current_time() - asked
                with pytest.raises(trio_websocket.ConnectionClosed) as feed_closed:
                    while True:
                        await feed.get_message()
    assert code == 1001
    assert closed_after < 1.0  # at the start of shutdown, not after the 2 s drain
    assert feed_closed.value.reason.code == 1001


async def test_runs_feed_reports_create_and_status_changes(server, session, client):
    """The feed pushes the run on creation and on each status change."""
    with trio.fail_after(20):
        async with open_ws(server, "/api/v1/runs/feed/ws", cookie=session, queue=16) as feed:
            csrf = (await client.get("/api/v1/auth/me")).json()["csrf_token"]
            response = await client.post("/api/v1/runs", json={"command": [PY, "-c", "pass"]},
                                         headers={"X-CSRF-Token": csrf})
            run_id = response.json()["run"]["id"]
            statuses = []
            while not statuses or statuses[-1] not in ("succeeded", "failed"):
                frame = json.loads(await feed.get_message())
                assert frame["type"] == "run"
                if frame["run"]["id"] == run_id:
                    statuses.append(frame["run"]["status"])
    assert statuses == ["queued", "running", "succeeded"]


async def test_silent_peer_is_dropped(tmp_path):
    """A peer that completes the handshake and then never answers pings is disconnected."""
    settings = make_settings(tmp_path, ws_ping_interval_s=0.2, ws_ping_timeout_s=0.5)

    with trio.fail_after(30):
        async with running_server(settings) as server:
            cookie = await operator_cookie(server)
            run_id = await running_run(server.services)
            host, port = server.url.removeprefix("http://").split(":")
            async with await trio.open_tcp_stream(host, int(port)) as stream:
                request = (
                    f"GET /api/v1/runs/{run_id}/events/ws HTTP/1.1\r\nHost: {host}:{port}\r\n"
                    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                    f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nCookie: runsvc_session={cookie}\r\n\r\n"
                )
                await stream.send_all(request.encode())
                while server.services.bus.subscriber_count(run_id) != 1:
                    await trio.sleep(0.01)
                # From now on the peer reads what arrives (pings included) but never writes: no pongs.
                start = trio.current_time()
                while await stream.receive_some(65536):
                    pass
                elapsed = trio.current_time() - start
            while server.services.bus.subscriber_count(run_id) != 0:
                await trio.sleep(0.01)
    assert elapsed < 10


async def test_client_ping_message_is_tolerated(server, session):
    """A `{"type": "ping"}` text frame from the client does not close the socket."""
    with trio.fail_after(20):
        run_id = await running_run(server.services)
        async with open_ws(server, f"/api/v1/runs/{run_id}/events/ws", cookie=session) as ws:
            await ws.get_message()
            await ws.send_message('{"type": "ping"}')
            await server.services.eventlog.append(run_id, [("stdout", "after ping")])
            frame = json.loads(await ws.get_message())
    assert frame["events"][0]["data"] == "after ping"


async def test_slow_feed_client_is_closed_with_1013(server, session):
    """A runs-feed client that stops reading is dropped (1013) instead of buffered without bound;
    it first receives what was already on its way."""
    feed = server.services.runs.feed
    with trio.fail_after(30):
        async with open_ws(server, "/api/v1/runs/feed/ws", cookie=session) as ws:
            while feed.statistics().watchers == 0:
                await trio.sleep(0.01)
            for i in range(5000):  # ~10 MB: more than the socket buffers and the watcher's channel
                feed.publish(Run(
                    id=i, name="x" * 2000, command=("true",), env=None, status="queued", exit_code=None,
                    created_at="2026-01-01T00:00:00Z", started_at=None, ended_at=None, created_by="t",
                    last_seq=1, timeout_s=60.0, labels=(), executor=None, attempt=0,
                ))
                if i % 50 == 0:
                    await trio.lowlevel.checkpoint()
            assert feed.statistics().dropped_watchers == 1
            received = 0
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                while True:
                    await ws.get_message()
                    received += 1
    assert closed.value.reason.code == 1013
    assert 0 < received < 5000


async def _stalled_client(server, cookie, run_id, connected: trio.Event):
    """A client that reads one frame and then nothing at all (its socket buffers fill up)."""
    url = server.url.replace("http://", "ws://") + f"/api/v1/runs/{run_id}/events/ws"
    headers = [(b"Cookie", f"runsvc_session={cookie}".encode())]
    async with open_websocket(url, extra_headers=headers) as ws:
        await ws.get_message()
        connected.set()
        await trio.sleep_forever()


async def _flood(services, run_id, events=100_000):
    for _ in range(0, events, 500):
        await services.eventlog.append(run_id, [("stdout", "y" * 100)] * 500)


@pytest.mark.slow
async def test_client_that_stops_reading_is_dropped_by_keepalive(tmp_path):
    """A client that stops reading (so stops answering pings) while output floods in is dropped
    after the keepalive timeout, and its handler and subscription go away."""
    settings = make_settings(tmp_path, ws_ping_timeout_s=1.0)
    with trio.fail_after(60):
        async with running_server(settings) as server:
            cookie = await operator_cookie(server)
            run_id = await running_run(server.services)
            async with trio.open_nursery() as nursery:
                connected = trio.Event()
                nursery.start_soon(_stalled_client, server, cookie, run_id, connected)
                await connected.wait()
                await _flood(server.services, run_id)
                while server.services.bus.subscriber_count(run_id):
                    await trio.sleep(0.05)
                nursery.cancel_scope.cancel()


@pytest.mark.slow
async def test_client_that_stops_reading_does_not_hold_up_shutdown(tmp_path):
    """Shutdown finishes even while a client that stopped reading has sends pending."""
    settings = make_settings(tmp_path)  # keepalive 20 s: longer than the test allows
    stopped = trio.Event()

    async def run_server(task_status):
        await serve(settings, password_hasher=FAST_HASHER, task_status=task_status)
        stopped.set()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(run_server)
            cookie = await operator_cookie(server)
            run_id = await running_run(server.services)
            connected = trio.Event()
            nursery.start_soon(_stalled_client, server, cookie, run_id, connected)
            await connected.wait()
            await _flood(server.services, run_id)
            server.request_shutdown()
            await stopped.wait()
            nursery.cancel_scope.cancel()
