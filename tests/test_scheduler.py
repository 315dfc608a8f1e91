"""The scheduler and the local executor together: every status reached for real, limits, recovery."""

from __future__ import annotations

import json
import logging
import sys
from contextlib import aclosing

import attrs
import pytest
import trio
import trio.lowlevel
import trio.testing

from runsvc.accounts import Auth, Passwords
from runsvc.events import stream_run_events
from runsvc.executors import LocalExecutor
from runsvc.log import LogfmtFormatter
from runsvc.services import build_services
from runsvc.store import StoreClosedError, open_store
from tests.conftest import make_settings
from tests.helpers import ADMIN_PASSWORD, FAST_HASHER, admin_login, running_server, wait_status

PY = sys.executable


async def submit(services, command, **kw):
    kw.setdefault("env", {})
    kw.setdefault("timeout_s", 60.0)
    kw.setdefault("name", None)
    return await services.runs.submit(command=command, created_by="tester", **kw)


async def peak_running(watcher, runs: int) -> int:
    """Read the runs feed until `runs` runs have ended (then close it); the most that ran at once."""
    running: set[int] = set()
    peak = done = 0
    while done < runs:
        run = json.loads(await watcher.receive())["run"]
        if run["status"] == "running":
            running.add(run["id"])
        elif run["status"] != "queued":
            running.discard(run["id"])
            done += 1
        peak = max(peak, len(running))
    watcher.close()
    return peak


async def events_of(services, run_id):
    """Every event of the run until its terminal one (follows it live)."""
    events = []
    async with aclosing(stream_run_events(services.store, services.bus, run_id)) as stream:
        async for batch in stream:
            events.extend(batch.events)
    return events


async def finished(services, command, **kw):
    run = await submit(services, command, **kw)
    events = await events_of(services, run.id)
    return await services.runs.get(run.id), events


@pytest.fixture(name="services")
async def _services(tmp_path):
    settings = make_settings(tmp_path, kill_grace_s=0.5, max_concurrent_runs=4)
    async with running_server(settings) as server:
        yield server.services


async def test_exit_zero_succeeds(services):
    """A command exiting 0 goes queued, running, succeeded with exit code 0 and its output stored."""
    with trio.fail_after(20):
        run, events = await finished(services, [PY, "-c", "print('hello'); print('world')"])
    assert run.status == "succeeded" and run.exit_code == 0
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    states = [e["data"]["status"] for e in events if e["kind"] == "state"]
    assert states == ["queued", "running", "succeeded"]
    assert [e["data"] for e in events if e["kind"] == "stdout"] == ["hello", "world"]
    assert run.started_at and run.ended_at and run.last_seq == len(events)


async def test_exit_three_fails(services):
    """A non-zero exit is failed, with the exit code in the run and the terminal event."""
    with trio.fail_after(20):
        run, events = await finished(services, [PY, "-c", "import sys; sys.exit(3)"])
    assert run.status == "failed" and run.exit_code == 3
    assert events[-1]["data"] == {"status": "failed", "exit_code": 3, "reason": "exited with code 3"}


async def test_timeout(services):
    """A child sleeping past its timeout is stopped with SIGTERM and ends timed_out with -15."""
    with trio.fail_after(20):
        run, events = await finished(services, [PY, "-c", "import time; time.sleep(30)"], timeout_s=0.5)
    assert run.status == "timed_out" and run.exit_code == -15
    assert events[-1]["data"]["reason"] == "timed out after 0.5s"
    assert "sent SIGTERM" in [e["data"] for e in events if e["kind"] == "system"]


async def test_cancel_running_child_that_ignores_sigterm(services):
    """Cancelling a child that ignores SIGTERM kills it after the grace period: cancelled, -9."""
    script = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
        "time.sleep(30)"
    )
    with trio.fail_after(20):
        run = await submit(services, [PY, "-c", script])
        async with aclosing(stream_run_events(services.store, services.bus, run.id)) as stream:
            async for batch in stream:
                if any(e["data"] == "ready" for e in batch.events):
                    break
        await services.runs.cancel(run.id, by="tester")
        events = await events_of(services, run.id)
        run = await services.runs.get(run.id)
    assert run.status == "cancelled" and run.exit_code == -9
    system = [e["data"] for e in events if e["kind"] == "system"]
    assert "sent SIGTERM" in system and "sent SIGKILL" in system
    assert events[-1]["data"]["reason"] == "cancelled by tester"


