"""Group commit of event appends: one bad append fails alone, its neighbours commit and publish."""

from __future__ import annotations

import sqlite3
import threading
from functools import partial
from typing import Any

import trio
import trio.testing

from runsvc.events import EventLog, RunEventBus
from runsvc.model import state_data
from runsvc.store import StoreUnavailable, open_store
from runsvc.store import runs as run_sql
from runsvc.store.faults import fault
from runsvc.webhooks.outbox import no_outbox

DEADLINE_S = 20


def insert_running_run(conn: sqlite3.Connection) -> int:
    return conn.execute(
        "INSERT INTO runs (command, env, timeout_s, status, created_at) "
        "VALUES ('[\"true\"]', '{}', 60, 'running', '2026-01-01T00:00:00.000000Z') RETURNING id"
    ).fetchone()[0]


def stored(conn: sqlite3.Connection, run_id: int) -> tuple[str, int, list[int]]:
    status, last_seq = conn.execute("SELECT status, last_seq FROM runs WHERE id = ?", (run_id,)).fetchone()
    seqs = [row[0] for row in conn.execute("SELECT seq FROM run_events WHERE run_id = ? ORDER BY seq", (run_id,))]
    return status, last_seq, seqs


async def test_one_bad_append_fails_alone_and_its_neighbours_publish(tmp_path):
    """In one group commit, appends that SQLite cannot take (a lone surrogate, an integer past 2^63,
    as data or in a terminal transition) each raise to their own caller; the appends of other runs,
    a terminal state among them, commit, are published, and get gapless seqs."""
    async with open_store(tmp_path / "t.db") as store:
        bus = RunEventBus()
        eventlog = EventLog(store, bus)
        good, surrogate, huge_exit, huge_data, finishing = [await store.write(insert_running_run) for _ in range(5)]

        def finish(run_id: int, exit_code: int, conn: sqlite3.Connection) -> None:
            run_sql.finish(
                conn, run_id, from_status="running", status="failed", exit_code=exit_code, ts="t",
                outbox=no_outbox, appending=1,
            )

        appends: dict[int, tuple[list[tuple[str, Any]], Any]] = {
            good: ([("stdout", "fine")], None),
            surrogate: ([("stdout", "bad \udc80 line")], None),
            huge_exit: ([("state", state_data("failed", 2**63))], partial(finish, huge_exit, 2**63)),
            huge_data: ([("stdout", 2**64)], None),
            finishing: ([("stdout", "last"), ("state", state_data("failed", 3))], partial(finish, finishing, 3)),
        }
        outcomes: dict[int, Any] = {}

        async def append(run_id: int) -> None:
            items, transition = appends[run_id]
            try:
                outcomes[run_id] = await eventlog.append(run_id, items, transition=transition)
            except Exception as exc:
                outcomes[run_id] = exc

        with bus.subscribe(good) as good_sub, bus.subscribe(finishing) as finishing_sub:
            with trio.fail_after(DEADLINE_S):
                async with trio.open_nursery() as nursery:
                    for run_id in appends:
                        nursery.start_soon(append, run_id)
                assert isinstance(outcomes[surrogate], UnicodeEncodeError)
                assert isinstance(outcomes[huge_exit], OverflowError)
                assert isinstance(outcomes[huge_data], OverflowError)
                assert [e["data"] for e in outcomes[good]] == ["fine"]
                assert [e["seq"] for e in outcomes[finishing]] == [1, 2]
                assert eventlog.statistics().buffers_committed == 1  # all five shared one group commit
                good_batch = await good_sub.receive()
                finishing_batch = await finishing_sub.receive()

        assert [e["seq"] for e in good_batch.events] == [1]
        assert [e["seq"] for e in finishing_batch.events] == [1, 2] and finishing_batch.is_terminal
        rows = {run_id: await store.read(stored, run_id) for run_id in appends}
        assert rows == {
            good: ("running", 1, [1]),
            surrogate: ("running", 0, []),
            huge_exit: ("running", 0, []),
            huge_data: ("running", 0, []),
            finishing: ("failed", 2, [1, 2]),
        }
        # The failed appends left nothing behind: the next append of those runs starts at seq 1.
        with trio.fail_after(DEADLINE_S):
            assert [e["seq"] for e in await eventlog.append(surrogate, [("stdout", "ok")])] == [1]


async def test_an_append_retried_after_a_storage_fault_is_published_once(tmp_path):
    """A group commit rolled back by a storage fault after the append's rows were written is retried,
    and its events reach watchers once, not once per attempt."""
    entered, release = threading.Event(), threading.Event()

    def hold_the_writer(conn: sqlite3.Connection) -> None:
        entered.set()
        release.wait(DEADLINE_S)

    def meets_a_full_disk(conn: sqlite3.Connection) -> None:
        raise fault("full")

    try:
        async with open_store(tmp_path / "t.db") as store:
            bus = RunEventBus()
            eventlog = EventLog(store, bus)
            run_id = await store.write(insert_running_run)
            with bus.subscribe(run_id) as subscription, trio.fail_after(DEADLINE_S):
                store.submit_write(hold_the_writer)
                await trio.to_thread.run_sync(entered.wait)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(eventlog.append, run_id, [("stdout", "once")])
                    await trio.testing.wait_all_tasks_blocked()
                    # Next in the same batch as the append's write, after it: the batch meets the fault.
                    faulty = store.submit_write(meets_a_full_disk)
                    release.set()
                await faulty.done.wait()
                assert isinstance(faulty.error, StoreUnavailable)
                await eventlog.append(run_id, [("stdout", "then")])
                seqs: list[int] = []
                while len(seqs) < 2:
                    seqs.extend(e["seq"] for e in (await subscription.receive()).events)
                assert seqs == [1, 2]
    finally:
        release.set()


async def test_a_storage_fault_in_a_transition_is_retried_not_the_appends_error(tmp_path):
    """A transition that meets a storage fault (a full disk) is the store's to retry: the append then
    commits, instead of its caller getting the fault as if the transition had refused."""
    async with open_store(tmp_path / "t.db") as store:
        eventlog = EventLog(store, RunEventBus())
        run_id = await store.write(insert_running_run)
        attempts: list[int] = []

        def finish_after_a_full_disk(conn: sqlite3.Connection) -> None:
            attempts.append(1)
            if len(attempts) == 1:
                raise fault("full")
            run_sql.finish(
                conn, run_id, from_status="running", status="succeeded", exit_code=0, ts="t",
                outbox=no_outbox, appending=1,
            )

        with trio.fail_after(DEADLINE_S):
            events = await eventlog.append(
                run_id, [("state", state_data("succeeded", 0))], transition=finish_after_a_full_disk
            )
        assert [e["seq"] for e in events] == [1] and len(attempts) == 2
        assert await store.read(stored, run_id) == ("succeeded", 1, [1])
