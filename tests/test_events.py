"""Run events core: seq assignment with group commit, the bus, and the catch-up-then-live consumer."""

from __future__ import annotations

import sqlite3
from contextlib import aclosing

import pytest
import trio
import trio.testing

from runsvc.events import EventLog, RunEventBus, RunFeed, Subscription, stream_run_events
from runsvc.events.bus import DIRECT_FRAME_WEIGHT
from runsvc.events.ticks import TickPacer
from runsvc.http.run_json import feed_frame
from runsvc.model import EventBatch, RunNotFound
from runsvc.recorder import RunRecorder
from runsvc.store import open_store


def _insert_run(conn, status="running"):
    return conn.execute(
        "INSERT INTO runs (command, env, timeout_s, status, created_at) "
        "VALUES ('[\"true\"]', '{}', 60, ?, '2026-01-01T00:00:00.000000Z') RETURNING id",
        (status,),
    ).fetchone()[0]


async def make_run(store, status="running") -> int:
    return await store.write(_insert_run, status)


def _stored_seqs(path, run_id):
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT seq FROM run_events WHERE run_id = ? ORDER BY seq", (run_id,))]
    finally:
        conn.close()


@pytest.fixture(name="bus")
def _bus():
    return RunEventBus(capacity=16)


@pytest.fixture(name="eventlog")
def _eventlog(store, bus):
    return EventLog(store, bus)


async def collect(stream, until_seq: int) -> list[int]:
    seqs: list[int] = []
    async for batch in stream:
        seqs.extend(event["seq"] for event in batch.events)
        if seqs and seqs[-1] >= until_seq:
            break
    return seqs


async def test_concurrent_appends_get_gapless_seqs(tmp_path):
    """50 tasks over 10 runs: every run's seqs are exactly 1..n, durable after reopening, group-committed."""
    path = tmp_path / "events.db"
    per_task = 40
    async with open_store(path) as store:
        eventlog = EventLog(store, RunEventBus())
        runs = [await make_run(store) for _ in range(10)]

        async def producer(task: int) -> None:
            run_id = runs[task % 10]
            for i in range(per_task):
                await eventlog.append(run_id, [("stdout", f"task {task} line {i}")] * (1 + i % 3))

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for task in range(50):
                    nursery.start_soon(producer, task)
        transactions = store.statistics().transactions
    expected_per_run = 5 * sum(1 + i % 3 for i in range(per_task))
    for run_id in runs:
        assert _stored_seqs(path, run_id) == list(range(1, expected_per_run + 1))
    conn = sqlite3.connect(path)
    assert {r[0] for r in conn.execute("SELECT last_seq FROM runs")} == {expected_per_run}
    conn.close()
    stats = eventlog.statistics()
    assert stats.appends == 50 * per_task and stats.waiting_appends == 0
    assert transactions < stats.appends / 5  # many appends share one transaction
    assert stats.buffers_committed < stats.appends / 5


async def test_append_returns_committed_events(store, eventlog):
    """append() returns the events with their seq, ts, kind and data."""
    run_id = await make_run(store)
    with trio.fail_after(10):
        first = await eventlog.append(run_id, [("stdout", "a"), ("stderr", "b")])
        second = await eventlog.append(run_id, [("state", {"status": "succeeded", "exit_code": 0, "reason": None})])
    assert [(e["seq"], e["kind"], e["data"]) for e in first] == [(1, "stdout", "a"), (2, "stderr", "b")]
    assert second[0]["seq"] == 3 and second[0]["data"]["status"] == "succeeded"
    assert first[0]["ts"].endswith("Z")


async def test_unknown_run_fails_alone(store, eventlog):
    """An append to a missing run raises RunNotFound; an append to a real run in the same flush commits."""
    run_id = await make_run(store)
    results = {}

    async def attempt(key, target):
        try:
            results[key] = await eventlog.append(target, [("stdout", "x")])
        except RunNotFound as exc:
            results[key] = exc

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(attempt, "good", run_id)
            nursery.start_soon(attempt, "bad", run_id + 1000)
    assert isinstance(results["bad"], RunNotFound)
    assert [e["seq"] for e in results["good"]] == [1]


