"""Outbox.relay: the socket's sender task reads a source of frames itself; the request task can still
stop it, and a write in progress is never cut."""

from __future__ import annotations

import pytest
import trio

from runsvc.http.websockets import Outbox, Refused, _send_frames


class _Peer:
    """The sender's socket: records frames and the close; `hold` blocks writes until it is set."""

    def __init__(self) -> None:
        self.frames: list[str] = []
        self.closed: tuple[int, str] | None = None
        self.hold: trio.Event | None = None
        self.writing = trio.Event()

    async def send(self, frame: str) -> None:
        self.writing.set()
        if self.hold is not None:
            with trio.CancelScope(shield=True):  # like Hypercorn's write: not cancellable
                await self.hold.wait()
        self.frames.append(frame)

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


class _Source:
    """A source of frames that records whether it was closed and can wait forever after its frames."""

    def __init__(self, frames: list[str], *, then_wait: bool = False, then_raise: Exception | None = None):
        self.items = frames
        self.then_wait = then_wait
        self.then_raise = then_raise
        self.pulled = 0
        self.closed = trio.Event()
        self.waiting = trio.Event()

    async def frames(self):
        try:
            for item in self.items:
                self.pulled += 1
                yield item
            if self.then_raise is not None:
                raise self.then_raise
            if self.then_wait:
                self.waiting.set()
                await trio.sleep_forever()
        finally:
            self.closed.set()


async def _with_sender(nursery: trio.Nursery, peer: _Peer) -> Outbox:
    outgoing, incoming = trio.open_memory_channel(1)
    outbox = Outbox(outgoing)
    nursery.start_soon(_send_frames, peer, incoming, outbox)
    return outbox


async def test_relay_sends_every_frame_in_order_then_the_close():
    """Every frame of the source goes out in order, then the close queued after the relay."""
    peer, source = _Peer(), _Source(["a", "b", "c"])
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            outbox = await _with_sender(nursery, peer)
            async with outbox:
                await outbox.relay(source.frames)
                await outbox.close(1000, "done")
                await outbox.sent_all.wait()
    assert peer.frames == ["a", "b", "c"]
    assert peer.closed == (1000, "done")
    assert source.closed.is_set()


async def test_relay_reraises_what_the_source_raised_in_the_request_task():
    """A refusal raised by the source (in the sender task) is raised by relay, after the frames before it."""
    peer, source = _Peer(), _Source(["a"], then_raise=Refused(4404, "no run 1"))
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            outbox = await _with_sender(nursery, peer)
            async with outbox:
                with pytest.raises(Refused) as refused:
                    await outbox.relay(source.frames)
    assert refused.value.code == 4404
    assert peer.frames == ["a"]


async def test_stopping_a_relay_that_waits_for_frames_closes_the_source_at_once():
    """Cancelling relay while the sender waits for the next frame closes the source without a write."""
    peer, source = _Peer(), _Source(["a"], then_wait=True)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            outbox = await _with_sender(nursery, peer)
            async with outbox:
                async with trio.open_nursery() as inner:
                    inner.start_soon(outbox.relay, source.frames)
                    await source.waiting.wait()
                    inner.cancel_scope.cancel()
                await source.closed.wait()
                await outbox.close(1001, "server shutting down")
                await outbox.sent_all.wait()
    assert peer.frames == ["a"]
    assert peer.closed == (1001, "server shutting down")


async def test_stopping_a_relay_mid_write_finishes_the_write_and_reads_no_more():
    """Cancelling relay while the sender is blocked in a write returns at once; the write then completes
    whole, the source is not read again, and the close follows it."""
    peer, source = _Peer(), _Source(["a", "b", "c"])
    peer.hold = trio.Event()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            outbox = await _with_sender(nursery, peer)
            async with outbox:
                async with trio.open_nursery() as inner:
                    inner.start_soon(outbox.relay, source.frames)
                    await peer.writing.wait()
                    inner.cancel_scope.cancel()
                assert peer.frames == []  # relay returned while the write was still blocked
                await outbox.close(1001, "server shutting down")
                peer.hold.set()
                await outbox.sent_all.wait()
    assert peer.frames == ["a"]
    assert source.pulled == 1
    assert source.closed.is_set()
    assert peer.closed == (1001, "server shutting down")
