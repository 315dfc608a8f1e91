"""The scheduler claims for all its free slots in one transaction (issue 22), for real: runs claimed
together start together within their group's limit and all finish recorded, and runs claimed together
but never started (a crash right after the claim's commit) are recovered at the next start."""

from __future__ import annotations

import sys

import trio

from runsvc.accounts import Auth, Passwords
from runsvc.services import build_services
from runsvc.store import open_store
from runsvc.store import runs as run_sql
from runsvc.timeutil import now_ts
from tests.conftest import make_settings
from tests.helpers import FAST_HASHER, running_server
from tests.test_scheduler import events_of, submit

PY = sys.executable


async def wait_terminal(services, run_ids):
    """Every run of `run_ids` as it is once terminal (followed on the runs feed, no polling)."""
    watcher = services.feed.watch()
    try:
        while True:
            runs = [await services.runs.get(run_id) for run_id in run_ids]
            if all(run.status not in ("queued", "running") for run in runs):
                return runs
            await watcher.receive()
    finally:
        watcher.close()


async def test_queued_runs_are_claimed_together_within_group_limits(tmp_path):
    """Five runs queued before the scheduler starts, two of them in a group of limit 1, four slots: one
    claim transaction takes the group's first run and the three plain ones (they share the claim's
    start time), the group's second run starts only after the first ended, and all are recorded."""
    settings = make_settings(tmp_path, max_concurrent_runs=4, scheduler_safety_net_s=600)
    with trio.fail_after(30):
        async with open_store(settings.database_path) as store:
            auth = Auth(store=store, passwords=Passwords(FAST_HASHER), session_ttl_s=60)
            services = build_services(settings, store, auth)
            group = {"key": "g", "limit": 1}
            grouped = [await submit(services, [PY, "-c", "pass"], concurrency=group) for _ in range(2)]
            plain = [await submit(services, [PY, "-c", "pass"]) for _ in range(3)]
            async with trio.open_nursery() as nursery:
                await nursery.start(services.scheduler.run)
                runs = await wait_terminal(services, [run.id for run in grouped + plain])
                events = [await events_of(services, run.id) for run in runs]
                nursery.cancel_scope.cancel()
    first, second, *others = runs
    assert [run.status for run in runs] == ["succeeded"] * 5
    assert {run.started_at for run in [first, *others]} == {first.started_at}  # one claim for all four
    assert second.started_at >= first.ended_at  # its group was full until the first ended
    for run_events in events:
        assert [e["data"]["status"] for e in run_events if e["kind"] == "state"] == ["queued", "running", "succeeded"]


async def test_runs_claimed_together_but_never_started_are_recovered(tmp_path):
    """A batch claim committed, then the server died before starting any of them: the next start
    records each of them interrupted, with a system event, and runs what is still queued."""
    settings = make_settings(tmp_path, max_concurrent_runs=2, scheduler_safety_net_s=600)
    with trio.fail_after(30):
        async with open_store(settings.database_path) as store:
            auth = Auth(store=store, passwords=Passwords(FAST_HASHER), session_ttl_s=60)
            services = build_services(settings, store, auth)
            queued = [await submit(services, [PY, "-c", "pass"]) for _ in range(3)]
            claimed, _ = await store.write(run_sql.claim_batch, now_ts(), [("local", (), 2)])
            # No scheduler here: nothing supervises the claimed runs, as after a crash right after the commit.
        assert [run.id for run, _ in claimed] == [queued[0].id, queued[1].id]
        async with running_server(settings) as server:
            runs = await wait_terminal(server.services, [run.id for run in queued])
            events = [await events_of(server.services, run.id) for run in runs[:2]]
    assert [run.status for run in runs] == ["interrupted", "interrupted", "succeeded"]
    for run_events in events:
        assert any(e["kind"] == "system" and "interrupted" in e["data"] for e in run_events)
        assert run_events[-1]["data"]["status"] == "interrupted"