async def test_cancel_queued_and_finished(services):
    """A queued run is cancelled at once; cancelling a finished run is a conflict."""
    from runsvc.model import StatusConflict

    with trio.fail_after(20):
        blockers = [await submit(services, [PY, "-c", "import time; time.sleep(30)"]) for _ in range(4)]
        queued = await submit(services, [PY, "-c", "print('never')"])
        cancelled = await services.runs.cancel(queued.id, by="tester")
        assert cancelled.status == "cancelled"
        events = await events_of(services, queued.id)
        assert [e["data"]["status"] for e in events] == ["queued", "cancelled"]
        with pytest.raises(StatusConflict):
            await services.runs.cancel(queued.id, by="tester")
        for blocker in blockers:
            await services.runs.cancel(blocker.id, by="tester")


async def test_command_not_found(services):
    """A command that cannot be started goes running -> failed with a system event saying why."""
    with trio.fail_after(20):
        run, events = await finished(services, ["/nonexistent/program"])
    assert run.status == "failed" and run.exit_code is None
    assert [e["data"]["status"] for e in events if e["kind"] == "state"] == ["queued", "running", "failed"]
    assert any(e["kind"] == "system" and e["data"].startswith("spawn failed:") for e in events)


@pytest.mark.slow
async def test_hundred_thousand_lines(services):
    """100,000 lines are all stored, in order, with gapless seqs."""
    with trio.fail_after(60):
        run, events = await finished(services, [PY, "-c", "for i in range(100000): print(i)"])
    assert run.status == "succeeded"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [int(e["data"]) for e in events if e["kind"] == "stdout"] == list(range(100_000))


async def test_invalid_utf8_is_replaced(services):
    """Invalid UTF-8 output is stored with U+FFFD replacement characters."""
    script = "import sys; sys.stdout.buffer.write(b'ok \\xff\\xfe end\\n')"
    with trio.fail_after(20):
        run, events = await finished(services, [PY, "-c", script])
    assert [e["data"] for e in events if e["kind"] == "stdout"] == ["ok \ufffd\ufffd end"]


async def test_stderr_and_env(services):
    """stderr lines are their own kind; the child sees its env and RUNSVC_RUN_ID, not server secrets."""
    script = ("import os, sys; print(os.environ.get('GREETING')); print(os.environ['RUNSVC_RUN_ID']); "
              "print(os.environ.get('RUNSVC_ADMIN_PASSWORD')); print('oops', file=sys.stderr)")
    with trio.fail_after(20):
        run, events = await finished(services, [PY, "-c", script], env={"GREETING": "hi"})
    stdout = [e["data"] for e in events if e["kind"] == "stdout"]
    assert stdout == ["hi", str(run.id), "None"]
    assert [e["data"] for e in events if e["kind"] == "stderr"] == ["oops"]


async def test_output_cap(tmp_path):
    """Past the output cap a system event says so and the rest is dropped; the process still finishes."""
    settings = make_settings(tmp_path, output_cap_bytes=1000)
    with trio.fail_after(20):
        async with running_server(settings) as server:
            run, events = await finished(server.services, [PY, "-c", "for i in range(1000): print('x' * 50)"])
    assert run.status == "succeeded"
    stdout = [e for e in events if e["kind"] == "stdout"]
    assert len(stdout) == 1000 // 51
    assert any("output cap of 1000 bytes reached" in e["data"] for e in events if e["kind"] == "system")


async def test_concurrency_limit_and_prompt_start(tmp_path):
    """At most max_concurrent_runs execute at once; queued runs start as soon as a slot frees,
    long before the 60 s safety net."""
    settings = make_settings(tmp_path, max_concurrent_runs=2, scheduler_safety_net_s=60)
    with trio.fail_after(30):
        async with running_server(settings) as server:
            services = server.services
            watcher = services.feed.watch()
            runs = [await submit(services, [PY, "-c", "import time; time.sleep(0.3)"]) for _ in range(5)]
            peak = await peak_running(watcher, len(runs))
            statuses = [(await services.runs.get(run.id)).status for run in runs]
    assert peak == 2
    assert statuses == ["succeeded"] * 5


