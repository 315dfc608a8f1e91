"""The agent protocol against a real in-process server, spoken by a real WebSocket client playing the
agent (so it can misbehave on demand: stale attempts, resends, a finished report too early)."""

from __future__ import annotations

import trio

from tests.agents.fake_agent import admin_server, agent_socket, close_code, enroll, receive, send
from tests.helpers import assert_error, wait_status


async def test_fencing_resend_and_finished(tmp_path):
    """Output for another attempt is ignored (and the agent told to forget it); a chunk sent twice is
    acknowledged twice and stored once; `finished` is refused until its chunks are stored."""
    with trio.fail_after(30):
        async with admin_server(tmp_path) as (server, client):
            enrolled = await enroll(client)
            async with agent_socket(server.url, enrolled["secret"]) as ws:
                welcome = await receive(ws, "welcome")
                assert welcome["agent"]["name"] == "fake"
                await send(ws, type="hello", capacity=1, runs=[])
                run = (await client.post("/api/v1/runs", json={"command": ["whatever"]})).json()["run"]
                assign = await receive(ws, "assign")
                assert (assign["run_id"], assign["attempt"], assign["command"]) == (run["id"], 1, ["whatever"])

                await send(ws, type="output", run_id=run["id"], attempt=7, chunk=1, lines=[["stdout", "zombie"]])
                cancel = await receive(ws, "cancel")
                assert cancel == {"type": "cancel", "run_id": run["id"], "attempt": 7, "forget": True}

                await send(ws, type="finished", run_id=run["id"], attempt=1, last_chunk=1, status="succeeded",
                            exit_code=0, reason=None)  # too early: chunk 1 is not stored
                for _ in range(2):
                    await send(ws, type="output", run_id=run["id"], attempt=1, chunk=1, lines=[["stdout", "one"]])
                    assert (await receive(ws, "ack"))["chunk"] == 1
                await send(ws, type="output", run_id=run["id"], attempt=1, chunk=2, lines=[["stderr", "two"]])
                assert (await receive(ws, "ack"))["chunk"] == 2
                await send(ws, type="finished", run_id=run["id"], attempt=1, last_chunk=2, status="failed",
                            exit_code=3, reason="exited with code 3")
                ack = await receive(ws, "ack")
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
        async with admin_server(tmp_path) as (server, client):
            enrolled = await enroll(client)
            async with agent_socket(server.url, enrolled["secret"]) as ws:
                await receive(ws, "welcome")
                await send(ws, type="hello", capacity=1, runs=[])
                run = (await client.post("/api/v1/runs", json={"command": ["x"]})).json()["run"]
                await receive(ws, "assign")
            async with agent_socket(server.url, enrolled["secret"]) as ws:
                await receive(ws, "welcome")
                await send(ws, type="hello", capacity=1, runs=[{"run_id": 999, "attempt": 1, "acked_chunk": 0}])
                assert (await receive(ws, "cancel"))["run_id"] == 999
                done = await wait_status(client, run["id"])
    assert done["status"] == "interrupted"


async def test_bad_secret_and_protocol_errors_close_the_socket(tmp_path):
    """An unknown secret is closed with 4401; a frame outside the protocol with 1008."""
    with trio.fail_after(30):
        async with admin_server(tmp_path) as (server, client):
            async with agent_socket(server.url, "rsa_wrong") as ws:
                assert await close_code(ws) == 4401
            enrolled = await enroll(client)
            async with agent_socket(server.url, enrolled["secret"]) as ws:
                await receive(ws, "welcome")
                await ws.send_message('{"type": "nonsense"}')
                assert await close_code(ws) == 1008


async def test_enrollment_checks_in_order(tmp_path):
    """Malformed body 400, then the token 401, then a taken name 409 (the token stays usable)."""
    with trio.fail_after(30):
        async with admin_server(tmp_path) as (server, client):
            await enroll(client, name="taken")
            token = (await client.post("/api/v1/enrollment-tokens", json={"labels": ["gpu"]})).json()
            assert token["enrollment_token"]["labels"] == ["gpu"] and token["token"].startswith("rse_")
            url = "/api/v1/agents/enroll"
            assert_error(await client.post(url, json={"token": "x", "name": "bad name"}), 400, "invalid_request")
            assert_error(await client.post(url, json={"token": "x", "name": "n", "labels": ["a b"]}), 400,
                         "invalid_request")
            assert_error(await client.post(url, json={"token": "x", "name": "taken"}), 401, "unauthenticated")
            assert_error(await client.post(url, json={"token": token["token"], "name": "taken"}), 409, "conflict")
            response = await client.post(url, json={"token": token["token"], "name": "fresh", "labels": ["cpu"]})
            assert response.status_code == 201
            assert response.json()["agent"]["labels"] == ["gpu"]  # the token's labels win
            assert_error(await client.post("/api/v1/enrollment-tokens", json={"ttl_s": 7 * 86400 + 1}), 400,
                         "invalid_request")
            tokens = (await client.get("/api/v1/enrollment-tokens")).json()["enrollment_tokens"]
            assert (await client.delete(f"/api/v1/enrollment-tokens/{tokens[0]['id']}")).status_code == 204
            assert_error(await client.delete(f"/api/v1/enrollment-tokens/{tokens[0]['id']}"), 404, "not_found")
