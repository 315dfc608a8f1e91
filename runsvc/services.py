"""The long-lived objects the server wires together and hands to the HTTP layer."""

from __future__ import annotations

import attrs

from .accounts import Auth
from .agents import AgentHub, AgentService
from .config import Settings
from .events import EventLog, RunEventBus, RunFeed
from .executors import LocalExecutor
from .executors.pool import ExecutorPool
from .http.sockets import SocketRegistry
from .recorder import RunRecorder
from .runs import RunService
from .scheduler import Scheduler
from .store import Store


@attrs.define
class Services:
    settings: Settings
    store: Store
    auth: Auth
    bus: RunEventBus
    eventlog: EventLog
    feed: RunFeed
    runs: RunService
    scheduler: Scheduler
    sockets: SocketRegistry
    agents: AgentService


def build_services(settings: Settings, store: Store, auth: Auth) -> Services:
    bus = RunEventBus(
        capacity=settings.bus_capacity, max_events=settings.bus_max_events, idle_ttl_s=settings.bus_idle_ttl_s
    )
    eventlog = EventLog(store, bus)
    feed = RunFeed()
    recorder = RunRecorder(eventlog, bus, feed)
    local = LocalExecutor(kill_grace_s=settings.kill_grace_s) if settings.local_executor else None
    pool = ExecutorPool(local, settings.local_labels, settings.max_concurrent_runs)
    hub = AgentHub(settings, store, pool)
    scheduler = Scheduler(settings, store, recorder, pool)
    runs = RunService(store, recorder, bus, scheduler)
    return Services(
        settings=settings, store=store, auth=auth, bus=bus, eventlog=eventlog, feed=feed, runs=runs,
        scheduler=scheduler, sockets=SocketRegistry(), agents=AgentService(store, hub),
    )
