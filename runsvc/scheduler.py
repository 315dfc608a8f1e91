"""The scheduler: claims queued runs and supervises them on an executor.

When nothing is claimable it sleeps on a wakeup (set by a submit, by a finishing run and by an agent
connecting) or until the earliest not_before of a queued run (read in the claim's transaction when it
claims nothing), with a long safety-net timeout: an idle server runs no SQL. The executor pool
(executors/pool.py) says which executors have free slots, how many, and their labels; ONE claim
transaction fills them all (store/runs.py: claim_batch): each of its statements takes the oldest queued
run one of the executors still free can take and names the executor, deciding not_before and
concurrency groups in that statement (CLAIM_NEXT), counting the runs claimed before it in the same
transaction. A claim is queued to the store's writer the moment the loop wakes (no waiting: an idle
server's single run starts at once), and shares its commit with whatever else is pending there (submits,
other runs' ends). So N free slots cost one commit and one thread hop, not N. Each run gets a
supervisor task: timeout timer, output cap, executor, then the terminal status with its event (and, in
its transaction, a retry's next try).

Storage faults never end a task here: claims, appends and terminal statuses are store writes with
`retry=True`, which wait (with backoff, in the store) until the database takes them; a run's output
then backs up into its pipe and the process blocks. A run is never recorded `failed` because the
server could not store something. Every wait is bounded at shutdown: a terminal status that cannot
be recorded within the shutdown's bound is left `running`, and startup recovery (recovery.py) marks it
interrupted.

Anything else one run's supervision raises (a bug in an executor, in recording the end) ends that run
`interrupted` with a `system` event, its traceback in the log; the claim loop and the other runs, whose
supervisors share the nursery, carry on.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import attrs
import trio

from .config import Settings, server_work_dir
from .executors import Executor, Outcome, RunSpec, StopRequest
from .executors.pool import ExecutorPool
from .log import get_logger
from .model import Event, Run, RunNotFound, StatusConflict
from .recorder import RunRecorder
from .secrets.service import SecretUnavailable
from .store import Store, StoreClosedError, StoreUnavailable
from .store import runs as sql
from .timeutil import now_ts, parse_ts, utcnow

log = get_logger(__name__)

SHUTDOWN_FINISH_S = 10.0  # at shutdown, after the kill grace: longest wait for runs to be recorded

# How a run ends when supervising it raised something unexpected: the details are in the server log.
INTERNAL_ERROR = Outcome("interrupted", None, "internal error")
INTERNAL_ERROR_MESSAGE = "internal error in runsvc while supervising the run; see the server log"


class Wakeup:
    """What the claim loop sleeps on: set by whatever may make a queued run claimable (a submit, a
    finished run, an executor connecting or getting a free slot). Made before the scheduler and the
    executor pool, which both get it at construction (the pool as its `on_change`)."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        if self._event.is_set():
            self._event = trio.Event()

    async def wait(self) -> None:
        await self._event.wait()


