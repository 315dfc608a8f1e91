"""Helpers for tests that play the agent by hand: a real in-process server, and a real WebSocket client
speaking the agent protocol (so it can misbehave on demand)."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager

import httpx
import pytest
import trio_websocket

from tests.conftest import make_settings
from tests.helpers import add_user, login, open_websocket, running_server


@asynccontextmanager
async def admin_server(tmp_path, **overrides):
    """(server, client): an in-process server without local executor, and an admin's HTTP client."""
    settings = make_settings(tmp_path, local_executor=False, **overrides)
    async with running_server(settings) as server:
        await add_user(server, "root", "admin")
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            client.headers["X-CSRF-Token"] = await login(client, "root")
            yield server, client


async def enroll(client, name="fake", labels=()) -> dict:
    """A new agent (`{agent, secret}`) enrolled with a fresh token."""
    token = (await client.post("/api/v1/enrollment-tokens", json={"labels": list(labels)})).json()["token"]
    response = await client.post("/api/v1/agents/enroll", json={"token": token, "name": name})
    assert response.status_code == 201, response.text
    return response.json()


@asynccontextmanager
async def agent_socket(url: str, secret: str):
    """The agent WebSocket of the server at `url`, authenticated with `secret`."""
    ws_url = url.replace("http://", "ws://") + "/api/v1/agents/ws"
    async with open_websocket(ws_url, extra_headers=[("Authorization", f"Bearer {secret}")]) as ws:
        yield ws


async def receive(ws, kind: str) -> dict:
    """The next message of `kind`, skipping pings."""
    while True:
        message = json.loads(await ws.get_message())
        if message["type"] == kind:
            return message
        assert message["type"] == "ping", message


async def send(ws, **message) -> None:
    await ws.send_message(json.dumps(message))


async def close_code(ws) -> int:
    """Read until the server closes the socket; its close code."""
    with pytest.raises(trio_websocket.ConnectionClosed) as closed:
        while True:
            await ws.get_message()
    return closed.value.reason.code


async def assigned(ws, client, command=("whatever",)) -> dict:
    """Say hello (capacity 1, holding nothing), submit a run, return its `assign`."""
    await receive(ws, "welcome")
    await send(ws, type="hello", capacity=1, runs=[])
    run = (await client.post("/api/v1/runs", json={"command": list(command)})).json()["run"]
    assign = await receive(ws, "assign")
    assert assign["run_id"] == run["id"]
    return assign