async def test_failed_transition_drops_only_its_append(store, eventlog):
    """A transition that raises drops its own events; the run's other appends keep gapless seqs."""
    run_id = await make_run(store)

    def refuse(conn):
        conn.execute("UPDATE runs SET status = 'failed' WHERE id = ?", (run_id,))
        raise ValueError("run is not running")

    outcomes = []

    async def attempt(items, transition=None):
        try:
            outcomes.append(await eventlog.append(run_id, items, transition=transition))
        except ValueError as exc:
            outcomes.append(exc)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(attempt, [("stdout", "a")])
            nursery.start_soon(attempt, [("state", {"status": "failed"})], refuse)
            nursery.start_soon(attempt, [("stdout", "b")])
    assert sum(isinstance(o, ValueError) for o in outcomes) == 1
    assert _stored_seqs(store.path, run_id) == [1, 2]
    status = await store.read(lambda c: c.execute("SELECT status FROM runs WHERE id=?", (run_id,)).fetchone()[0])
    assert status == "running"  # the refused transition's UPDATE was rolled back


async def test_publish_happens_after_commit(store, bus, eventlog):
    """Every batch a subscriber receives can already be read by a fresh connection."""
    run_id = await make_run(store)
    with bus.subscribe(run_id) as subscription:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for i in range(20):
                    nursery.start_soon(eventlog.append, run_id, [("stdout", str(i))])
                for _ in range(20):
                    batch = await subscription.receive()
                    assert set(_stored_seqs(store.path, run_id)) >= {e["seq"] for e in batch.events}
                    if batch.last_seq == 20:
                        break


async def test_batch_json_is_serialized_once(store, bus, eventlog):
    """All subscribers of a run share one batch object and its JSON text."""
    run_id = await make_run(store)
    with bus.subscribe(run_id) as a, bus.subscribe(run_id) as b:
        with trio.fail_after(10):
            await eventlog.append(run_id, [("stdout", "hello")])
            batch_a, batch_b = await a.receive(), await b.receive()
    assert batch_a is batch_b
    assert batch_a.json_fragment is batch_b.json_fragment
    ts = batch_a.events[0]["ts"]
    assert batch_a.json_fragment == f'{{"seq":1,"ts":"{ts}","kind":"stdout","data":"hello"}}'


@pytest.mark.slow
async def test_slow_subscriber_is_bounded_then_resyncs(store, bus, eventlog):
    """A consumer that stops reading while 100,000 events are appended lags with a bounded buffer,
    then receives every event in order, without gap or duplicate."""
    run_id = await make_run(store)
    total = 100_000
    with trio.fail_after(60):
        async with aclosing(stream_run_events(store, bus, run_id, 0, page_size=5000)) as stream:
            await eventlog.append(run_id, [("stdout", "first")])
            first = await stream.__anext__()
            assert [e["seq"] for e in first.events] == [1]
            # The consumer now reads nothing while the producer appends in batches of 100.
            for start in range(1, total, 100):
                await eventlog.append(run_id, [("stdout", f"line {i}") for i in range(start, start + 100)])
            [subscription] = bus.subscription_statistics(run_id)
            assert subscription.lagged
            assert subscription.buffered_batches <= 16
            assert bus.statistics().lag_events > 0
            await eventlog.append(run_id, [("state", {"status": "succeeded", "exit_code": 0, "reason": None})])
            seqs = [1]
            async for batch in stream:
                seqs.extend(e["seq"] for e in batch.events)
    assert seqs == list(range(1, total + 3))


@pytest.mark.parametrize("gap", ["subscribed", "caught_up"])
async def test_events_in_the_subscribe_query_gap_arrive_once(store, bus, eventlog, gap):
    """Events appended between subscribing and the catch-up query, or between the query and the first
    live batch, are delivered exactly once."""
    run_id = await make_run(store)
    await eventlog.append(run_id, [("stdout", "stored")] * 3)

    async def checkpoint(where: str) -> None:
        if where == gap:
            await eventlog.append(run_id, [("stdout", "in the gap")] * 2)
        if where == "caught_up":  # then the live part: appended only now, so it cannot be in a page
            terminal = ("state", {"status": "failed", "exit_code": 1, "reason": None})
            await eventlog.append(run_id, [("stdout", "live"), terminal])

    with trio.fail_after(10):
        seqs = []
        async for batch in stream_run_events(store, bus, run_id, 1, checkpoint=checkpoint):
            seqs.extend(e["seq"] for e in batch.events)
    assert seqs == list(range(2, 8))


