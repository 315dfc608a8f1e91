"""Secrets on agents (SPEC §17), with a hand-played agent that does not mask anything: the server masks
every line an agent sends before it is stored, and tells the agent which variables hold secrets."""

from __future__ import annotations

import trio

from tests.agents.fake_agent import admin_server, agent_socket, enroll, receive, send
from tests.helpers import wait_status

VALUE = "ghp_0123456789abcdefXYZ"


async def test_server_masks_agent_output_and_names_the_secret_variables(tmp_path):
    """The assignment carries the value in `env` and the variable in `masked`; raw output holding the
    value (in a line, at a chunk's start and end, with a multi-byte neighbour) is stored masked."""
    with trio.fail_after(30):
        async with admin_server(tmp_path) as (server, client):
            assert (await client.post("/api/v1/secrets", json={"name": "gh", "value": VALUE})).status_code == 201
            enrolled = await enroll(client)
            async with agent_socket(server.url, enrolled["secret"]) as ws:
                await receive(ws, "welcome")
                await send(ws, type="hello", capacity=1, runs=[])
                run = (await client.post("/api/v1/runs", json={"command": ["x"], "env": {"A": "1"},
                                                               "secrets": {"TOKEN": "gh"}})).json()["run"]
                assign = await receive(ws, "assign")
                assert assign["env"] == {"A": "1", "TOKEN": VALUE} and assign["masked"] == ["TOKEN"]
                lines = [["stdout", f"token {VALUE}"], ["stderr", f"{VALUE}é{VALUE}"], ["stdout", "clean"]]
                await send(ws, type="output", run_id=run["id"], attempt=1, chunk=1, lines=lines)
                assert (await receive(ws, "ack"))["chunk"] == 1
                await send(ws, type="finished", run_id=run["id"], attempt=1, last_chunk=1, status="succeeded",
                           exit_code=0, reason=None)
                await receive(ws, "ack")
            await wait_status(client, run["id"])
            events = (await client.get(f"/api/v1/runs/{run['id']}/events")).json()["events"]
    assert [(e["kind"], e["data"]) for e in events if e["kind"] in ("stdout", "stderr")] == [
        ("stdout", "token ***"), ("stderr", "***é***"), ("stdout", "clean"),
    ]
