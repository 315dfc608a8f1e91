"""The schedule ticker (SPEC §15): ONE task of the root nursery that sleeps until the next fire time of
any enabled schedule, fires what is due, and sleeps again. No polling: the schedules are kept in memory
and read again only when `wake()` says a job changed (the jobs service calls it after each commit that
creates, edits, enables, disables or deletes a job), so an idle server with a thousand scheduled jobs
runs no SQL between two fires. Such a read compares each job's version (`updated_at`) with the one in
memory and decodes only new and edited jobs; the others keep the fire times handled so far.

Fire times come from cronsim (schedule.py), counted strictly after the later of the job's
`schedule_from` (set when its schedule is created, changed or re-enabled: nothing before it is missed)
and its newest recorded fire (so a restart goes on where the last process stopped).

A fire handled more than MISSED_AFTER_S after its time (the server was down, or stalled) is missed.
Missed times are not handled one by one: per job only the latest missed time is, by the schedule's
`missed` policy (`run_once`: a fire like any other, `skip`: recorded `skipped_missed`); fire times that
are still on time are handled as usual after it.

Each fire is one write on the store (fire.py) deciding, recording and starting in one transaction. All
the fires due at one moment are queued to the writer together, so a thousand jobs on `* * * * *` share
one group commit instead of paying a thread hop each. After the commit, exactly as RunService.submit
does, each new run is published on the bus and the runs feed and the scheduler is woken; runs an
overlap `cancel_previous` stops are stopped the way POST /runs/{id}/cancel stops them.

Time: fire times are wall-clock times; sleeping is on trio's clock. `WallClock` is the seam between
them: a real server reads time.time(); tests give `WallClock.following_trio(epoch)`, whose wall time is
epoch + trio.current_time(), so a `trio.testing.MockClock` moves wall time too.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial

import attrs
import trio

from ..log import get_logger
from ..model import Job
from ..recorder import RunRecorder
from ..runs import Scheduling
from ..store import Store, StoreUnavailable
from ..store import fires as fires_sql
from ..store.writer import WriteRequest
from ..timeutil import format_ts, parse_ts
from .fire import FirePlan, FireResult, fire
from .schedule import ScheduleError, fires

log = get_logger(__name__)

MISSED_AFTER_S = 5.0  # a fire handled later than this after its time is missed (SPEC §15)
DUE_SLACK_S = 0.001  # a fire this close ahead counts as due: float rounding never costs another sleep
# The longest sleep: trio's clock is monotonic and does not see the wall clock step (NTP, a VM that was
# suspended), so a sleep computed before such a step could end long after the fire time. Waking once a
# minute (no SQL: the schedules are in memory) bounds that.
MAX_SLEEP_S = 60.0
RELOAD_RETRY_S = 1.0  # reading the schedules again after the database refused a read
# Windows searched, smallest first, for the latest missed fire time: a dense schedule finds it in the
# first one, a sparse one takes few steps in the larger ones, so a long downtime is never walked minute
# by minute. None: from the job's start.
_MISSED_WINDOWS = (timedelta(hours=1), timedelta(days=1), timedelta(days=32), timedelta(days=400), None)


@attrs.frozen
class WallClock:
    """Wall-clock time in seconds since the epoch; time.time() unless a test says otherwise."""

    now: Callable[[], float] = time.time

    @classmethod
    def following_trio(cls, epoch: float) -> WallClock:
        """Wall time that is `epoch` plus trio's clock: a MockClock moves it (tests)."""
        return cls(lambda: epoch + trio.current_time())

    def datetime(self) -> datetime:
        return datetime.fromtimestamp(self.now(), UTC)


@attrs.define
class _Schedule:
    """One job's schedule in memory."""

    job: Job
    after: datetime  # fire times up to here are handled
    next_fire: datetime | None  # the first fire time after `after`; None: it never fires again


@attrs.frozen
class TickerStatistics:
    schedules: int  # enabled schedules in memory
    reloads: int  # times the schedules were read from the database
    jobs_read: int  # jobs decoded by those reads: only new or edited ones are
    next_fire: datetime | None  # the earliest fire time ahead
    asleep: bool  # waiting for the next fire time or a wake, with nothing due


