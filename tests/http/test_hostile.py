"""Hostile sizes and numbers (SPEC §14, issue 14 #5 and #9): bounded command/env, summaries without env,
64-bit bounds everywhere, lone surrogates, and answers that leave a keep-alive connection usable."""

from __future__ import annotations

import json

import pytest
import trio

from tests.helpers import add_user, assert_error, login
from tests.http.test_live import open_ws, read_all, running_run
from tests.keepalive import KeepAliveConnection

RUNS = "/api/v1/runs"
BIG = 2**63  # one past SQLite's largest integer
KIB64 = 64 * 1024


@pytest.fixture(name="csrf")
async def _csrf(server, client):
    await add_user(server, "olga", "operator")
    return {"X-CSRF-Token": await login(client, "olga")}


async def test_command_and_env_are_bounded(server, client, csrf):
    with trio.fail_after(10):
        # A list of strings whose JSON is just over 64 KiB, and an env likewise.
        command = ["echo", "x" * (KIB64 - 10)]
        assert_error(await client.post(RUNS, json={"command": command}, headers=csrf), 400,
                     "invalid_request")
        env = {"BIG": "y" * KIB64}
        answer = await client.post(RUNS, json={"command": ["true"], "env": env}, headers=csrf)
        assert_error(answer, 400, "invalid_request")
        assert "env must be at most 65536 bytes" in answer.json()["error"]["message"]
        ok = await client.post(RUNS, json={"command": ["true"], "env": {"A": "z" * (KIB64 - 100)}}, headers=csrf)
        assert ok.status_code == 201, ok.text


async def test_list_and_feed_carry_summaries_without_env(server, client, csrf):
    with trio.fail_after(20):
        cookie = client.cookies["runsvc_session"]
        async with open_ws(server, "/api/v1/runs/feed/ws", cookie=cookie, queue=16) as feed:
            # The handshake ends before the server's handler subscribes; a run created before that
            # would have no frame.
            while server.services.runs.feed.statistics().watchers < 1:
                await trio.sleep(0.01)
            answer = await client.post(RUNS, json={"command": ["true"], "env": {"SECRETISH": "v"}}, headers=csrf)
            run_id = answer.json()["run"]["id"]
            assert answer.json()["run"]["env"] == {"SECRETISH": "v"}  # the full run where one run is asked for
            frame = json.loads(await feed.get_message())
        assert frame["run"]["id"] == run_id and "env" not in frame["run"]
        listed = (await client.get(RUNS)).json()["runs"]
        assert listed and all("env" not in run for run in listed)
        assert (await client.get(f"{RUNS}/{run_id}")).json()["run"]["env"] == {"SECRETISH": "v"}


@pytest.mark.parametrize(
    ("method", "path", "message"),
    [
        ("GET", f"{RUNS}/{BIG}", "run_id must be <= 9223372036854775807"),
        ("GET", f"{RUNS}/{2**200}/events", "run_id must be <= 9223372036854775807"),
        ("GET", f"{RUNS}/{BIG}/log", "run_id must be <= 9223372036854775807"),
        ("POST", f"{RUNS}/{BIG}/cancel", "run_id must be <= 9223372036854775807"),
        ("GET", f"{RUNS}?before={BIG}", "before must be <= 9223372036854775807"),
        ("GET", f"{RUNS}/1/events?after_seq={BIG}", "after_seq must be <= 9223372036854775807"),
        ("GET", f"{RUNS}/1/events?after_seq={'9' * 5000}", "after_seq must be an integer <= 9223372036854775807"),
    ],
)
async def test_integers_beyond_64_bits_are_400(server, client, csrf, method, path, message):
    with trio.fail_after(10):
        await client.post(RUNS, json={"command": ["true"]}, headers=csrf)
        answer = await client.request(method, path, headers=csrf)
    assert_error(answer, 400, "invalid_request", message)


@pytest.mark.parametrize(
    "path", [f"{RUNS}/{{run}}/events/ws?after_seq={BIG}", f"{RUNS}/{BIG}/events/ws"]
)
async def test_websocket_integers_beyond_64_bits_are_4400(server, client, csrf, path):
    with trio.fail_after(20):
        run_id = await running_run(server.services)
        async with open_ws(server, path.format(run=run_id), cookie=client.cookies["runsvc_session"]) as ws:
            _, _, code = await read_all(ws)
    assert code == 4400


@pytest.mark.parametrize(
    "body",
    [
        '{"command": ["true"], "name": "\\ud800"}',
        '{"command": ["echo", "a\\udfffb"]}',
        '{"command": ["true"], "env": {"K": "\\ud83d"}}',
        '{"command": ["true"], "env": {"\\udc00": "v"}}',
    ],
)
async def test_lone_surrogates_are_400(server, client, csrf, body):
    with trio.fail_after(10):
        answer = await client.post(RUNS, content=body, headers={**csrf, "Content-Type": "application/json"})
    assert_error(answer, 400, "invalid_request")
    assert "lone surrogates" in answer.json()["error"]["message"]


async def test_a_proper_surrogate_pair_is_fine(server, client, csrf):
    body = '{"command": ["echo", "\\ud83d\\ude00"]}'
    answer = await client.post(RUNS, content=body, headers={**csrf, "Content-Type": "application/json"})
    assert answer.status_code == 201 and answer.json()["run"]["command"] == ["echo", "\U0001f600"]


async def test_413_closes_the_connection(server, settings):
    """Issue 14 #5: a 413 says `Connection: close` and closes, so no next request waits on the unread
    body; a new connection works at once."""
    with trio.fail_after(10):
        conn = await KeepAliveConnection.open(server.url)
        try:
            body = b'{"username": "' + b"a" * (settings.max_body_bytes + 10) + b'"}'
            answer = await conn.request("POST", "/api/v1/auth/login", {"Content-Type": "application/json"}, body)
            assert answer.status == 413
            assert answer.headers["connection"] == "close"
            assert not conn.reusable
        finally:
            await conn.aclose()
        again = await KeepAliveConnection.open(server.url)
        try:
            assert (await again.request("GET", "/healthz")).status == 200
        finally:
            await again.aclose()


async def test_empty_answers_keep_the_connection_usable(server):
    """Issue 14 #9: POST /auth/logout answers an empty 204; the next request on the same keep-alive
    connection is answered (it used to find the connection dropped). Every empty answer of the API is
    a 204 of logout; HEAD answers are empty too."""
    await add_user(server, "olga", "viewer")
    with trio.fail_after(10):
        conn = await KeepAliveConnection.open(server.url)
        try:
            body = json.dumps({"username": "olga", "password": "correct-horse-1"}).encode()
            answer = await conn.request("POST", "/api/v1/auth/login", {"Content-Type": "application/json"}, body)
            cookie = next(c for c in answer.cookies if c.startswith("runsvc_session=")).split(";")[0]
            csrf = json.loads(answer.body)["csrf_token"]
            logout = await conn.request("POST", "/api/v1/auth/logout", {"Cookie": cookie, "X-CSRF-Token": csrf})
            assert logout.status == 204 and logout.body == b""
            assert conn.reusable
            assert (await conn.request("GET", "/healthz")).status == 200
            head = await conn.request("HEAD", "/healthz")
            assert head.status == 200 and head.body == b""
            assert (await conn.request("GET", "/healthz")).status == 200
        finally:
            await conn.aclose()
