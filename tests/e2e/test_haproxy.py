"""runsvc behind a real load balancer (Debian's haproxy, tests/e2e/haproxy.py): one server for now, the
setup the replicas' tests (SPEC §16) will put two behind."""

from __future__ import annotations

import json
import signal

import trio
import trio_websocket

from tests.e2e.agent_helpers import PY, admin_client, enrolled_agent, submit, wait_status
from tests.e2e.haproxy import running_haproxy
from tests.helpers import TERMINAL, open_websocket, start_server, unused_port


async def _follow(ws, events: list[dict]) -> bool:
    """Frames of a run-event socket into `events` until the socket closes; whether `end` came."""
    try:
        while True:
            frame = json.loads(await ws.get_message())
            if frame["type"] == "end":
                return True
            events.extend(frame["events"])
    except trio_websocket.ConnectionClosed:
        return False


async def test_one_server_behind_haproxy_survives_a_restart_and_watchers_resume(tmp_path):
    """Through haproxy: login and API requests, an agent's enrollment and socket, a run followed over its
    event WebSocket; the server is killed (haproxy's /healthz checks mark it down, requests get 503) and
    restarted on the same port (marked up again); the agent's run goes on and the watcher, reconnecting
    through haproxy with its last seq, gets every event once, in order, up to `end`."""
    port = unused_port()
    args = ("--local-executor", "false", "--agent-lease-s", "10", "--port", str(port))
    gate = tmp_path / "gate"
    script = ("import os, sys, time\nfor i in range(2000):\n    print(f'line {i}')\n"
              "    if i % 100 == 0: sys.stdout.flush(); time.sleep(0.02)\n"
              f"    if i == 1000:\n        sys.stdout.flush()\n"
              f"        while not os.path.exists({str(gate)!r}): time.sleep(0.05)\n")
    events: list[dict] = []
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, tmp_path / "data", *args)
            async with running_haproxy([server.url]) as proxy:
                assert await proxy.wait_server("s0", "UP") == ("UP", "L7OK")
                async with admin_client(proxy.url) as client:
                    assert (await client.get("/api/v1/runs")).json()["runs"] == []
                    agent = await enrolled_agent(nursery, client, proxy.url, tmp_path / "a", "behind")
                    run = await submit(client, [PY, "-c", script])
                    socket_url = proxy.url.replace("http://", "ws://") + f"/api/v1/runs/{run['id']}/events/ws"
                    cookie = [(b"Cookie", f"runsvc_session={client.cookies['runsvc_session']}".encode())]

                    async with open_websocket(f"{socket_url}?after_seq=0", extra_headers=cookie) as ws:
                        while sum(e["kind"] == "stdout" for e in events) < 1001:  # the run waits at the gate
                            frame = json.loads(await ws.get_message())
                            assert frame["type"] == "events", frame
                            events.extend(frame["events"])
                        server.send_signal(signal.SIGKILL)
                        await server.wait()
                        assert not await _follow(ws, events)  # closed by haproxy, without `end`

                    assert (await proxy.wait_server("s0", "DOWN"))[1].startswith("L4")
                    assert (await client.get("/api/v1/runs")).status_code == 503  # haproxy: no server
                    server = await start_server(nursery, tmp_path / "data", *args)
                    assert await proxy.wait_server("s0", "UP") == ("UP", "L7OK")
                    await agent.wait_for("msg=connected", 2)
                    assert (await client.get(f"/api/v1/runs/{run['id']}")).json()["run"]["status"] == "running"

                    gate.touch()
                    async with open_websocket(f"{socket_url}?after_seq={events[-1]['seq']}",
                                              extra_headers=cookie) as ws:
                        assert await _follow(ws, events)
                    done = await wait_status(client, run["id"], TERMINAL)
                    agent.process.send_signal(signal.SIGTERM)
                    assert await agent.process.wait() == 0
                    assert [r["id"] for r in (await client.get("/api/v1/runs")).json()["runs"]] == [run["id"]]
            server.send_signal(signal.SIGTERM)
            assert await server.wait() == 0
    assert done["status"] == "succeeded" and done["executor"] == "agent:behind"
    assert [e["seq"] for e in events] == list(range(1, done["last_seq"] + 1))
    assert [e["data"] for e in events if e["kind"] == "stdout"] == [f"line {i}" for i in range(2000)]
