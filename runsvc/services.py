"""The long-lived objects the server wires together and hands to the HTTP layer."""

from __future__ import annotations

import attrs

from .auth import Auth
from .config import Settings
from .store import Store


@attrs.define
class Services:
    settings: Settings
    store: Store
    auth: Auth
