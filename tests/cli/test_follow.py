"""`runsvc follow` over its WebSocket: it gives up (one line, exit 1) when reconnecting makes no progress,
and it leaves no TCP connection behind when the server closes first."""

from __future__ import annotations

import gc
import os
import sys
import warnings
from functools import partial

import trio
import trio_websocket

from runsvc.cli.client import ApiClient, ClientError, RunRefused, follow_events
from tests.conftest import make_settings
from tests.helpers import PASSWORD, add_user, child_env, running_server


async def _logged_in(server) -> ApiClient:
    await add_user(server, "alice", "operator")
    client = ApiClient(server.url)
    await client.login("alice", PASSWORD)
    return client


def _client_sockets_to(port: int) -> list[str]:
    """This process's open TCP sockets whose remote end is 127.0.0.1:`port` (client sides only)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    found = []
    with open("/proc/net/tcp") as table:
        for row in list(table)[1:]:
            fields = row.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[9] in inodes:
                found.append(row.strip())
    return found


async def test_follow_closes_its_tcp_stream_when_the_server_closes_first(tmp_path):
    """When the server closes the socket first (4404: no such run), nothing of the client's TCP
    connection is left open, and no socket is left for the garbage collector to close."""
    with trio.fail_after(30):
        async with running_server(make_settings(tmp_path)) as server:
            client = await _logged_in(server)
            port = int(server.url.rsplit(":", 1)[1])
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    async with follow_events(client, 999) as events:
                        async for _ in events:
                            pass
                except RunRefused as refused:
                    assert refused.code == 4404
                else:
                    raise AssertionError("following a run that does not exist was not refused")
                leaked = _client_sockets_to(port)
                gc.collect()
            assert leaked == []
            assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
            await client.logout()


async def test_follow_gives_up_on_a_message_larger_than_its_limit(tmp_path):
    """A line larger than the client's message limit closes every connection with 1009 right after the
    handshake: follow gives up after its window with a message that says so, instead of reconnecting
    forever."""
    with trio.fail_after(60):
        async with running_server(make_settings(tmp_path)) as server:
            client = await _logged_in(server)
            run = await client.submit({"command": [sys.executable, "-c", "print('x' * 100_000)"]})
            reconnects = []
            try:
                async with follow_events(client, run["id"], reconnect_for_s=1.0, max_message_size=10_000,
                                         on_reconnect=reconnects.append) as events:
                    async for _ in events:
                        pass
            except ClientError as error:
                message = str(error)
            else:
                raise AssertionError("follow_events ended without an error")
            assert len(reconnects) >= 2
            assert message.startswith(f"gave up following run {run['id']}: no progress for 1 s")
            assert "1009" in message
            await client.logout()


async def _close_after_handshake(request: trio_websocket.WebSocketRequest) -> None:
    ws = await request.accept()
    await ws.aclose(1011, "going wrong")


async def test_follow_command_exits_1_when_the_server_closes_right_after_each_handshake(tmp_path):
    """`runsvc follow --give-up-after 1` against a server that accepts each WebSocket and closes it at
    once: exit status 1 and one line, within a deadline (it reconnected forever before)."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            ws_server = await nursery.start(partial(
                trio_websocket.serve_websocket, _close_after_handshake, "127.0.0.1", 0, ssl_context=None))
            port = ws_server.port
            result = await trio.run_process(
                [sys.executable, "-m", "runsvc", "follow", "--server", f"http://127.0.0.1:{port}",
                 "--token-stdin", "--give-up-after", "1", "7"],
                stdin=b"rsv_test\n", capture_stdout=True, capture_stderr=True, check=False, env=child_env(),
            )
            nursery.cancel_scope.cancel()
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert stderr.strip().splitlines()[-1].startswith("runsvc: error: gave up following run 7: no progress for 1 s")
    assert "1011" in stderr
    assert "Traceback" not in stderr
