"""WebSockets: a run's events (catch-up then live, resumable by seq) and the runs feed."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from functools import partial

import trio

from ...events import Subscription
from ...model import EventBatch, RunGone, RunNotFound
from ...services import Services
from ..query import MAX_INT64
from ..sockets import TooManySockets
from ..transport import wire_frames
from ..types import services
from ..websockets import (
    BAD_REQUEST,
    NORMAL,
    NOT_FOUND,
    TRY_AGAIN_LATER,
    Outbox,
    Refused,
    check_origin_and_session,
    handshake,
    serve_socket,
)


def _after_seq() -> int:
    raw = handshake().args.get("after_seq", "0")
    try:
        value = int(raw) if len(raw) <= 40 else MAX_INT64 + 1
    except ValueError:
        raise Refused(BAD_REQUEST, "after_seq must be an integer") from None
    if value < 0:
        raise Refused(BAD_REQUEST, "after_seq must be >= 0")
    if value > MAX_INT64:
        raise Refused(BAD_REQUEST, f"after_seq must be <= {MAX_INT64}")
    return value


Stream = Callable[[Outbox], Awaitable[tuple[int, str]]]


def _checked(stream: Stream) -> Stream:
    """`stream` after the Origin and caller checks, holding one of the caller's per-user WebSocket slots
    (run-event sockets and feeds together, with a session or a token alike) while it runs;
    Refused(1013) when the user holds them all."""

    async def checked(out: Outbox) -> tuple[int, str]:
        principal = await check_origin_and_session()
        registry = services().sockets
        try:
            registry.acquire_user(principal.user.id)
        except TooManySockets as full:
            raise Refused(TRY_AGAIN_LATER, str(full)) from None
        try:
            return await stream(out)
        finally:
            registry.release_user(principal.user.id)

    return checked


_EVENTS_PREFIX, _EVENTS_SUFFIX = '{"type":"events","events":[', "]}"
_WIRE_KEY = ("wire", _EVENTS_PREFIX, _EVENTS_SUFFIX)


def _frames(batch: EventBatch) -> list[str]:
    """One `events` frame per JSON fragment of the batch (each at most FRAGMENT_CAP characters); built
    once per batch, shared by every socket that sends it."""
    return batch.wrapped(_EVENTS_PREFIX, _EVENTS_SUFFIX)


def _wire(batch: EventBatch) -> list[bytes]:
    """The same frames as bytes on the wire, for sockets of our own transport: framed once per batch,
    the same bytes for every such socket (they are unmasked and uncompressed)."""
    return batch.derived(_WIRE_KEY, lambda b: [wire_frames(_frames(b))])


def _wire_bytes(batch: EventBatch) -> bytes:
    """All of the batch's frames on the wire, for a direct write."""
    return _wire(batch)[0]


async def _event_frames(
    svc: Services, run_id: int, after_seq: int, subscription: Subscription, wire: bool
) -> AsyncGenerator[str | bytes, None]:
    """The run's `events` frames after `after_seq` (framed bytes if `wire`), then its `end` frame. Read by
    the socket's sender task itself (Outbox.relay), which closes it; raises Refused(4404) for a missing or
    deleted run."""
    last_seq = after_seq
    frames_of = _wire if wire else _frames
    try:
        async with aclosing(svc.runs.watch(run_id, after_seq, subscription)) as batches:
            async for batch in batches:
                for frame in frames_of(batch):
                    yield frame  # noqa: ASYNC119 (Outbox.relay closes this generator with aclosing)
                last_seq = batch.last_seq
    except RunNotFound:
        raise Refused(NOT_FOUND, f"no run {run_id}") from None
    except RunGone:
        raise Refused(NOT_FOUND, f"run {run_id} was deleted") from None
    if last_seq == after_seq:  # after_seq was at or past the end of a finished run
        try:
            last_seq = (await svc.runs.get(run_id)).last_seq
        except RunNotFound:
            raise Refused(NOT_FOUND, f"run {run_id} was deleted") from None
    yield json.dumps({"type": "end", "last_seq": last_seq})


async def run_events_ws(run_id: int) -> None:
    async def stream(out: Outbox) -> tuple[int, str]:
        if run_id > MAX_INT64:
            raise Refused(BAD_REQUEST, f"run_id must be <= {MAX_INT64}")
        after_seq = _after_seq()
        svc = services()
        # Taken here, read in the sender task: the request owns it, so it ends with the request even
        # while the sender is stuck writing to a peer that stopped reading (see Outbox.relay).
        # A socket of our own transport also takes batches straight from the bus while its sender waits
        # (a direct sink, events/bus.py): no task wakes for them.
        with svc.runs.subscribe(run_id, out.direct(_wire_bytes)) as subscription:
            await out.relay(partial(_event_frames, svc, run_id, after_seq, subscription, out.wire))
        return NORMAL, "run finished"

    await serve_socket(_checked(stream))


async def runs_feed_ws() -> None:
    async def stream(out: Outbox) -> tuple[int, str]:
        with services().runs.feed.watch() as watcher:
            while True:
                try:
                    frame = await watcher.receive()
                except trio.EndOfChannel:
                    return TRY_AGAIN_LATER, "too slow; reconnect and refetch the list"
                await out.send(frame)

    await serve_socket(_checked(stream))