async def test_finished_run_past_its_end_yields_nothing(store, bus, eventlog):
    """after_seq at the end of a finished run ends at once; before the end it yields the rest."""
    run_id = await make_run(store)
    await eventlog.append(run_id, [("stdout", "x"), ("state", {"status": "succeeded", "exit_code": 0, "reason": None})])
    await store.write(lambda c: c.execute("UPDATE runs SET status='succeeded' WHERE id=?", (run_id,)))
    with trio.fail_after(10):
        assert [b async for b in stream_run_events(store, bus, run_id, 2)] == []
        assert [b async for b in stream_run_events(store, bus, run_id, 5)] == []
        rest = [e["seq"] async for b in stream_run_events(store, bus, run_id, 1) for e in b.events]
    assert rest == [2]


async def test_missing_run_raises(store, bus):
    """Streaming a run that does not exist raises RunNotFound and leaves no subscriber behind."""
    with trio.fail_after(10):
        with pytest.raises(RunNotFound):
            async for _ in stream_run_events(store, bus, 12345):
                pass
    assert bus.statistics().subscribers == 0


async def test_deleted_run_ends_the_stream(store, bus, eventlog):
    """When the run is deleted while watched, the live stream raises RunGone."""
    from runsvc.model import RunGone

    run_id = await make_run(store)

    async def checkpoint(where: str) -> None:
        if where == "subscribed":  # deleted while subscribed, before and after the catch-up alike
            bus.run_deleted(run_id)

    with trio.fail_after(10):
        with pytest.raises(RunGone):
            async for _ in stream_run_events(store, bus, run_id, checkpoint=checkpoint):
                pass


async def test_idle_entries_are_pruned_after_ttl(autojump_clock):
    """An entry without subscribers disappears after the idle TTL; a subscribed one never does."""
    bus = RunEventBus(idle_ttl_s=600)
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.serve)
        kept = bus.subscribe(1)
        with bus.subscribe(2):
            pass
        await trio.sleep(599)
        assert bus.statistics().runs_tracked == 2
        await trio.sleep(2)
        assert bus.statistics().runs_tracked == 1
        await trio.sleep(10 * 3600)
        assert bus.statistics().runs_tracked == 1
        assert bus.subscriber_count(1) == 1
        kept.close()
        await trio.sleep(601)
        assert bus.statistics().runs_tracked == 0
        nursery.cancel_scope.cancel()


def test_batch_after_slices_by_seq():
    """EventBatch.after keeps only seq > n."""
    batch = EventBatch(1, [{"seq": s, "ts": "t", "kind": "stdout", "data": str(s)} for s in (4, 5, 6)])
    assert batch.after(3) is batch
    assert [e["seq"] for e in batch.after(4).events] == [5, 6]
    assert batch.after(6) is None


async def test_subscriber_buffer_is_bounded_in_events_too(store, eventlog):
    """Few but large batches still make a subscriber lag once it holds more than max_events events."""
    bus = RunEventBus(capacity=1024, max_events=1000)
    eventlog = EventLog(store, bus)
    run_id = await make_run(store)
    with bus.subscribe(run_id) as subscription:
        with trio.fail_after(10):
            for _ in range(5):
                await eventlog.append(run_id, [("stdout", "x")] * 400)
        stats = subscription.statistics()
        assert stats.lagged
        assert stats.buffered_batches == 2 and stats.buffered_events == 800  # not 2,000