async def test_idle_scheduler_runs_no_sql(tmp_path, mock_clock):
    """Over a (mock) minute with an empty queue the scheduler runs no SQL; its safety net fires at 60 s."""
    settings = make_settings(tmp_path, scheduler_safety_net_s=60)
    # The deadline is on the mock clock, which the test jumps by 61 s; pytest-timeout is the real one.
    with trio.fail_after(300):
        async with open_store(settings.database_path) as store:
            auth = Auth(store=store, passwords=Passwords(FAST_HASHER), session_ttl_s=60)
            services = build_services(settings, store, auth)
            async with trio.open_nursery() as nursery:
                await nursery.start(services.scheduler.run)
                while not services.scheduler.idle:
                    await trio.testing.wait_all_tasks_blocked()
                    await trio.lowlevel.checkpoint()
                before = store.statistics().statements
                mock_clock.jump(59)
                await trio.testing.wait_all_tasks_blocked()
                assert store.statistics().statements == before
                mock_clock.jump(2)
                while store.statistics().statements == before:
                    await trio.lowlevel.checkpoint()
                nursery.cancel_scope.cancel()


@pytest.mark.parametrize("fault", ["executor raises", "exit code beyond SQLite's integers"])
async def test_unexpected_error_in_one_runs_supervision_interrupts_only_that_run(tmp_path, monkeypatch, caplog, fault):
    """An unexpected exception while one run is supervised (a bug in an executor; an exit code SQLite
    cannot store, so recording the run's end raises OverflowError) ends that run `interrupted` with a
    `system` event that leaks no exception text, logs the traceback once, and the server keeps serving:
    a run submitted afterwards succeeds."""
    # A fake executor is needed: the local executor neither raises nor reports an exit code beyond
    # int64, and agents' reports are checked where they enter; only a bug gets such an error this far.
    monkeypatch.setenv("RUNSVC_ADMIN_PASSWORD", ADMIN_PASSWORD)  # admin_login's; the server takes it out
    settings = make_settings(tmp_path)
    secret = "detail-that-must-stay-in-the-log"
    with trio.fail_after(30):
        async with running_server(settings) as server, admin_login(server.url) as (client, _):
            execute = LocalExecutor.execute

            async def faulty_execute(self, spec, emit, stop):
                if "FAULT" not in spec.env:
                    return await execute(self, spec, emit, stop)
                if fault == "executor raises":
                    raise RuntimeError(secret)
                outcome = await execute(self, spec, emit, stop)
                return attrs.evolve(outcome, exit_code=2**63)

            monkeypatch.setattr(LocalExecutor, "execute", faulty_execute)
            body = {"command": [PY, "-c", "print('hi')"], "env": {"FAULT": "1"}}
            doomed = (await client.post("/api/v1/runs", json=body)).json()["run"]["id"]
            run = await wait_status(client, doomed)
            events = (await client.get(f"/api/v1/runs/{doomed}/events")).json()["events"]
            after = (await client.post("/api/v1/runs", json={"command": [PY, "-c", "print('ok')"]})).json()["run"]
            later = await wait_status(client, after["id"])
            health = await client.get("/healthz")
    assert (run["status"], run["exit_code"]) == ("interrupted", None)
    system = [e["data"] for e in events if e["kind"] == "system"]
    assert system == ["internal error in runsvc while supervising the run; see the server log"]
    assert events[-1]["data"] == {"status": "interrupted", "exit_code": None, "reason": "internal error"}
    assert not any(secret in json.dumps(e) or "Error" in json.dumps(e) for e in events)
    assert later["status"] == "succeeded" and health.status_code == 200
    logged = [r for r in caplog.records if r.levelno == logging.ERROR and r.exc_info is not None]
    assert [r.getMessage() for r in logged] == ["internal error while supervising a run; it ends interrupted"]
    assert logged[0].fields["run_id"] == doomed
    line = LogfmtFormatter().format(logged[0])
    assert "\n" not in line and "Traceback" in line  # the traceback, as one log line


async def test_storage_error_from_a_runs_output_is_not_an_internal_error(tmp_path, monkeypatch):
    """A storage error that reaches a run's supervisor through its executor (the store closing under an
    output append) ends the run `interrupted` as the server's storage fault it is: no internal error."""
    # A fake executor is needed: with a real one the store only raises this while it closes at the end
    # of a shutdown, when the run's end cannot be recorded any more either.
    execute = LocalExecutor.execute

    async def execute_then_store_closes(self, spec, emit, stop):
        if "FAULT" not in spec.env:
            return await execute(self, spec, emit, stop)
        raise StoreClosedError("store is closed")

    monkeypatch.setattr(LocalExecutor, "execute", execute_then_store_closes)
    with trio.fail_after(20):
        async with running_server(make_settings(tmp_path)) as server:
            run, events = await finished(server.services, [PY, "-c", "pass"], env={"FAULT": "1"})
    assert (run.status, run.exit_code) == ("interrupted", None)
    assert events[-1]["data"]["reason"] == "the server could not store the run's output"
    assert not [e for e in events if e["kind"] == "system"]
