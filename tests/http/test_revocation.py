"""Sessions end everywhere at once (SPEC §14, issue 14 #4): logout, a password change, disabling a user
and a role change reach that user's open WebSockets within 2 s."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import trio

from runsvc.accounts.revocations import Revocations
from tests.helpers import add_user, login, open_websocket, wait_until
from tests.http.test_live import open_ws, read_all, running_run

WITHIN_S = 2  # SPEC §14


@asynccontextmanager
async def _logged_in(server, username: str) -> AsyncIterator[tuple[httpx.AsyncClient, str, dict[str, str]]]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        csrf = {"X-CSRF-Token": await login(client, username)}
        yield client, client.cookies["runsvc_session"], csrf


async def _both_sockets_close_with(server, cookie: str, run_id: int, act) -> list[int]:
    codes: list[int] = []
    async with open_ws(server, f"/api/v1/runs/{run_id}/events/ws", cookie=cookie) as run_ws, \
            open_ws(server, "/api/v1/runs/feed/ws", cookie=cookie) as feed_ws:
        await run_ws.get_message()  # both sockets authenticated and streaming
        await act()
        with trio.fail_after(WITHIN_S):
            for ws in (run_ws, feed_ws):
                codes.append((await read_all(ws))[2])
    return codes


@pytest.mark.parametrize(
    "change", [{"disabled": True}, {"password": "another-pass-1"}], ids=["disabled", "new password"]
)
async def test_an_admins_change_closes_the_users_sockets(server, client, change):
    """Disabling a user or giving them a new password closes both their run and feed sockets (4401)."""
    await add_user(server, "vera", "viewer")
    await add_user(server, "ada", "admin")
    admin_csrf = {"X-CSRF-Token": await login(client, "ada")}
    with trio.fail_after(20):
        run_id = await running_run(server.services)
        async with _logged_in(server, "vera") as (vera_client, cookie, _):
            vera_id = (await vera_client.get("/api/v1/auth/me")).json()["user"]["id"]

            async def change_vera() -> None:
                answer = await client.patch(f"/api/v1/users/{vera_id}", json=change, headers=admin_csrf)
                assert answer.status_code == 200, answer.text

            assert await _both_sockets_close_with(server, cookie, run_id, change_vera) == [4401, 4401]


async def test_logout_closes_that_sessions_sockets_only(server):
    """Logging out ends the sockets of that session; another session of the same user goes on."""
    await add_user(server, "vera", "viewer")
    with trio.fail_after(20):
        run_id = await running_run(server.services)
        async with _logged_in(server, "vera") as (first, first_cookie, first_csrf), \
                _logged_in(server, "vera") as (second, second_cookie, _):
            async with open_ws(server, f"/api/v1/runs/{run_id}/events/ws", cookie=second_cookie) as other:
                await other.get_message()

                async def logout() -> None:
                    assert (await first.post("/api/v1/auth/logout", headers=first_csrf)).status_code == 204

                assert await _both_sockets_close_with(server, first_cookie, run_id, logout) == [4401, 4401]
                await other.send_message('{"type": "ping"}')  # still open: a closed socket would raise
                assert (await second.get("/api/v1/auth/me")).status_code == 200


async def test_role_change_rechecks_and_keeps_a_role_that_may_watch(server, client):
    """A role change makes the socket re-check its session; every role may watch, so it stays open."""
    await add_user(server, "vera", "operator")
    await add_user(server, "ada", "admin")
    admin_csrf = {"X-CSRF-Token": await login(client, "ada")}
    with trio.fail_after(20):
        run_id = await running_run(server.services)
        async with _logged_in(server, "vera") as (vera_client, cookie, _):
            vera_id = (await vera_client.get("/api/v1/auth/me")).json()["user"]["id"]
            revocations = server.services.auth.revocations
            async with open_ws(server, f"/api/v1/runs/{run_id}/events/ws", cookie=cookie) as ws:
                await ws.get_message()
                # The socket's watcher is the only holder on this server: once it waits, its count is 1.
                await wait_until(lambda: revocations.waits == 1)
                generation = revocations.generation
                answer = await client.patch(f"/api/v1/users/{vera_id}", json={"role": "viewer"}, headers=admin_csrf)
                assert answer.status_code == 200
                assert revocations.generation == generation + 1
                # It waits again only after its re-check let the socket stay open (a refusal ends the watcher).
                await wait_until(lambda: revocations.waits == 2)
                await ws.send_message('{"type": "ping"}')
                server.services.runs.runs_deleted([run_id])
                assert (await read_all(ws))[2] == 4404  # closed for the deletion, not the role change


async def test_revocations_are_not_missed_between_check_and_wait():
    """A revocation published after a holder noted the generation but before it waits still wakes it."""
    revocations = Revocations()
    since = revocations.generation
    revocations.publish(7)
    revocations.publish(8)
    with trio.fail_after(1):
        assert await revocations.wait(7, since) == 2
    with trio.move_on_after(0.05) as scope:
        await revocations.wait(7, revocations.generation)
    assert scope.cancelled_caught


async def test_revoking_a_token_closes_the_sockets_it_opened(server):
    """A WebSocket opened with an API token closes (4401) as soon as that token is revoked."""
    await add_user(server, "vera", "viewer")
    with trio.fail_after(20):
        run_id = await running_run(server.services)
        async with _logged_in(server, "vera") as (vera_client, _, csrf):
            created = await vera_client.post("/api/v1/tokens", json={"name": "ci"}, headers=csrf)
            assert created.status_code == 201, created.text
            token_id, secret = created.json()["token"]["id"], created.json()["secret"]
            url = server.url.replace("http://", "ws://") + f"/api/v1/runs/{run_id}/events/ws"
            bearer = [(b"Authorization", f"Bearer {secret}".encode())]
            async with open_websocket(url, extra_headers=bearer, max_message_size=2**24) as ws:
                await ws.get_message()  # authenticated by the token and streaming
                revoked = await vera_client.delete(f"/api/v1/tokens/{token_id}", headers=csrf)
                assert revoked.status_code == 204
                with trio.fail_after(WITHIN_S):
                    assert (await read_all(ws))[2] == 4401
