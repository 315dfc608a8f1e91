"""A minimal HTTP/1.1 keep-alive client over one TCP connection (h11, which Hypercorn itself uses).

httpx pools connections and hides whether the next request reused one; these tests are about exactly
that: an answer must leave the connection usable (or say `Connection: close` and close it).
"""

from __future__ import annotations

import attrs
import h11
import trio


@attrs.define
class Answer:
    status: int
    headers: dict[str, str]  # the last of each name
    cookies: list[str]  # every Set-Cookie header
    body: bytes


class KeepAliveConnection:
    def __init__(self, stream: trio.SocketStream):
        self._stream = stream
        self._conn = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, url: str) -> KeepAliveConnection:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        return cls(await trio.open_tcp_stream(host, int(port)))

    async def aclose(self) -> None:
        await self._stream.aclose()

    @property
    def reusable(self) -> bool:
        """h11's verdict after the last answer: both sides may go on with the next request."""
        usable = (h11.IDLE, h11.DONE)
        return self._conn.our_state in usable and self._conn.their_state in usable

    async def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> Answer:
        if self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE:
            self._conn.start_next_cycle()
        head = [("Host", "127.0.0.1"), ("Content-Length", str(len(body))), *(headers or {}).items()]
        await self._send(h11.Request(method=method, target=path, headers=head))
        async with trio.open_nursery() as nursery:
            # The body goes while the answer is read: a server may answer (413) and close first.
            nursery.start_soon(self._send_body, body)
            answer = await self._read_answer()
            nursery.cancel_scope.cancel()
        return answer

    async def _send_body(self, body: bytes) -> None:
        try:
            if body:
                await self._send(h11.Data(data=body))
            await self._send(h11.EndOfMessage())
        except trio.BrokenResourceError:
            pass  # the server closed without reading it all; its answer says why

    async def _read_answer(self) -> Answer:
        status, answer_headers, chunks = 0, {}, []
        cookies: list[str] = []
        while True:
            event = self._conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await self._stream.receive_some()
                except trio.BrokenResourceError:
                    data = b""  # reset after the server closed: EOF for h11
                self._conn.receive_data(data)  # b"" is EOF: h11 then raises on an unfinished answer
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                answer_headers = {k.decode().lower(): v.decode() for k, v in event.headers}
                cookies = [v.decode() for k, v in event.headers if k.decode().lower() == "set-cookie"]
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return Answer(status, answer_headers, cookies, b"".join(chunks))

    async def _send(self, event: h11.Event) -> None:
        data = self._conn.send(event)
        if data:
            await self._stream.send_all(data)
