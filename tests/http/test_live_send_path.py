"""The WebSocket sender's write path (issue 13): frames go straight through the ASGI `send` callable, and a
run's events arrive exactly once, in order, by that path."""

from __future__ import annotations

import httpx
import pytest
import trio

from runsvc.http import websockets
from tests.helpers import add_user, login
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
    last = (await services.runs.get(run_id))["last_seq"]
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
