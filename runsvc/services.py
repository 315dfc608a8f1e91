"""The long-lived objects the server wires together and hands to the HTTP layer."""

from __future__ import annotations

from functools import partial

import attrs

from .accounts import ApiTokens, Auth
from .agents import AgentHub, AgentService
from .config import Settings, server_id
from .crypto import new_key
from .events import EventLog, RunEventBus, RunFeed
from .executors import LocalExecutor, RunAs
from .executors.pool import ExecutorPool
from .http.run_json import feed_frame, run_json
from .http.sockets import SocketRegistry, open_file_limit, websocket_cap
from .jobs.service import JobService
from .jobs.ticker import ScheduleTicker, WallClock
from .metrics import Metrics, Sources
from .recorder import RunRecorder
from .runs import RunService
from .scheduler import Scheduler, Wakeup
from .secrets.service import SecretService
from .store import Store
from .webhooks import Outbox, WebhookSender, WebhookService


@attrs.define
class Services:
    settings: Settings
    store: Store
    auth: Auth
    tokens: ApiTokens
    bus: RunEventBus
    eventlog: EventLog
    feed: RunFeed
    recorder: RunRecorder
    runs: RunService
    scheduler: Scheduler
    sockets: SocketRegistry
    metrics: Metrics
    agents: AgentService
    jobs: JobService
    ticker: ScheduleTicker
    webhooks: WebhookService
    webhook_sender: WebhookSender
    secrets: SecretService
    secret_key: bytes  # seals values at rest (crypto.seal); from the key file (secrets/keyfile.py)


def build_services(
    settings: Settings,
    store: Store,
    auth: Auth,
    run_as: RunAs | None = None,
    clock: WallClock | None = None,
    secret_key: bytes | None = None,
) -> Services:
    """`clock` is the schedule ticker's wall clock (tests give one that follows a MockClock);
    `secret_key` the key of the key file (the server loads it), or None for a throwaway one (tests and
    benchmarks that build services on a database of their own)."""
    if secret_key is None:
        secret_key = new_key()
    secrets = SecretService(store, secret_key)
    bus = RunEventBus(
        capacity=settings.bus_capacity, max_events=settings.bus_max_events, idle_ttl_s=settings.bus_idle_ttl_s,
        tick_s=settings.bus_tick_s, tick_max_s=settings.bus_tick_max_s, frames_per_s=settings.bus_frames_per_s,
    )
    eventlog = EventLog(store, bus, commit_interval_s=settings.commit_interval_s)
    local = None
    if settings.local_executor:
        local = LocalExecutor(kill_grace_s=settings.kill_grace_s, server_id=server_id(settings), run_as=run_as)
    # Built bottom up, each getting what it needs at construction: the wakeup, the pool (which wakes
    # the scheduler when a run may have become claimable), the agents' hub (whose links are executors in
    # the pool), the scheduler (which adopts agent runs from the hub).
    wakeup = Wakeup()
    pool = ExecutorPool(local, settings.local_labels, settings.max_concurrent_runs, on_change=wakeup.set)
    feed = RunFeed(feed_frame)
    webhook_sender = WebhookSender(store, secret_key)
    # Every run's end is told to the outbox in its transaction; a commit that wrote deliveries wakes
    # the sender.
    outbox = Outbox(partial(run_json, summary=True), on_written=webhook_sender.wake)
    recorder = RunRecorder(
        eventlog, bus, feed, waiting_for=pool.waiting_for, output_interval_s=settings.output_interval_s,
        outbox=outbox,
    )
    hub = AgentHub(settings, store, pool)
    scheduler = Scheduler(
        settings, store, recorder, pool, wakeup, adopter=hub.adopt, secret_values=secrets.values_for
    )
    runs = RunService(store, recorder, bus, scheduler)
    ticker = ScheduleTicker(store, recorder, scheduler, clock)
    # Every committed change of a job wakes the ticker, which reads the schedules again.
    jobs = JobService(store, runs, recorder, on_change=ticker.wake)
    metrics = Metrics(store, Sources(
        sql_statements=lambda: store.statistics().statements,
        event_commits=lambda: store.statistics().transactions,
        events_appended=lambda: bus.statistics().events_published,
        lag_resyncs=lambda: bus.statistics().lag_events,
        scheduler_wakeups=lambda: scheduler.wakeups,
        login_failures=lambda: auth.login_failures,
        runs_finished=lambda: recorder.finished,
        runs_retried=lambda: recorder.retried,
        agents_connected=hub.connected_count,
        schedule_fires=lambda: ticker.fires,
        webhook_deliveries=lambda: webhook_sender.outcomes,
    ))
    return Services(
        settings=settings, store=store, auth=auth, tokens=ApiTokens(store, revocations=auth.revocations),
        bus=bus, eventlog=eventlog, feed=feed, recorder=recorder, runs=runs, scheduler=scheduler,
        sockets=SocketRegistry(
            max_total=websocket_cap(settings.max_websockets, settings.fd_reserve, open_file_limit()),
            max_per_user=settings.max_websockets_per_user,
        ),
        metrics=metrics, agents=AgentService(store, hub), jobs=jobs, ticker=ticker, secrets=secrets,
        secret_key=secret_key, webhooks=WebhookService(store, secret_key, outbox), webhook_sender=webhook_sender,
    )
