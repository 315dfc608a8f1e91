"""Issue 20 item 4: what a run's output can make the server hold is bounded in characters, not only in
events. A run printing long lines of control characters (each byte 6 characters of JSON: `\\u0001`) must
not make one catch-up page, one coalesced batch or one stalled subscriber hold hundreds of megabytes."""

from __future__ import annotations

from contextlib import aclosing

import trio

from runsvc.events import EventLog, RunEventBus, stream_run_events
from runsvc.events.bus import SUBSCRIBER_MAX_CHARS, json_chars
from runsvc.events.stream import COALESCE_CHARS
from runsvc.model import EventBatch
from runsvc.store import events as sql
from tests.test_events import make_run

HOSTILE = "\x01" * 16384  # one line: 16 KiB of control characters, ~96 Ki characters of JSON
HOSTILE_EVENTS = 300  # ~29 Mi characters of JSON in all


def _chars(batch: EventBatch) -> int:
    return sum(len(fragment) for fragment in batch.fragments)


async def _hostile_run(store, eventlog, *, finish: bool) -> int:
    run_id = await make_run(store)
    for _ in range(0, HOSTILE_EVENTS, 50):
        await eventlog.append(run_id, [("stdout", HOSTILE)] * 50)
    if finish:
        await eventlog.append(run_id, [("state", {"status": "succeeded", "exit_code": 0, "reason": None})])
    return run_id


async def test_a_page_is_bounded_in_characters_and_paging_reads_everything(store):
    """A page asked for 10,000 events of a run whose events are ~96 Ki characters of JSON each holds at
    most PAGE_MAX_CHARS characters (before: all 300, ~29 Mi characters); paging on from its last seq
    reads every event once, in order."""
    eventlog = EventLog(store, RunEventBus())
    with trio.fail_after(60):
        run_id = await _hostile_run(store, eventlog, finish=True)
        seqs: list[int] = []
        after = 0
        while (page := await store.read(sql.read_page, run_id, after, 10_000)) is not None:
            assert _chars(page) <= sql.PAGE_MAX_CHARS
            seqs.extend(event["seq"] for event in page.events)
            after = page.last_seq
    assert seqs == list(range(1, HOSTILE_EVENTS + 2))


async def test_one_event_larger_than_a_page_still_comes_back(store):
    """A page always holds at least one event, however large, so paging never stalls."""
    eventlog = EventLog(store, RunEventBus())
    run_id = await make_run(store)
    with trio.fail_after(30):
        await eventlog.append(run_id, [("stdout", "a"), ("stdout", HOSTILE), ("stdout", "b")])
        page = await store.read(sql.read_page, run_id, 1, 10_000, 1000)
    assert (page.first_seq, page.last_seq) == (2, 2)


async def test_catch_up_batches_are_bounded_in_characters(store):
    """A watcher catching up on the hostile run gets it in batches of at most PAGE_MAX_CHARS characters
    each (before: one 2,000-event page of ~190 Mi characters at full size), every event once, in order."""
    bus = RunEventBus()
    eventlog = EventLog(store, bus)
    with trio.fail_after(60):
        run_id = await _hostile_run(store, eventlog, finish=True)
        sizes, seqs = [], []
        async with aclosing(stream_run_events(store, bus, run_id)) as batches:
            async for batch in batches:
                sizes.append(_chars(batch))
                seqs.extend(event["seq"] for event in batch.events)
    assert max(sizes) <= sql.PAGE_MAX_CHARS and len(sizes) > 1
    assert seqs == list(range(1, HOSTILE_EVENTS + 2))


def _hostile_batch(seq: int) -> EventBatch:
    return EventBatch.serialized(1, [{"seq": seq, "ts": "t", "kind": "stdout", "data": HOSTILE}])


async def test_a_subscriber_that_does_not_read_holds_a_bounded_number_of_characters():
    """A subscriber that never reads holds at most SUBSCRIBER_MAX_CHARS characters of batches (before:
    up to 10,000 events, here all 300 batches, ~29 Mi characters) and is marked lagged beyond that."""
    bus = RunEventBus()
    with bus.subscribe(1) as subscription:
        for seq in range(1, HOSTILE_EVENTS + 1):
            bus.publish(_hostile_batch(seq))
        held = subscription.receive_ready(100_000)
        assert sum(_chars(batch) for batch in held) <= SUBSCRIBER_MAX_CHARS
        assert subscription.lagged


async def test_a_consumer_that_fell_behind_gets_coalesced_batches_bounded_in_characters(store):
    """Live batches that piled up for a consumer are sent in batches of at most COALESCE_CHARS characters
    (before: up to 2,000 events in one), each event once, in order."""
    bus = RunEventBus()
    eventlog = EventLog(store, bus)
    run_id = await make_run(store)
    count = SUBSCRIBER_MAX_CHARS // json_chars(_hostile_batch(1)) - 2  # all of them fit its buffer
    with trio.fail_after(60):
        async with aclosing(stream_run_events(store, bus, run_id)) as batches:
            await eventlog.append(run_id, [("stdout", "first")])
            first = await batches.__anext__()  # holds this one and asks for no more meanwhile
            for _ in range(count):
                await eventlog.append(run_id, [("stdout", HOSTILE)])
            await eventlog.append(run_id, [("state", {"status": "failed", "exit_code": 1, "reason": None})])
            assert not bus.subscription_statistics(run_id)[0].lagged
            later = [batch async for batch in batches]
    assert max(_chars(batch) for batch in later) <= COALESCE_CHARS
    seqs = [event["seq"] for batch in [first, *later] for event in batch.events]
    assert seqs == list(range(1, count + 3))

