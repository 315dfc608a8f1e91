"""The long-lived objects the server wires together and hands to the HTTP layer."""

from __future__ import annotations

import attrs

from .auth import Auth
from .config import Settings
from .eventlog import EventLog
from .events import RunEventBus
from .executors.local import LocalExecutor
from .feed import RunFeed
from .runs import RunService
from .scheduler import Scheduler
from .sockets import SocketRegistry
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


def build_services(settings: Settings, store: Store, auth: Auth) -> Services:
    bus = RunEventBus(
        capacity=settings.bus_capacity, max_events=settings.bus_max_events, idle_ttl_s=settings.bus_idle_ttl_s
    )
    eventlog = EventLog(store, bus)
    feed = RunFeed()
    runs = RunService(store, eventlog, bus, feed)
    scheduler = Scheduler(settings, store, runs, LocalExecutor(kill_grace_s=settings.kill_grace_s))
    runs.scheduler = scheduler
    return Services(
        settings=settings, store=store, auth=auth, bus=bus, eventlog=eventlog, feed=feed, runs=runs,
        scheduler=scheduler, sockets=SocketRegistry(),
    )