class Scheduler:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        recorder: RunRecorder,
        pool: ExecutorPool,
        wakeup: Wakeup,
        adopter: Callable[[str], Executor | None],
        secret_values: Callable[[Mapping[str, str]], Awaitable[dict[str, str]]] | None = None,
    ):
        """`wakeup` is the one given to `pool` as its `on_change`; `adopter` gives the executor of a run
        an earlier server process handed out, by executor name (the agent hub's links), or None;
        `secret_values` reads a run's secrets when it starts (SecretService.values_for; raises
        SecretUnavailable)."""
        self._secret_values = secret_values
        self._settings = settings
        self._store = store
        self._recorder = recorder
        self.pool = pool
        self._wakeup = wakeup
        self._adopter = adopter
        self._running: dict[int, StopRequest] = {}
        self._claiming = False
        self._early_stops: dict[int, tuple[str, str]] = {}  # stop requests that beat registration
        self._accepting = True
        self._stopping: tuple[str, str] | None = None  # set after the drain: stop whatever still runs
        self._finished = trio.Event()  # set (and replaced) each time a run finishes
        self.idle = False  # True while waiting for a wakeup with nothing claimable
        self.wakeups = 0  # times the claim loop woke from waiting (a wakeup or the safety net), /metrics
        self.workdirs = server_work_dir(settings)
        self._finish_scopes: set[trio.CancelScope] = set()

    # ---- the run service's view (runs.Scheduling) -------------------------------------------

    def wake(self) -> None:
        self._wakeup.set()

    def request_stop(self, run_id: int, status: str, reason: str) -> bool:
        """Stop a running run. False if this scheduler is not running it (it finished, or is unknown)."""
        stop = self._running.get(run_id)
        if stop is not None:
            stop.request(status, reason)
            return True
        if self._claiming:
            # The claim that is committing right now may be this run; its supervisor will see this.
            self._early_stops[run_id] = (status, reason)
            return True
        return False

    # ---- the claim loop --------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Adopt the runs an earlier server process left on agents, then claim and supervise runs until
        cancelled. Startup recovery (recovery.py) has run before."""
        async with trio.open_nursery() as supervisors:
            await self._adopt_agent_runs(supervisors)
            task_status.started()
            while self._accepting:
                self._wakeup.clear()
                slots = self.pool.slots()
                next_due: str | None = None
                if slots:
                    claimed, next_due = await self._claim(slots)
                    for run in claimed:
                        self._start(supervisors, run)
                    if len(claimed) == sum(free for _, _, free in slots):
                        continue  # every free slot was filled: look again (one may be free again)
                self.idle = not self._running
                with trio.move_on_after(self._sleep_s(next_due)):
                    await self._wakeup.wait()
                self.wakeups += 1
                self.idle = False
            await self._wait_all_finished()

    async def _claim(self, slots: list[tuple[str, tuple[str, ...], int]]) -> tuple[list[Run], str | None]:
        """Claim a run for each free slot in one transaction: (the runs claimed, and, when fewer than
        the free slots, the earliest not_before of a queued run still to come or None)."""
        self._claiming = True
        try:
            claimed, next_due = await self._store.write(
                sql.claim_batch, now_ts(), slots, on_commit=self._on_claim, retry=True
            )
        finally:
            self._claiming = False
            self._early_stops.clear()
        return [run for run, _ in claimed], next_due

    def _sleep_s(self, next_due: str | None) -> float:
        """How long the claim loop may sleep with nothing claimable: until a wakeup, or until the
        earliest not_before of a queued run (the claim looks again then: no polling), or the safety
        net, whichever comes first."""
        safety_net = self._settings.scheduler_safety_net_s
        if next_due is None:
            return safety_net
        return max(0.0, min(safety_net, (parse_ts(next_due) - utcnow()).total_seconds()))

    def _on_claim(self, result: tuple[list[tuple[Run, list[Event]]], str | None]) -> None:
        for claimed in result[0]:
            run = claimed[0]
            self.pool.taken(_handed_to(run), _group(run))
            stop = self._running[run.id] = StopRequest()
            early = self._early_stops.pop(run.id, None) or self._stopping
            if early is not None:
                stop.request(*early)
            self._recorder.published(claimed)

    def _start(self, nursery: trio.Nursery, run: Run) -> None:
        nursery.start_soon(self._supervise, run, self._running[run.id], name=f"run {run.id}")

    # ---- one run ---------------------------------------------------------------------------------

    async def _supervise(self, run: Run, stop: StopRequest, adopted_chunk: int | None = None) -> None:
        """Execute one run and record its end. An unexpected exception on the way (a bug in an executor,
        in recording the end) ends this run `interrupted`; it never ends the claim loop and the other
        runs' supervisors, which share its nursery."""
        run_id = run.id
        name = _handed_to(run)
        try:
            try:
                outcome = await self._execute(run, stop, adopted_chunk)
                await self._finish(run_id, outcome)
            except Exception:
                # The traceback goes to the log (one line), never into the run's events.
                log.exception("internal error while supervising a run; it ends interrupted", run_id=run_id)
                await self._finish(run_id, INTERNAL_ERROR, messages=(INTERNAL_ERROR_MESSAGE,))
                return
            if outcome.recorded is not None:
                await outcome.recorded()
        except Exception:
            # Recording the interruption failed as well, or the executor's after-recording step did:
            # the run is left as recorded (a run left `running` is interrupted by the next start).
            log.exception("internal error while supervising a run", run_id=run_id)
        finally:
            self.pool.released(name, _group(run))
            del self._running[run_id]
            self._finished.set()
            self._finished = trio.Event()
            self._wakeup.set()

    async def _execute(self, run: Run, stop: StopRequest, adopted_chunk: int | None) -> Outcome:
        """The run on its executor, with its timeout timer and output cap, until its process is gone."""
        run_id = run.id
        name = _handed_to(run)
        log.info("run started", run_id=run_id, command=list(run.command), executor=name, attempt=run.attempt)
        assert run.env is not None  # claims and adoptions read whole runs, not summaries
        sink = _CappedSink(self._recorder, run_id, self._settings.output_cap_bytes)
        try:
            secrets = await self._read_secrets(run, adopted=adopted_chunk is not None)
        except SecretUnavailable as exc:
            log.warning("run failed: a secret is unavailable", run_id=run_id, error=str(exc))
            await sink.emit([("system", str(exc))])
            return Outcome("failed", None, str(exc))
        except (StoreClosedError, StoreUnavailable) as exc:
            log.warning("run cut short: its secrets could not be read", run_id=run_id, error=str(exc))
            return Outcome("interrupted", None, "the server could not read the run's secrets")
        spec = RunSpec(
            id=run_id,
            command=run.command,
            env={**run.env, **secrets},
            masked=tuple(sorted(secrets)),
            timeout_s=run.timeout_s,
            workdir=self.workdirs / str(run_id),
            attempt=run.attempt,
            kill_grace_s=self._settings.kill_grace_s,
            adopted_chunk=adopted_chunk,
        )
        executor = self.pool.executor(name)
        outcome: Outcome
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_time_out, stop, run.timeout_s)
                if executor is None:  # the agent was revoked between the claim and now
                    outcome = Outcome("interrupted", None, "agent revoked")
                else:
                    outcome = await executor.execute(spec, sink.emit, stop)
                nursery.cancel_scope.cancel()
        except* (StoreClosedError, StoreUnavailable) as group:
            # (except*: the nursery wraps what its body raises in an ExceptionGroup.) The server's own
            # storage, not the run, failed: never recorded as the run failing, nor as an internal error.
            log.warning("run cut short by a storage error", run_id=run_id, error=str(group.exceptions[0]))
            outcome = Outcome("interrupted", None, "the server could not store the run's output")
        return outcome

    async def _read_secrets(self, run: Run, *, adopted: bool) -> dict[str, str]:
        """The values of the run's secrets, read as it starts (SPEC §17). A run adopted from an earlier
        server process is on its agent already with its environment: the values only serve masking its
        output here, so a secret gone since is logged and left unmasked rather than failing the run."""
        if not run.secrets or self._secret_values is None:
            return {}
        if not adopted:
            return await self._secret_values(run.secrets)
        values: dict[str, str] = {}
        for variable, name in run.secrets.items():
            try:
                values.update(await self._secret_values({variable: name}))
            except SecretUnavailable as exc:
                log.warning("adopted run: a secret is unavailable, its value is not masked", run_id=run.id,
                            error=str(exc))
        return values

    async def _finish(self, run_id: int, outcome: Outcome, messages: Sequence[str] = ()) -> None:
        # Shielded so that a shutdown does not lose a status that is being recorded; bounded by
        # shutdown(), which cancels these scopes once its own bound has passed.
        with trio.CancelScope(shield=True) as scope:
            self._finish_scopes.add(scope)
            try:
                await self._recorder.finish(
                    run_id, from_status="running", status=outcome.status, exit_code=outcome.exit_code,
                    reason=outcome.reason, messages=messages,
                )
            except (StatusConflict, RunNotFound) as exc:
                log.warning("run finished but could not be recorded", run_id=run_id, error=str(exc))
                return
            except (StoreClosedError, StoreUnavailable) as exc:
                log.warning("run finished but the database is unavailable; the next start marks it "
                            "interrupted", run_id=run_id, error=str(exc))
                return
            finally:
                self._finish_scopes.discard(scope)
        if scope.cancelled_caught:
            log.warning("shutdown before the run's end could be recorded; the next start marks it "
                        "interrupted", run_id=run_id)
            return
        log.info("run finished", run_id=run_id, status=outcome.status, exit_code=outcome.exit_code)

    # ---- startup and shutdown --------------------------------------------------------------------

    def kill_all_now(self) -> None:
        """Second signal: the process exits right after this; its runs must not outlive it."""
        self.pool.kill_all_now()

    async def _adopt_agent_runs(self, supervisors: trio.Nursery) -> None:
        """Runs a previous server process left running on agents keep running: their agents reconnect
        and carry on within the lease, or the runs end interrupted ("agent lost")."""
        for run, stored_chunk in await self._store.read(sql.agent_runs):
            name = _handed_to(run)
            executor = self._adopter(name)
            if executor is None:
                continue
            self.pool.adopt(name, executor)
            self.pool.taken(name, _group(run))
            stop = self._running[run.id] = StopRequest()
            log.info("adopting agent run", run_id=run.id, executor=name)
            supervisors.start_soon(self._supervise, run, stop, stored_chunk, name=f"run {run.id}")

    async def shutdown(self, drain_s: float) -> None:
        """Stop claiming; let running runs finish for `drain_s`, then stop them as `interrupted`."""
        self._accepting = False
        self._wakeup.set()
        if self._running:
            log.info("draining running runs", count=len(self._running), drain_s=drain_s)
        with trio.move_on_after(drain_s):
            await self._wait_all_finished()
        self._stopping = ("interrupted", "server shutting down")
        for run_id, stop in list(self._running.items()):
            stop.request(*self._stopping)
            log.info("stopping run for shutdown", run_id=run_id)
        with trio.move_on_after(self._settings.kill_grace_s + SHUTDOWN_FINISH_S):
            await self._wait_all_finished()
        if self._running:
            # Their processes are gone or going (SIGKILL at the latest); what cannot be recorded now
            # (a database that stays locked) is recorded as interrupted by the next start.
            log.warning("runs still being recorded at the end of the shutdown bound", count=len(self._running))
            for scope in list(self._finish_scopes):
                scope.cancel()

    async def _wait_all_finished(self) -> None:
        while self._running:
            await self._finished.wait()

    def statistics(self) -> SchedulerStatistics:
        return SchedulerStatistics(
            running=len(self._running), idle=self.idle, claiming=self._claiming, accepting=self._accepting
        )


