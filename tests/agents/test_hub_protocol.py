"""The agent protocol against a real in-process server, spoken by a real WebSocket client playing the
agent (so it can misbehave on demand: stale attempts, resends, a finished report too early)."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager

import httpx
import pytest
import trio
import trio_websocket

from tests.conftest import make_settings
from tests.helpers import add_user, assert_error, login, open_websocket, running_server, wait_status


@asynccontextmanager
async def _admin(tmp_path, **overrides):
    settings = make_settings(tmp_path, local_executor=False, **overrides)
    async with running_server(settings) as server:
        await add_user(server, "root", "admin")
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            client.headers["X-CSRF-Token"] = await login(client, "root")
            yield server, client


async def _enroll(client, name="fake", labels=()):
    token = (await client.post("/api/v1/enrollment-tokens", json={"labels": list(labels)})).json()["token"]
    response = await client.post("/api/v1/agents/enroll", json={"token": token, "name": name})
    assert response.status_code == 201, response.text
    return response.json()


@asynccontextmanager
async def _agent_socket(server, secret):
    url = server.url.replace("http://", "ws://") + "/api/v1/agents/ws"
    async with open_websocket(url, extra_headers=[("Authorization", f"Bearer {secret}")]) as ws:
        yield ws


async def _receive(ws, kind):
    """The next message of `kind`, skipping pings."""
    while True:
        message = json.loads(await ws.get_message())
        if message["type"] == kind:
            return message
        assert message["type"] == "ping", message


async def _send(ws, **message):
    await ws.send_message(json.dumps(message))


async def test_fencing_resend_and_finished(tmp_path):
    """Output for another attempt is ignored (and the agent told to forget it); a chunk sent twice is
    acknowledged twice and stored once; `finished` is refused until its chunks are stored."""
    with trio.fail_after(30):
        async with _admin(tmp_path) as (server, client):
            enrolled = await _enroll(client)
            async with _agent_socket(server, enrolled["secret"]) as ws:
                welcome = await _receive(ws, "welcome")
                assert welcome["agent"]["name"] == "fake"
                await _send(ws, type="hello", capacity=1, runs=[])
                run = (await client.post("/api/v1/runs", json={"command": ["whatever"]})).json()["run"]
                assign = await _receive(ws, "assign")
                assert (assign["run_id"], assign["attempt"], assign["command"]) == (run["id"], 1, ["whatever"])

                await _send(ws, type="output", run_id=run["id"], attempt=7, chunk=1, lines=[["stdout", "zombie"]])
                cancel = await _receive(ws, "cancel")
                assert cancel == {"type": "cancel", "run_id": run["id"], "attempt": 7, "forget": True}

                await _send(ws, type="finished", run_id=run["id"], attempt=1, last_chunk=1, status="succeeded",
                            exit_code=0, reason=None)  # too early: chunk 1 is not stored
                for _ in range(2):
                    await _send(ws, type="output", run_id=run["id"], attempt=1, chunk=1, lines=[["stdout", "one"]])
                    assert (await _receive(ws, "ack"))["chunk"] == 1
                await _send(ws, type="output", run_id=run["id"], attempt=1, chunk=2, lines=[["stderr", "two"]])
                assert (await _receive(ws, "ack"))["chunk"] == 2
                await _send(ws, type="finished", run_id=run["id"], attempt=1, last_chunk=2, status="failed",
                            exit_code=3, reason="exited with code 3")
                ack = await _receive(ws, "ack")
                assert ack == {"type": "ack", "run_id": run["id"], "attempt": 1, "chunk": 2, "finished": True}
            done = await wait_status(client, run["id"])
            events = (await client.get(f"/api/v1/runs/{run['id']}/events")).json()["events"]
    assert (done["status"], done["exit_code"], done["executor"]) == ("failed", 3, "agent:fake")
    assert [(e["kind"], e["data"]) for e in events if e["kind"] != "state"] == [("stdout", "one"), ("stderr", "two")]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


async def test_hello_settles_lost_and_stale_runs(tmp_path):
    """On reconnect, a run the agent no longer holds ends interrupted ("agent lost"); a run it holds
    that is not current gets `cancel`."""
    with trio.fail_after(30):
        async with _admin(tmp_path) as (server, client):
            enrolled = await _enroll(client)
            async with _agent_socket(server, enrolled["secret"]) as ws:
                await _receive(ws, "welcome")
                await _send(ws, type="hello", capacity=1, runs=[])
                run = (await client.post("/api/v1/runs", json={"command": ["x"]})).json()["run"]
                await _receive(ws, "assign")
            async with _agent_socket(server, enrolled["secret"]) as ws:
                await _receive(ws, "welcome")
                await _send(ws, type="hello", capacity=1, runs=[{"run_id": 999, "attempt": 1, "acked_chunk": 0}])
                assert (await _receive(ws, "cancel"))["run_id"] == 999
                done = await wait_status(client, run["id"])
    assert done["status"] == "interrupted"


async def test_bad_secret_and_protocol_errors_close_the_socket(tmp_path):
    """An unknown secret is closed with 4401; a frame outside the protocol with 1008."""
    with trio.fail_after(30):
        async with _admin(tmp_path) as (server, client):
            async with _agent_socket(server, "rsa_wrong") as ws:
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    await ws.get_message()
            assert closed.value.reason.code == 4401
            enrolled = await _enroll(client)
            async with _agent_socket(server, enrolled["secret"]) as ws:
                await _receive(ws, "welcome")
                await ws.send_message('{"type": "nonsense"}')
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    while True:
                        await ws.get_message()
            assert closed.value.reason.code == 1008


async def test_enrollment_checks_in_order(tmp_path):
    """Malformed body 400, then the token 401, then a taken name 409 (the token stays usable)."""
    with trio.fail_after(30):
        async with _admin(tmp_path) as (server, client):
            await _enroll(client, name="taken")
            token = (await client.post("/api/v1/enrollment-tokens", json={"labels": ["gpu"]})).json()
            assert token["enrollment_token"]["labels"] == ["gpu"] and token["token"].startswith("rse_")
            enroll = "/api/v1/agents/enroll"
            assert_error(await client.post(enroll, json={"token": "x", "name": "bad name"}), 400, "invalid_request")
            assert_error(await client.post(enroll, json={"token": "x", "name": "n", "labels": ["a b"]}), 400,
                         "invalid_request")
            assert_error(await client.post(enroll, json={"token": "x", "name": "taken"}), 401, "unauthenticated")
            assert_error(await client.post(enroll, json={"token": token["token"], "name": "taken"}), 409, "conflict")
            response = await client.post(enroll, json={"token": token["token"], "name": "fresh", "labels": ["cpu"]})
            assert response.status_code == 201
            assert response.json()["agent"]["labels"] == ["gpu"]  # the token's labels win
            assert_error(await client.post("/api/v1/enrollment-tokens", json={"ttl_s": 7 * 86400 + 1}), 400,
                         "invalid_request")
            tokens = (await client.get("/api/v1/enrollment-tokens")).json()["enrollment_tokens"]
            assert (await client.delete(f"/api/v1/enrollment-tokens/{tokens[0]['id']}")).status_code == 204
            assert_error(await client.delete(f"/api/v1/enrollment-tokens/{tokens[0]['id']}"), 404, "not_found")
