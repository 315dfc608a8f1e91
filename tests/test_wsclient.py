"""runsvc.wsclient, the one WebSocket client: trio-websocket's errors, raised as themselves (never an
exception group), and no hang on a peer that never answers."""

from __future__ import annotations

from functools import partial

import pytest
import trio
import trio_websocket

from runsvc.wsclient import open_websocket


async def test_a_silent_peer_is_a_connection_timeout():
    """A TCP peer that accepts but never answers the handshake: ConnectionTimeout after connect_timeout."""
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:

            async def say_nothing(stream: trio.SocketStream) -> None:
                async with stream:
                    await trio.sleep_forever()

            listeners = await nursery.start(trio.serve_tcp, say_nothing, 0)
            port = listeners[0].socket.getsockname()[1]
            with pytest.raises(trio_websocket.ConnectionTimeout):
                async with open_websocket(f"ws://127.0.0.1:{port}/x", max_message_size=1024, connect_timeout=0.3):
                    raise AssertionError("connected to a silent peer")
            nursery.cancel_scope.cancel()


async def test_refused_handshake_and_caller_errors_come_out_as_themselves():
    """An HTTP refusal of the upgrade is ConnectionRejected with its status; an error of the block is
    raised as itself; a message over max_message_size closes with 1009."""

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        if request.path == "/refuse":
            await request.reject(403)
            return
        ws = await request.accept()
        await ws.send_message("x" * 2000)
        await trio.sleep_forever()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial(trio_websocket.serve_websocket, handler, "127.0.0.1", 0,
                                                 ssl_context=None))
            url = f"ws://127.0.0.1:{server.port}"
            with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
                async with open_websocket(url + "/refuse", max_message_size=1024):
                    pass
            assert rejected.value.status_code == 403
            with pytest.raises(KeyError):
                async with open_websocket(url + "/ok", max_message_size=4096):
                    raise KeyError("mine")
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                async with open_websocket(url + "/ok", max_message_size=1024) as ws:
                    await ws.get_message()
            assert closed.value.reason.code == 1009
            nursery.cancel_scope.cancel()