def test_large_batches_split_into_capped_fragments():
    """A batch bigger than the frame cap is serialized in a few capped pieces that together hold
    every event in order."""
    import json

    from runsvc.model import FRAGMENT_CAP

    events = [{"seq": s, "ts": "t", "kind": "stdout", "data": "é" * 300} for s in range(1, 5001)]
    batch = EventBatch(1, events)
    assert len(batch.fragments) > 1
    assert all(len(fragment) <= FRAGMENT_CAP for fragment in batch.fragments)
    decoded = [e for fragment in batch.fragments for e in json.loads("[" + fragment + "]")]
    assert decoded == events


def test_concat_reuses_each_batch_json():
    """Concatenated batches pack their existing JSON fragments instead of serializing again."""
    import json

    # The first batch's JSON is given (as if read back from SQLite, key order differing from json.dumps),
    # so reuse shows: serializing again would not reproduce this text.
    first = EventBatch.from_json(1, '{"ts":"t","seq":1,"kind":"stdout","data":"a"}', 1, 1, False)
    second = EventBatch(1, [{"seq": 2, "ts": "t", "kind": "stdout", "data": "b"}])
    merged = EventBatch.concat([first, second])
    assert merged.fragments == [first.fragments[0] + "," + second.fragments[0]]
    assert [e["seq"] for e in json.loads("[" + merged.json_fragment + "]")] == [1, 2]
    assert [e["seq"] for e in merged.events] == [1, 2]


async def test_consumer_that_fell_behind_gets_coalesced_batches(store, bus, eventlog):
    """Batches that piled up while the consumer was busy arrive as one larger batch, in order."""
    run_id = await make_run(store)
    with trio.fail_after(10):
        async with aclosing(stream_run_events(store, bus, run_id, 0)) as stream:
            await eventlog.append(run_id, [("stdout", "first")])
            assert [e["seq"] for e in (await stream.__anext__()).events] == [1]
            for i in range(10):  # 10 separate batches while the consumer is not reading
                await eventlog.append(run_id, [("stdout", str(i))])
            batch = await stream.__anext__()
    assert [e["seq"] for e in batch.events] == list(range(2, 12))


async def test_lagged_consumer_resyncs_from_memory_when_it_can(store, eventlog):
    """A consumer that lagged by less than the run's in-memory history catches up without SQL."""
    bus = RunEventBus(capacity=4, max_events=100)  # keeps the last 200 events of the run
    eventlog = EventLog(store, bus)
    run_id = await make_run(store)
    with trio.fail_after(10):
        async with aclosing(stream_run_events(store, bus, run_id, 0)) as stream:
            await eventlog.append(run_id, [("stdout", "first")])
            seqs = [e["seq"] for e in (await stream.__anext__()).events]
            for i in range(15):  # 150 events in 15 batches: more than the subscriber holds
                await eventlog.append(run_id, [("stdout", str(i))] * 10)
            [subscription] = bus.subscription_statistics(run_id)
            assert subscription.lagged
            before = store.statistics().statements
            batch = await stream.__anext__()
            assert store.statistics().statements == before  # from memory, not SQLite
            seqs += [e["seq"] for e in batch.events]
    assert seqs == list(range(1, 152))


async def test_recent_history_never_skips_what_nobody_watched(store, eventlog, bus):
    """Batches published while a run had no subscriber are not in memory, so a later subscriber that
    lags resyncs those from SQLite instead of skipping them."""
    run_id = await make_run(store)
    with trio.fail_after(10):
        with bus.subscribe(run_id):
            await eventlog.append(run_id, [("stdout", "watched")] * 5)
        await eventlog.append(run_id, [("stdout", "unwatched")] * 5)  # seq 6..10, nobody subscribed
        with bus.subscribe(run_id):
            await eventlog.append(run_id, [("stdout", "watched again")] * 5)  # seq 11..15
            assert bus.recent_after(run_id, 7) is None  # 8..10 are only in SQLite
            assert [b.first_seq for b in bus.recent_after(run_id, 12)] == [13]


