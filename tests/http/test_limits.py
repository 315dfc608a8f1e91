"""Connection caps and the open-file limit (issue 20 #5): WebSockets per user and in all are capped
(close 1013 after the handshake), a closed socket frees its slot, and the server raises its soft
open-file limit to the hard one at start."""

from __future__ import annotations

import resource
from contextlib import AsyncExitStack

import httpx
import pytest
import trio
import trio_websocket

from tests.conftest import make_settings
from tests.helpers import add_user, login, running_server
from tests.http.test_live import open_ws

FEED = "/api/v1/runs/feed/ws"


async def _session(server, username: str) -> str:
    """A session cookie of a new viewer `username`."""
    await add_user(server, username, "viewer")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        await login(client, username)
        return client.cookies["runsvc_session"]


async def _wait_feed_watchers(server, count: int) -> None:
    while server.services.runs.feed.statistics().watchers != count:
        await trio.sleep(0.01)


async def _refusal(server, cookie: str) -> tuple[int, str]:
    """The close code and reason of a feed socket the server refuses after the handshake."""
    async with open_ws(server, FEED, cookie=cookie) as ws:
        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
            await ws.get_message()
    return closed.value.reason.code, closed.value.reason.reason


async def test_per_user_cap_refuses_with_1013_and_a_closed_socket_frees_a_slot(tmp_path):
    """A user holding max_websockets_per_user sockets gets 1013 for one more, another user does not,
    and closing one of the user's sockets lets the next one in."""
    settings = make_settings(tmp_path, max_websockets_per_user=2)
    with trio.fail_after(20):
        async with running_server(settings) as server:
            vera, walt = await _session(server, "vera"), await _session(server, "walt")
            async with AsyncExitStack() as first:
                await first.enter_async_context(open_ws(server, FEED, cookie=vera))
                async with open_ws(server, FEED, cookie=vera):
                    await _wait_feed_watchers(server, 2)
                    code, reason = await _refusal(server, vera)
                    assert code == 1013
                    assert reason == "too many open websockets for this user (at most 2); close one first"
                    async with open_ws(server, FEED, cookie=walt):  # another user's slots are their own
                        await _wait_feed_watchers(server, 3)
                # One of vera's sockets is closed: once the server has let it go, she may open another.
                while server.services.sockets.statistics().open_sockets != 1:
                    await trio.sleep(0.01)
                await _wait_feed_watchers(server, 1)
                async with open_ws(server, FEED, cookie=vera):
                    await _wait_feed_watchers(server, 2)
            assert server.services.sockets.statistics().refused == 1


async def test_overall_cap_refuses_with_1013(tmp_path):
    """Past max_websockets open sockets in all, any user's next socket is closed with 1013."""
    settings = make_settings(tmp_path, max_websockets=2)
    with trio.fail_after(20):
        async with running_server(settings) as server:
            vera, walt = await _session(server, "vera"), await _session(server, "walt")
            async with open_ws(server, FEED, cookie=vera), open_ws(server, FEED, cookie=vera):
                await _wait_feed_watchers(server, 2)
                code, reason = await _refusal(server, walt)
            assert (code, reason) == (1013, "too many open websockets (at most 2); try again later")


async def test_overall_cap_stays_below_the_open_file_limit_minus_the_reserve(tmp_path):
    """The overall cap is the open-file limit minus fd_reserve by default, and bounds a larger setting."""
    with trio.fail_after(20):
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        async with running_server(make_settings(tmp_path, fd_reserve=100)) as server:
            assert server.services.sockets.max_total == limit - 100
        settings = make_settings(tmp_path, fd_reserve=100, max_websockets=limit * 2)
        async with running_server(settings) as server:
            assert server.services.sockets.max_total == limit - 100


async def test_open_file_soft_limit_is_raised_to_the_hard_limit_at_start(tmp_path):
    """A server started under a soft open-file limit below the hard one runs with the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard < 1024:
        pytest.skip(f"needs a finite hard open-file limit of at least 1024 (hard: {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
    try:
        with trio.fail_after(20):
            async with running_server(make_settings(tmp_path, fd_reserve=100)) as server:
                assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
                assert server.services.sockets.max_total == hard - 100
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