@attrs.frozen
class SchedulerStatistics:
    running: int  # runs being supervised
    idle: bool  # waiting for a wakeup with nothing running and nothing claimable
    claiming: bool  # a claim transaction is in flight
    accepting: bool  # False once shutdown has begun


def _handed_to(run: Run) -> str:
    """The executor a claimed or adopted run is on (a claim names it in the statement that claims)."""
    assert run.executor is not None
    return run.executor


def _group(run: Run) -> str | None:
    """The run's concurrency key, or None."""
    return None if run.concurrency is None else run.concurrency["key"]


async def _time_out(stop: StopRequest, timeout_s: float) -> None:
    await trio.sleep(timeout_s)
    stop.request("timed_out", f"timed out after {_seconds(timeout_s)}")


def _seconds(value: float) -> str:
    return f"{int(value)}s" if value == int(value) else f"{value:g}s"


class _CappedSink:
    """Appends a run's output, up to the cap; past it, one `system` event and the rest is dropped."""

    def __init__(self, recorder: RunRecorder, run_id: int, cap_bytes: int):
        self._recorder = recorder
        self._run_id = run_id
        self._remaining = cap_bytes if cap_bytes > 0 else math.inf
        self._capped = False
        self._cap_bytes = cap_bytes

    async def emit(
        self, items: Sequence[tuple[str, str]], transition: Callable[[Any], None] | None = None
    ) -> None:
        if self._capped:
            items = ()
        kept: list[tuple[str, str]] = []
        for kind, line in items:
            size = len(line) + 1
            if kind != "system" and size > self._remaining:
                self._capped = True
                message = f"output cap of {self._cap_bytes} bytes reached; further output dropped"
                kept.append(("system", message))
                break
            if kind != "system":
                self._remaining -= size
            kept.append((kind, line))
        if kept or transition is not None:
            await self._recorder.append_output(self._run_id, kept, transition=transition)
