"""Fixtures of the webhook tests: a real receiver on 127.0.0.1, an admin's client."""

from __future__ import annotations

import pytest
import trio

from tests.helpers import add_user, login
from tests.webhooks.receiver import Receiver


@pytest.fixture(name="receiver")
async def _receiver():
    async with trio.open_nursery() as nursery:
        yield await nursery.start(Receiver().serve)
        nursery.cancel_scope.cancel()


@pytest.fixture(name="admin")
async def _admin(server, client):
    """`client` logged in as an admin, the CSRF header set on it."""
    await add_user(server, "ada", "admin")
    client.headers["X-CSRF-Token"] = await login(client, "ada")
    return client