def test_split_cuts_only_between_events():
    """Pieces are cut at event boundaries even when the data contains look-alike text, and an event
    larger than the cap is a piece of its own."""
    import json

    from runsvc.model import FRAGMENT_CAP

    tricky = '},{"seq":1} and \\"},{\\"seq\\":'
    events = [{"seq": s, "ts": "t", "kind": "stdout", "data": tricky * 40} for s in range(1, 401)]
    events.insert(200, {"seq": 0, "ts": "t", "kind": "stdout", "data": "x" * (FRAGMENT_CAP + 10)})
    events.append({"seq": 999, "ts": "t", "kind": "state", "data": {"status": "failed", "exit_code": 1}})
    pieces = EventBatch(1, events).fragments
    assert len(pieces) > 2
    assert [e for piece in pieces for e in json.loads("[" + piece + "]")] == events
    assert sum(len(piece) > FRAGMENT_CAP for piece in pieces) == 1  # only the oversized event


async def test_pages_read_back_equal_what_was_appended(store, eventlog):
    """The JSON SQLite builds for a page decodes to exactly the events that were appended, whatever
    the text holds, and splits into capped frames."""
    import json

    from runsvc.store.events import read_page

    run_id = await make_run(store)
    lines = ['quote " backslash \\\\ tab \\t', "control \x01\x1f", "emoji 🎉 and é", "\ufffd\ufffd",
             '},{"seq":1}', "", "x" * 20_000]
    appended = await eventlog.append(run_id, [("stdout", line) for line in lines])
    appended += await eventlog.append(run_id, [("state", {"status": "failed", "exit_code": 3, "reason": None})])
    with trio.fail_after(10):
        page = await store.read(read_page, run_id, 0, 100)
    assert page.first_seq == 1 and page.last_seq == len(lines) + 1 and page.is_terminal
    assert page.events == appended
    assert json.loads("[" + page.json_fragment + "]") == appended


def _one_event_batch(seq: int) -> EventBatch:
    return EventBatch.serialized(1, [{"seq": seq, "ts": "t", "kind": "stdout", "data": str(seq)}])


async def test_publish_ticks_deliver_the_commits_of_a_tick_as_one_batch(mock_clock):
    """With publish ticks, the first batch after a quiet spell goes out at once; the batches published
    within the tick go out together when it ends, as one batch, in order, with their JSON reused."""
    bus = RunEventBus(tick_s=0.02)
    published = [_one_event_batch(seq) for seq in range(1, 12)]
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.serve)
        with bus.subscribe(1) as subscription:
            for batch in published[:10]:  # ten commits within one tick (the mock clock stands still)
                bus.publish(batch)
            assert subscription.receive_ready(100) == [published[0]]
            await trio.testing.wait_all_tasks_blocked()
            mock_clock.jump(0.019)
            await trio.testing.wait_all_tasks_blocked()
            assert subscription.receive_ready(100) == []  # the tick has not ended yet
            mock_clock.jump(0.001)
            await trio.testing.wait_all_tasks_blocked()
            [merged] = subscription.receive_ready(100)
            assert [e["seq"] for e in merged.events] == list(range(2, 11))
            assert merged.json_fragment == ",".join(b.json_fragment for b in published[1:10])
            mock_clock.jump(0.05)  # quiet for longer than a tick: the next batch goes out at once
            bus.publish(published[10])
            assert subscription.receive_ready(100) == [published[10]]
            stats = bus.statistics()
            assert stats.batches_published == 11 and stats.batches_delivered == 3
        nursery.cancel_scope.cancel()


async def test_held_batches_of_a_deleted_run_are_dropped(mock_clock):
    """A run deleted while batches are held: its subscribers get RunGone, nothing is delivered later."""
    from runsvc.model import RunGone

    bus = RunEventBus(tick_s=0.02)
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.serve)
        with bus.subscribe(1) as subscription:
            bus.publish(_one_event_batch(1))
            bus.publish(_one_event_batch(2))  # held
            bus.run_deleted(1)
            mock_clock.jump(1)
            await trio.testing.wait_all_tasks_blocked()
            assert (await subscription.receive()).last_seq == 1
            with pytest.raises(RunGone):
                await subscription.receive()
        nursery.cancel_scope.cancel()


