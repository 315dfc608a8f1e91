"""A real webhook receiver for tests: an HTTP/1.1 server (h11 over trio) on 127.0.0.1 port 0 that records
every request it gets and answers each path as it is told: a status, a redirect, slowly, or never."""

from __future__ import annotations

import attrs
import h11
import trio

MAX_BODY = 2**20


@attrs.frozen
class Received:
    path: str
    headers: dict[str, str]  # names lowercased
    body: bytes


@attrs.frozen
class Answer:
    status: int = 200
    delay_s: float = 0.0  # before answering
    hang: bool = False  # never answer
    location: str | None = None  # a Location header (redirects)


@attrs.define(eq=False)
class Receiver:
    """`answers[path]` is a list of Answers taken one per request (the last one repeats); a path without
    one gets 200. `received` holds every request in arrival order (recorded before it is answered)."""

    url: str = ""
    answers: dict[str, list[Answer]] = attrs.Factory(dict)
    received: list[Received] = attrs.Factory(list)
    _arrived: trio.Event = attrs.Factory(trio.Event)

    async def serve(self, *, task_status: trio.TaskStatus[Receiver] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._handle, listeners)
            task_status.started(self)

    def at(self, path: str) -> list[Received]:
        return [request for request in self.received if request.path == path]

    async def wait_for(self, path: str, count: int = 1) -> list[Received]:
        """The requests to `path` once there are at least `count` of them (the caller sets the deadline)."""
        while len(self.at(path)) < count:
            await self._arrived.wait()
        return self.at(path)

    def _answer(self, path: str) -> Answer:
        queue = self.answers.get(path)
        if not queue:
            return Answer()
        return queue.pop(0) if len(queue) > 1 else queue[0]

    async def _handle(self, stream: trio.SocketStream) -> None:
        try:
            await self._converse(stream)
        except trio.BrokenResourceError:
            pass  # the sender closed its connection (it never reads an answer's body): fine

    async def _converse(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_BODY)
        async with stream:
            while True:
                request: h11.Request | None = None
                body = bytearray()
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await stream.receive_some()
                        if not data:
                            return
                        conn.receive_data(data)
                        continue
                    if isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        return
                assert request is not None
                received = Received(
                    request.target.decode(), {k.decode().lower(): v.decode() for k, v in request.headers}, bytes(body)
                )
                self.received.append(received)
                self._arrived.set()
                self._arrived = trio.Event()
                answer = self._answer(received.path)
                if answer.hang:
                    await trio.sleep_forever()
                await trio.sleep(answer.delay_s)
                content = b"" if answer.status in (204, 304) else b"ok"
                headers = [("Content-Type", "text/plain")]
                if content:
                    headers.append(("Content-Length", str(len(content))))
                if answer.location is not None:
                    headers.append(("Location", answer.location))
                await stream.send_all(conn.send(h11.Response(status_code=answer.status, headers=headers)))
                if content:
                    await stream.send_all(conn.send(h11.Data(data=content)))
                await stream.send_all(conn.send(h11.EndOfMessage()))
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
