"""The long-lived objects the server wires together and hands to the HTTP layer."""

from __future__ import annotations

import attrs

from .config import Settings
from .eventlog import EventLog
from .events import RunEventBus
from .store import Store


@attrs.define
class Services:
    settings: Settings
    store: Store
    bus: RunEventBus
    eventlog: EventLog
