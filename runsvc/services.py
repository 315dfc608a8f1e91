"""The long-lived objects the server wires together and hands to the HTTP layer."""

from __future__ import annotations

import attrs

from .accounts import Auth
from .config import Settings, server_id
from .events import EventLog, RunEventBus, RunFeed
from .executors import LocalExecutor, RunAs
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


def build_services(settings: Settings, store: Store, auth: Auth, run_as: RunAs | None = None) -> Services:
    bus = RunEventBus(
        capacity=settings.bus_capacity, max_events=settings.bus_max_events, idle_ttl_s=settings.bus_idle_ttl_s
    )
    eventlog = EventLog(store, bus)
    feed = RunFeed()
    recorder = RunRecorder(eventlog, bus, feed)
    executor = LocalExecutor(kill_grace_s=settings.kill_grace_s, server_id=server_id(settings), run_as=run_as)
    scheduler = Scheduler(settings, store, recorder, executor)
    runs = RunService(store, recorder, bus, scheduler)
    return Services(
        settings=settings, store=store, auth=auth, bus=bus, eventlog=eventlog, feed=feed, runs=runs,
        scheduler=scheduler, sockets=SocketRegistry(),
    )