async def test_watched_batches_are_serialized_off_the_trio_thread(store, bus, eventlog, monkeypatch):
    """The JSON of a watched run's new events is built in the writer thread: taking a published batch's
    JSON on the Trio thread encodes nothing there."""
    import json
    import threading

    run_id = await make_run(store)
    trio_thread = threading.get_ident()
    encoded_on: list[int] = []
    real_dumps = json.dumps

    def recording_dumps(*args, **kwargs):
        encoded_on.append(threading.get_ident())
        return real_dumps(*args, **kwargs)

    monkeypatch.setattr(json, "dumps", recording_dumps)
    with bus.subscribe(run_id) as subscription, trio.fail_after(10):
        await eventlog.append(run_id, [("stdout", f"line {i}") for i in range(100)])
        batch = await subscription.receive()
        text = batch.json_fragment  # what a WebSocket sends
    assert [e["seq"] for e in json.loads("[" + text + "]")] == list(range(1, 101))
    assert encoded_on and trio_thread not in encoded_on


async def test_publish_ticks_never_merge_across_a_gap(mock_clock):
    """Held batches whose seqs do not follow on are delivered as separate batches, so a consumer still
    sees the gap (and resyncs) instead of a merged batch that hides it."""
    bus = RunEventBus(tick_s=0.02)
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.serve)
        with bus.subscribe(1) as subscription:
            for seq in (1, 2, 3, 5, 6):
                bus.publish(_one_event_batch(seq))
            mock_clock.jump(0.02)
            await trio.testing.wait_all_tasks_blocked()
            ranges = [(b.first_seq, b.last_seq) for b in subscription.receive_ready(100)]
        nursery.cancel_scope.cancel()
    assert ranges == [(1, 1), (2, 3), (5, 6)]


async def test_publish_ticks_grow_with_the_watchers_of_a_run(mock_clock):
    """The tick adapts to the run's watchers: with few, held batches go out after `tick_s`; with many
    (more than `frames_per_s` frames per second together at `tick_s`), after a longer tick, at most
    `tick_max_s`; and it shrinks back when they leave."""
    # Binary fractions of a second, so that the mock clock adds up exactly: 10 watchers fit in 0.25 s.
    bus = RunEventBus(tick_s=0.25, tick_max_s=1.0, frames_per_s=40)
    seqs = iter(range(1, 100))

    async def held_delivered_after(subscription) -> float:
        """Publish one batch (starts a tick), hold the next, and measure when that one goes out."""
        subscription.receive_ready(100)
        mock_clock.jump(2)  # quiet for longer than any tick: the next batch starts one
        bus.publish(_one_event_batch(next(seqs)))
        bus.publish(_one_event_batch(next(seqs)))  # held until the tick ends
        assert len(subscription.receive_ready(100)) == 1
        waited = 0.0
        while not subscription.receive_ready(100):
            await trio.testing.wait_all_tasks_blocked()
            mock_clock.jump(0.125)
            waited += 0.125
            await trio.testing.wait_all_tasks_blocked()
        return waited

    async with trio.open_nursery() as nursery:
        await nursery.start(bus.serve)

        def watchers(count: int) -> list[Subscription]:
            return [bus.subscribe(1) for _ in range(count)]

        with bus.subscribe(1) as first:
            assert await held_delivered_after(first) == 0.25  # one watcher: the short tick
            others = watchers(19)
            assert await held_delivered_after(first) == 0.5  # 20 watchers: 20 / 40 frames/s
            others += watchers(10)
            assert await held_delivered_after(first) == 0.75  # 30
            others += watchers(80)
            assert await held_delivered_after(first) == 1.0  # capped at tick_max_s
            for other in others:
                other.close()
            assert await held_delivered_after(first) == 0.25
        nursery.cancel_scope.cancel()


