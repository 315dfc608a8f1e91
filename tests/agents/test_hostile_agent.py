"""Hostile agents (issue 20): frames an agent may send that must not reach SQLite, the event log or the
server's memory unchecked. A real in-process server; the agent is a hand-played real WebSocket."""

from __future__ import annotations

import json

import trio
import trio_websocket

from runsvc.executors.lines import LineSplitter
from tests.agents.fake_agent import admin_server, agent_socket, assigned, close_code, enroll, receive, send
from tests.helpers import wait_status
from tests.http.test_live import open_ws

MAX_INT64 = 2**63 - 1


def _finished(run_id: int, **fields) -> dict:
    return {"type": "finished", "run_id": run_id, "attempt": 1, "last_chunk": 0, "status": "failed",
            "exit_code": 3, "reason": "exited with code 3", **fields}


async def _refused(url: str, secret: str, frame: str) -> int:
    """Open a new connection, send `frame` before anything else; the close code it gets."""
    async with agent_socket(url, secret) as ws:
        await receive(ws, "welcome")
        await ws.send_message(frame)
        return await close_code(ws)


async def _finish_normally(url: str, secret: str, run_id: int) -> None:
    """A well-behaved connection that still holds `run_id` reports it finished (exit code 3)."""
    async with agent_socket(url, secret) as ws:
        await receive(ws, "welcome")
        await send(ws, type="hello", capacity=1, runs=[{"run_id": run_id, "attempt": 1, "acked_chunk": 0}])
        await send(ws, **_finished(run_id))
        assert (await receive(ws, "ack"))["finished"] is True


async def test_out_of_range_integers_close_the_socket_and_nothing_else(tmp_path):
    """Issue 20 #1: `finished` with exit code 2**63 (and every other integer beyond what the schema holds
    or an exit code can be) closes that agent's socket with 1008; the server goes on and the run can still
    finish normally."""
    with trio.fail_after(30):
        async with admin_server(tmp_path) as (server, client):
            secret = (await enroll(client))["secret"]
            async with agent_socket(server.url, secret) as ws:
                run_id = (await assigned(ws, client))["run_id"]
                await send(ws, **_finished(run_id, exit_code=2**63))
                assert await close_code(ws) == 1008
            output = {"type": "output", "run_id": run_id, "attempt": 1, "chunk": 1, "lines": []}
            bad = [
                _finished(run_id, exit_code=256), _finished(run_id, exit_code=-256),
                _finished(run_id, last_chunk=MAX_INT64 + 1), _finished(MAX_INT64 + 1),
                {**output, "run_id": 2**64}, {**output, "attempt": MAX_INT64 + 1}, {**output, "chunk": 2**70},
                {"type": "hello", "capacity": 2**63, "runs": []},
                {"type": "hello", "capacity": 1, "runs": [{"run_id": 10**4000, "attempt": 1, "acked_chunk": 0}]},
            ]
            for frame in bad:
                assert await _refused(server.url, secret, json.dumps(frame)) == 1008, frame
            await _finish_normally(server.url, secret, run_id)
            done = await wait_status(client, run_id)
            assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (done["status"], done["exit_code"]) == ("failed", 3)


async def test_lone_surrogates_close_the_socket(tmp_path):
    """Issue 20 #2 and #8: a lone surrogate anywhere in a frame (a line, `finished.reason`, a key) closes
    the socket with 1008 and is never stored; a watcher then sees the run's real end."""
    with trio.fail_after(30):
        async with admin_server(tmp_path) as (server, client):
            secret = (await enroll(client))["secret"]
            async with agent_socket(server.url, secret) as ws:
                run_id = (await assigned(ws, client))["run_id"]
                await send(ws, **_finished(run_id, reason="exited \ud800"))
                assert await close_code(ws) == 1008
            bad = [
                {"type": "output", "run_id": run_id, "attempt": 1, "chunk": 1, "lines": [["stdout", "a\udfff"]]},
                {"type": "hello", "capacity": 1, "runs": [], "\ud83d": 1},
            ]
            for frame in bad:
                assert await _refused(server.url, secret, json.dumps(frame)) == 1008, frame
            watch = f"/api/v1/runs/{run_id}/events/ws"
            async with open_ws(server, watch, cookie=client.cookies["runsvc_session"], queue=100) as watcher:
                await _finish_normally(server.url, secret, run_id)
                ends: list[dict] = []
                while not ends:
                    frame = json.loads(await watcher.get_message())
                    assert frame["type"] == "events", frame
                    ends = [e for e in frame["events"] if e["kind"] == "state" and e["data"]["status"] == "failed"]
    assert ends[0]["data"]["reason"] == "exited with code 3"