class ScheduleTicker:
    def __init__(
        self, store: Store, recorder: RunRecorder, scheduling: Scheduling, clock: WallClock | None = None
    ):
        self._store = store
        self._recorder = recorder
        self._scheduling = scheduling
        self._clock = clock or WallClock()
        self._schedules: dict[int, _Schedule] = {}
        self._stale = True  # the schedules in memory may be out of date: read them before the next fire
        self._changed = trio.Event()
        self._asleep = trio.Event()  # set while sleeping; a new one each time it wakes
        self._reloads = 0
        self._jobs_read = 0
        self._unusable: dict[int, str] = {}  # jobs whose schedule cannot be used, by version: not read again
        self.fires: collections.Counter[str] = collections.Counter()  # fires recorded by outcome, /metrics

    def wake(self) -> None:
        """A job changed: read the schedules again before the next fire."""
        self._stale = True
        self._changed.set()

    def statistics(self) -> TickerStatistics:
        upcoming = [s.next_fire for s in self._schedules.values() if s.next_fire is not None]
        return TickerStatistics(
            schedules=len(self._schedules), reloads=self._reloads, jobs_read=self._jobs_read,
            next_fire=min(upcoming, default=None),
            asleep=self._asleep.is_set(),
        )

    async def wait_asleep(self) -> None:
        """Until the ticker sleeps with nothing due (tests: then they move the clock on)."""
        await self._asleep.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Fire schedules until cancelled."""
        await self._reload()
        task_status.started()
        while True:
            if self._stale:
                await self._reload()
                continue
            now = self._clock.datetime()
            plans = self._due(now)
            if plans:
                await self._fire_all(plans)
                continue
            await self._sleep()

    async def _sleep(self) -> None:
        """Until the earliest fire time or a wake, whichever comes first."""
        upcoming = self.statistics().next_fire
        seconds = math.inf if upcoming is None else upcoming.timestamp() - self._clock.now()
        self._asleep.set()
        try:
            with trio.move_on_after(min(max(seconds, 0.0), MAX_SLEEP_S)):
                await self._changed.wait()
        finally:
            self._asleep = trio.Event()

    async def _reload(self) -> None:
        self._stale = False
        self._changed = trio.Event()  # a wake from here on means "read again"
        known = {job_id: schedule.job.updated_at for job_id, schedule in self._schedules.items()}
        known.update(self._unusable)
        while True:
            try:
                versions, changed = await self._store.read(fires_sql.scheduled_jobs, known)
                break
            except StoreUnavailable as error:
                log.warning("cannot read the schedules; trying again", error=str(error))
                await trio.sleep(RELOAD_RETRY_S)
        self._reloads += 1
        self._jobs_read += len(changed)
        # Jobs that did not change keep what the ticker knows of them (fire times handled so far).
        schedules = {
            job_id: schedule for job_id, schedule in self._schedules.items()
            if versions.get(job_id) == schedule.job.updated_at
        }
        self._unusable = {
            job_id: version for job_id, version in self._unusable.items() if versions.get(job_id) == version
        }
        for job, newest_fire in changed:
            assert job.schedule is not None  # scheduled_jobs reads only jobs with a schedule
            after = parse_ts(job.schedule_from or job.updated_at)
            if newest_fire is not None:
                after = max(after, parse_ts(newest_fire))
            try:
                schedules[job.id] = _Schedule(job, after, _first(self._fires_of(job, after)))
            except ScheduleError as error:  # stored before its expression was checked: never fires
                log.warning("job has a schedule that cannot be used", job_id=job.id, error=str(error))
                self._unusable[job.id] = job.updated_at
        self._schedules = schedules

    def _fires_of(self, job: Job, after: datetime) -> Iterator[datetime]:
        assert job.schedule is not None
        return fires(job.schedule["cron"], job.schedule.get("timezone", "UTC"), after)

    def _due(self, now: datetime) -> list[FirePlan]:
        """The fires to handle now, each job's in time order; moves every job with due fires on."""
        plans: list[FirePlan] = []
        horizon = now + timedelta(seconds=DUE_SLACK_S)
        cutoff = now - timedelta(seconds=MISSED_AFTER_S)
        for schedule in self._schedules.values():
            if schedule.next_fire is None or schedule.next_fire > horizon:
                continue
            job = schedule.job
            times: list[tuple[datetime, bool]] = []
            if schedule.next_fire < cutoff:
                missed = self._latest_missed(job, schedule.after, cutoff)
                if missed is not None:
                    times.append((missed, True))
            on_time_after = max(schedule.after, cutoff - timedelta(microseconds=1))
            for moment in self._fires_of(job, on_time_after):
                if moment > horizon:
                    break
                times.append((moment, False))
            for moment, missed_it in times:
                plans.append(FirePlan(job.id, moment, job.schedule or {}, job.schedule_from, missed_it))
            schedule.after = max([schedule.after, *(moment for moment, _ in times)])
            schedule.next_fire = _first(self._fires_of(job, max(schedule.after, horizon)))
        return plans

    def _latest_missed(self, job: Job, after: datetime, cutoff: datetime) -> datetime | None:
        """The latest fire time in (after, cutoff), searched in growing windows back from `cutoff`."""
        for window in _MISSED_WINDOWS:
            start = after if window is None else max(after, cutoff - window)
            latest = None
            for moment in self._fires_of(job, start):
                if moment >= cutoff:
                    break
                latest = moment
            if latest is not None or start == after:
                return latest
        return None

    async def _fire_all(self, plans: list[FirePlan]) -> None:
        """Queue every due fire to the writer at once (one group commit), then wait for them all."""
        ts = format_ts(self._clock.datetime())
        requests: list[tuple[FirePlan, WriteRequest]] = []
        for plan in plans:
            requests.append((plan, self._store.submit_write(
                partial(fire, outbox=self._recorder.outbox), plan, ts, on_commit=self._fired, retry=True,
            )))
        for plan, request in requests:
            await request.done.wait()
            if request.error is not None:
                # Never stops the schedule: this time is passed over, the next one fires as usual.
                log.error(
                    "a schedule's fire failed", job_id=plan.job_id, scheduled_for=format_ts(plan.scheduled_for),
                    exc_info=request.error,
                )

    def _fired(self, result: FireResult) -> None:
        """on_commit of a fire (Trio thread): count it, publish its runs, wake or ask the scheduler."""
        if result.outcome is None:
            return
        self.fires[result.outcome] += 1
        for cancelled in result.cancelled:
            self._recorder.ended(cancelled)
        for run_id in result.stop:
            self._scheduling.request_stop(run_id, "cancelled", result.reason)
        if result.started is not None:
            if result.started[0].status == "queued":
                self._recorder.published(result.started)
                self._scheduling.wake()
            else:  # a run that could not start ended at once
                self._recorder.ended(result.started)


def _first(times: Iterator[datetime]) -> datetime | None:
    return next(times, None)