async def test_appends_within_the_commit_interval_share_one_group_commit(store, bus):
    """With `commit_interval_s`, an append after a quiet spell is committed at once; one that opens a
    buffer within the interval waits, and the appends made meanwhile join its commit. If that first
    appender is cancelled while it waits, the buffer is still queued: everyone's events commit, in one
    transaction, with gapless seqs."""
    eventlog = EventLog(store, bus, commit_interval_s=3600)  # the second buffer waits "forever"
    run_id = await make_run(store)
    with trio.fail_after(10):
        first = await eventlog.append(run_id, [("stdout", "quiet spell: at once")])
    assert [e["seq"] for e in first] == [1] and eventlog.statistics().buffers_committed == 1

    joined: list[list[int]] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            opener = trio.CancelScope()

            async def open_buffer() -> None:
                with opener:
                    await eventlog.append(run_id, [("stdout", "opens the buffer")])

            async def join_buffer(text: str) -> None:
                events = await eventlog.append(run_id, [("stdout", text)])
                joined.append([e["seq"] for e in events])

            nursery.start_soon(open_buffer)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(join_buffer, "joins")
            nursery.start_soon(join_buffer, "joins too")
            await trio.testing.wait_all_tasks_blocked()
            stats = eventlog.statistics()
            assert stats.buffers_committed == 1 and stats.waiting_appends == 3  # held by the interval
            opener.cancel()
    assert sorted(joined) == [[3], [4]]
    assert eventlog.statistics().buffers_committed == 2
    assert [e["seq"] for e in await eventlog_events(store, run_id)] == [1, 2, 3, 4]


async def test_output_is_committed_at_once_and_its_reader_then_waits_out_the_interval(store, bus):
    """RunRecorder.append_output commits a run's output at once (stored and published without waiting),
    then returns only `output_interval_s` after that commit: the executor reads the run's next output
    only then, so a run that keeps printing is committed about once per interval. Other writers are not
    held: another run's output meanwhile is committed at once too."""
    eventlog = EventLog(store, bus, commit_interval_s=0)
    recorder = RunRecorder(eventlog, bus, RunFeed(feed_frame), output_interval_s=3600)
    first_run, other_run = await make_run(store), await make_run(store)
    returned: list[int] = []

    async def read_and_append(run_id: int) -> None:
        await recorder.append_output(run_id, [("stdout", f"run {run_id}")])
        returned.append(run_id)

    with bus.subscribe(first_run) as first, bus.subscribe(other_run) as other:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_and_append, first_run)
                assert [e["data"] for e in (await first.receive()).events] == [f"run {first_run}"]
                nursery.start_soon(read_and_append, other_run)
                assert [e["data"] for e in (await other.receive()).events] == [f"run {other_run}"]
                await trio.testing.wait_all_tasks_blocked()
                assert returned == []  # both readers wait out the interval before reading on
                nursery.cancel_scope.cancel()
    assert eventlog.statistics().buffers_committed == 2


async def test_output_interval_zero_returns_after_the_commit(store, bus):
    eventlog = EventLog(store, bus)
    recorder = RunRecorder(eventlog, bus, RunFeed(feed_frame), output_interval_s=0)
    run_id = await make_run(store)
    with trio.fail_after(10):
        for i in range(3):
            await recorder.append_output(run_id, [("stdout", str(i))])
    assert [e["data"] for e in await eventlog_events(store, run_id)] == ["0", "1", "2"]


async def eventlog_events(store, run_id: int) -> list[dict]:
    from runsvc.store import events as sql

    batch = await store.read(sql.read_page, run_id, 0, 100)
    return batch.events


async def test_watchers_with_a_direct_sink_weigh_a_quarter_frame_in_the_tick(mock_clock):
    """A watcher whose frames the bus writes itself (a direct sink) counts DIRECT_FRAME_WEIGHT of a frame
    in the adaptive tick: one watcher through a sender and 76 with sinks weigh 20 frames."""
    bus = RunEventBus(tick_s=0.25, tick_max_s=1.0, frames_per_s=40)
    with bus.subscribe(1):
        others = [bus.subscribe(1, direct=lambda batch: False) for _ in range(76)]
        assert bus.frame_weight(1) == 1 + 76 * DIRECT_FRAME_WEIGHT == 20
        assert TickPacer(0.25, 1.0, 40, lambda *_: None, bus.frame_weight).tick_for(bus.frame_weight(1)) == 0.5
        others.append(bus.subscribe(1))
        assert bus.frame_weight(1) == 21
        for other in others:
            other.close()
    assert bus.frame_weight(1) == 0