async def test_agent_output_follows_the_rules_of_local_output(tmp_path):
    """Issue 20 #8: `system` lines from an agent are not stored; a line holding `\\n` or `\\r\\n` becomes
    several lines and a line over 16 KiB is cut, exactly as the local executor's splitter does; the output
    cap counts all an agent stores; `finished.reason` is cut to a bounded length."""
    cap = 100_000
    long_ascii, long_wide = "x" * 40_000, "é" * 10_000  # 40,000 and 20,000 bytes of UTF-8
    with trio.fail_after(30):
        async with admin_server(tmp_path, output_cap_bytes=cap) as (server, client):
            secret = (await enroll(client))["secret"]
            async with agent_socket(server.url, secret) as ws:
                run_id = (await assigned(ws, client))["run_id"]
                lines = [["system", "[runsvc] run succeeded"], ["stdout", "a\nb\r\nc"], ["stderr", long_ascii],
                         ["stdout", long_wide], ["stdout", ""]]
                await send(ws, type="output", run_id=run_id, attempt=1, chunk=1, lines=lines)
                assert (await receive(ws, "ack"))["chunk"] == 1
                await send(ws, **_finished(run_id, last_chunk=1, reason="r" * 5000))
                await receive(ws, "ack")
                first = await wait_status(client, run_id)
                events = (await client.get(f"/api/v1/runs/{run_id}/events")).json()["events"]

                capped = (await client.post("/api/v1/runs", json={"command": ["chatty"]})).json()["run"]["id"]
                assert (await receive(ws, "assign"))["run_id"] == capped
                for chunk in range(1, 11):  # 10 x 20 x 1,000 characters of `system`: twice the cap
                    await send(ws, type="output", run_id=capped, attempt=1, chunk=chunk,
                               lines=[["system", "s" * 999]] * 20 + [["stdout", "o" * 99]])
                    assert (await receive(ws, "ack"))["chunk"] == chunk
                await send(ws, **_finished(capped, last_chunk=10))
                await receive(ws, "ack")
                await wait_status(client, capped)
                stored = (await client.get(f"/api/v1/runs/{capped}/events")).json()["events"]

    def local(text: str) -> list[str]:
        return LineSplitter().feed(text.encode() + b"\n")

    output = [(e["kind"], e["data"]) for e in events if e["kind"] != "state"]
    assert output == ([("stdout", "a"), ("stdout", "b"), ("stdout", "c")]
                      + [("stderr", piece) for piece in local(long_ascii)]
                      + [("stdout", piece) for piece in local(long_wide)] + [("stdout", "")])
    assert [len(piece) for piece in local(long_ascii)] == [16384, 16384, 7232]
    reason = events[-1]["data"]["reason"]
    assert first["status"] == "failed" and len(reason) <= 1024 and reason.startswith("rrr"), reason
    assert not [e for e in stored if e["kind"] == "system" and e["data"].startswith("s")]
    assert sum(len(e["data"]) + 1 for e in stored if e["kind"] == "stdout") <= cap
    assert [e["data"] for e in stored if e["kind"] == "stdout"] == ["o" * 99] * 10


async def test_stale_report_flood_is_bounded(tmp_path, caplog):
    """Issue 20 #9: thousands of reports for runs the agent does not hold, each with a new id: the agent is
    closed (1008) after a bounded number of them, and the warnings about them stay few."""
    frames = 5000
    cancels = 0
    with trio.fail_after(60):
        async with admin_server(tmp_path) as (server, client):
            secret = (await enroll(client))["secret"]
            async with agent_socket(server.url, secret) as ws:
                await receive(ws, "welcome")
                await send(ws, type="hello", capacity=1, runs=[])
                closed = trio.Event()
                codes: list[int] = []

                async def read() -> None:
                    nonlocal cancels
                    try:
                        while True:
                            if json.loads(await ws.get_message())["type"] == "cancel":
                                cancels += 1
                    except trio_websocket.ConnectionClosed as exc:
                        codes.append(exc.reason.code)
                        closed.set()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read)
                    for index in range(frames):
                        try:
                            await send(ws, type="output", run_id=MAX_INT64 - index, attempt=MAX_INT64, chunk=1,
                                       lines=[])
                        except trio_websocket.ConnectionClosed:
                            break
                    await closed.wait()
            assert (await client.get("/healthz")).status_code == 200
    warnings = [r for r in caplog.records if "stale" in r.getMessage()]
    assert codes == [1008]
    assert cancels <= 1024
    assert len(warnings) <= 12, len(warnings)
