"""A small client of runsvc's own API, for the CLI: log in, submit, and follow a run's events over the
WebSocket with reconnects that resume after the last seq seen.

HTTP calls use the standard library in a worker thread (the CLI makes a handful of them); the
WebSocket is runsvc.wsclient's (trio-websocket).
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from collections.abc import AsyncGenerator, Callable
from contextlib import AbstractAsyncContextManager
from http.cookies import SimpleCookie
from typing import Any, BinaryIO
from urllib.parse import urlsplit, urlunsplit

import attrs
import trio
import trio_websocket

from ..wsclient import open_websocket

SESSION_COOKIE = "runsvc_session"
MAX_MESSAGE = 16 * 1024 * 1024  # 16 MiB: well above the server's frame cap
RECONNECT_FOR_S = 120.0  # follow gives up after this long without progress (flag --give-up-after)
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0


class ClientError(Exception):
    """A failure to report to the user as one line."""


@attrs.define
class ApiClient:
    server: str  # e.g. http://127.0.0.1:8080
    session: str | None = None
    csrf_token: str | None = None
    token: str | None = None  # an API token (rsv_…), sent as `Authorization: Bearer`; needs no CSRF

    def auth_headers(self) -> dict[str, str]:
        """The credentials for a request or a WebSocket handshake."""
        if self.token:
            return {"Authorization": f"Bearer {self.token}"}
        if self.session:
            return {"Cookie": f"{SESSION_COOKIE}={self.session}"}
        return {}

    def _build(self, method: str, path: str, body: Any = None) -> urllib.request.Request:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        headers.update(self.auth_headers())
        if self.csrf_token and not self.token:
            headers["X-CSRF-Token"] = self.csrf_token
        return urllib.request.Request(self.server.rstrip("/") + path, data, headers, method=method)

    def _copy_to(self, path: str, out: BinaryIO) -> None:
        """GET `path` and copy its body to `out` as it arrives (worker thread)."""
        try:
            with urllib.request.urlopen(self._build("GET", path), timeout=30) as response:
                shutil.copyfileobj(response, out, 64 * 1024)
                out.flush()
                return
        except BrokenPipeError:
            return  # the reader went away (`runsvc log 7 | head`): nothing more to do
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ClientError(f"cannot reach {self.server}: {reason}") from None
        raise ClientError(f"GET {path}: {status} {_error_message(raw) or 'unexpected answer'}")

    async def copy_to(self, path: str, out: BinaryIO) -> None:
        await trio.to_thread.run_sync(self._copy_to, path, out)

    def _request(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any], Any]:
        request = self._build(method, path, body)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, response_headers, raw = response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            status, response_headers, raw = error.code, error.headers, error.read()
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ClientError(f"cannot reach {self.server}: {reason}") from None
        for cookie in response_headers.get_all("Set-Cookie") or []:
            parsed = SimpleCookie(cookie)
            if SESSION_COOKIE in parsed:
                self.session = parsed[SESSION_COOKIE].value
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = None
        return status, dict(response_headers), payload

    async def call(self, method: str, path: str, body: Any = None, *, expect: int = 200) -> Any:
        status, _, payload = await trio.to_thread.run_sync(self._request, method, path, body)
        if status != expect:
            message = (payload or {}).get("error", {}).get("message") if isinstance(payload, dict) else None
            raise ClientError(f"{method} {path}: {status} {message or 'unexpected answer'}")
        return payload

    async def login(self, username: str, password: str) -> None:
        answer = await self.call("POST", "/api/v1/auth/login", {"username": username, "password": password})
        self.csrf_token = answer["csrf_token"]

    async def logout(self) -> None:
        """End the session of a password login (a CLI call must not leave one behind)."""
        if self.session and not self.token:
            await self.call("POST", "/api/v1/auth/logout", expect=204)
            self.session = self.csrf_token = None

    async def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        return (await self.call("POST", "/api/v1/runs", body, expect=201))["run"]

    async def get_run(self, run_id: int) -> dict[str, Any]:
        return (await self.call("GET", f"/api/v1/runs/{run_id}"))["run"]

    def events_url(self, run_id: int, after_seq: int) -> str:
        parts = urlsplit(self.server)
        scheme = "wss" if parts.scheme == "https" else "ws"
        path = parts.path.rstrip("/") + f"/api/v1/runs/{run_id}/events/ws"
        return urlunsplit((scheme, parts.netloc, path, f"after_seq={after_seq}", ""))


def _error_message(raw: bytes) -> str | None:
    try:
        payload = json.loads(raw)
        return payload["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return None


class RunRefused(ClientError):
    """The server closed the socket with a refusal code (4400, 4401, 4403, 4404)."""

    def __init__(self, code: int, reason: str | None):
        super().__init__(f"server refused: {reason or 'no reason'} (close code {code})")
        self.code = code


@trio.as_safe_channel
async def follow_events(
    client: ApiClient,
    run_id: int,
    after_seq: int = 0,
    *,
    reconnect_for_s: float = RECONNECT_FOR_S,
    on_reconnect: Callable[[int], None] | None = None,
    max_message_size: int = MAX_MESSAGE,
) -> AsyncGenerator[dict[str, Any], None]:
    """The run's events after `after_seq`, each once and in order, until its `end` frame:
    `async with follow_events(...) as events: async for event in events: ...`.

    `trio.as_safe_channel` runs this generator in a task of its own that feeds the channel, so its
    yields inside the WebSocket's nursery never suspend it in the caller's frame (which would break
    structured concurrency), and it raises a failure as itself, not wrapped in a group.

    A dropped connection (network, server restart, shutdown's 1001) is retried with backoff, resuming
    after the last seq delivered. Only progress — an event received — resets the reconnect window: a
    connection that opens and closes again without one (a server that closes right after the handshake,
    a message over `max_message_size`) does not, so after `reconnect_for_s` seconds without progress
    this gives up with a ClientError naming the last failure. A connection that stayed open a whole
    window (a quiet run) counts as progress too. A refusal raises RunRefused.
    """
    last = after_seq
    backoff = BACKOFF_FIRST_S
    stalled_since: float | None = None  # the first failure since the last progress
    while True:
        opened_at: float | None = None
        try:
            async with _open_events_socket(client, run_id, last, max_message_size) as ws:
                opened_at = trio.current_time()
                while True:
                    frame = json.loads(await ws.get_message())
                    if frame["type"] == "end":
                        return
                    for event in frame["events"]:
                        if event["seq"] <= last:
                            continue  # never happens with a correct server; cheap to guard
                        # Safe: as_safe_channel turns this yield into a channel send (see above).
                        yield event  # noqa: ASYNC101, ASYNC119
                        last = event["seq"]
                        stalled_since, backoff = None, BACKOFF_FIRST_S
            problem = "the server closed the connection"
        except trio_websocket.ConnectionClosed as closed:
            reason = closed.reason
            if reason is not None and 4400 <= reason.code < 4500:
                raise RunRefused(reason.code, reason.reason) from None
            problem = _closed_text(reason)
        except (trio_websocket.HandshakeError, OSError) as error:
            problem = f"cannot connect: {str(error) or type(error).__name__}"
        now = trio.current_time()
        if opened_at is not None and now - opened_at >= reconnect_for_s:
            stalled_since, backoff = None, BACKOFF_FIRST_S
        stalled_since = now if stalled_since is None else stalled_since
        if now - stalled_since >= reconnect_for_s:
            raise ClientError(
                f"gave up following run {run_id}: no progress for {reconnect_for_s:g} s of reconnecting to "
                f"{client.server} ({problem})"
            )
        if on_reconnect is not None:
            on_reconnect(last)
        await trio.sleep(backoff)
        backoff = min(backoff * 2, BACKOFF_MAX_S)


def _closed_text(reason: trio_websocket.CloseReason | None) -> str:
    if reason is None:
        return "the connection closed"
    return f"connection closed with code {reason.code}" + (f": {reason.reason}" if reason.reason else "")


def _open_events_socket(
    client: ApiClient, run_id: int, after_seq: int, max_message_size: int
) -> AbstractAsyncContextManager[trio_websocket.WebSocketConnection]:
    return open_websocket(
        client.events_url(run_id, after_seq), extra_headers=list(client.auth_headers().items()),
        max_message_size=max_message_size,
    )