async def test_direct_sink_takes_what_follows_while_the_consumer_waits(store, bus, eventlog):
    """With a direct sink, the batches published while the consumer waits for its next one (having
    delivered all before) go to the sink, and the consumer is not woken; a batch the sink refuses, and the
    terminal one, are yielded. What was yielded and what the sink took is every event once, in order."""
    run_id = await make_run(store)
    await eventlog.append(run_id, [("stdout", "stored")] * 3)
    taken: list[EventBatch] = []
    refuse = False

    def sink(batch: EventBatch) -> bool:
        if refuse:
            return False
        taken.append(batch)
        return True

    yielded: list[EventBatch] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:

            async def consume() -> None:
                subscription = bus.subscribe(run_id, direct=sink)
                async with aclosing(stream_run_events(store, bus, run_id, subscription=subscription)) as stream:
                    async for batch in stream:
                        yielded.append(batch)

            nursery.start_soon(consume)
            while not yielded:  # the catch-up read runs in a worker thread
                await trio.sleep(0.001)
            await trio.testing.wait_all_tasks_blocked()  # the consumer waits for live batches
            assert [b.last_seq for b in yielded] == [3]  # the catch-up page is always yielded
            for i in range(5):
                await eventlog.append(run_id, [("stdout", f"direct {i}")] * 2)
                await trio.testing.wait_all_tasks_blocked()
            assert len(yielded) == 1
            assert [(b.first_seq, b.last_seq) for b in taken] == [(4, 5), (6, 7), (8, 9), (10, 11), (12, 13)]
            refuse = True
            await eventlog.append(run_id, [("stdout", "refused")])
            await trio.testing.wait_all_tasks_blocked()
            assert [b.first_seq for b in yielded] == [1, 14]
            refuse = False
            await eventlog.append(run_id, [("stdout", "direct again")])
            await trio.testing.wait_all_tasks_blocked()
            await eventlog.append(run_id, [("state", {"status": "succeeded", "exit_code": 0, "reason": None})])
    assert [b.first_seq for b in taken][-1] == 15
    assert yielded[-1].is_terminal and yielded[-1].first_seq == 16
    seqs = sorted(e["seq"] for b in [*yielded, *taken] for e in b.events)
    assert seqs == list(range(1, 17))
    assert bus.statistics().direct_deliveries == 6


async def test_direct_sink_waits_for_the_consumer_to_deliver_what_it_holds(store, bus, eventlog):
    """While the consumer holds a batch (it has not asked for the next one), or batches are buffered for
    it, nothing goes to the sink: a direct write would overtake what the consumer has yet to send. Once
    it asks again, the sink takes over."""
    run_id = await make_run(store)
    taken: list[EventBatch] = []

    def sink(batch: EventBatch) -> bool:
        taken.append(batch)
        return True

    later: list[EventBatch] = []
    with trio.fail_after(10):
        subscription = bus.subscribe(run_id, direct=sink)
        async with aclosing(stream_run_events(store, bus, run_id, subscription=subscription)) as stream:
            await eventlog.append(run_id, [("stdout", "first")])
            first = await anext(stream)  # the consumer now holds batch 1 and does not ask on
            await eventlog.append(run_id, [("stdout", "second")])
            await eventlog.append(run_id, [("stdout", "third")])
            assert taken == []
            [statistics] = bus.subscription_statistics(run_id)
            assert statistics.buffered_batches == 3  # batch 1 too: subscribed before its catch-up read
            second = await anext(stream)  # the buffered batches, coalesced (1 dropped: already yielded)
            assert (first.last_seq, second.first_seq, second.last_seq) == (1, 2, 3)

            async def next_batch() -> None:
                later.append(await anext(stream))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(next_batch)
                await trio.testing.wait_all_tasks_blocked()  # waiting, with 1..3 delivered
                await eventlog.append(run_id, [("stdout", "fourth")])
                await trio.testing.wait_all_tasks_blocked()
                assert [b.first_seq for b in taken] == [4] and later == []
                await eventlog.append(run_id, [("state", {"status": "failed", "exit_code": 1, "reason": None})])
    assert later[0].is_terminal and later[0].first_seq == 5
    assert bus.subscription_statistics(run_id) == []
