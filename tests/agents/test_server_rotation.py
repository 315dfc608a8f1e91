"""The agent's choice of server and its wait before each attempt (runsvc/agents/servers.py)."""

from __future__ import annotations

import pytest

from runsvc.agents.servers import BACKOFF_FIRST_S, BACKOFF_MAX_S, ServerRotation


def test_round_robin_with_one_backoff_per_attempt_bounded_by_the_cap():
    """Each failed attempt moves to the next server, wrapping around, and waits the backoff first: it
    doubles from BACKOFF_FIRST_S up to the cap, so a list of dead servers is dialled no faster than one."""
    rotation = ServerRotation(["http://a", "http://b", "http://c"], jitter=lambda: 1.0)
    dialled, delays = [], []
    for _ in range(8):
        dialled.append(rotation.current)
        delays.append(rotation.next_attempt(cap_s=3.0))
    assert dialled == ["http://a", "http://b", "http://c"] * 2 + ["http://a", "http://b"]
    assert delays == [BACKOFF_FIRST_S, 1.0, 2.0, 3.0, 3.0, 3.0, 3.0, 3.0]
    rotation.next_attempt(cap_s=1000.0)
    assert max(rotation.next_attempt(cap_s=1000.0) for _ in range(20)) == BACKOFF_MAX_S


def test_a_welcomed_connection_resets_the_backoff_and_its_loss_moves_on():
    """After a connection the server welcomed, its loss costs only the first backoff, and the next
    attempt goes to the next server (the lost one may be the dead replica)."""
    rotation = ServerRotation(["http://a", "http://b"], jitter=lambda: 1.0)
    for _ in range(5):
        rotation.next_attempt(cap_s=30.0)
    assert rotation.current == "http://b"
    rotation.welcomed()
    assert rotation.next_attempt(cap_s=30.0) == BACKOFF_FIRST_S
    assert rotation.current == "http://a"


def test_jitter_only_shortens_the_wait_and_one_server_is_retried():
    """The default jitter waits between half and all of the backoff; a list of one dials it again."""
    rotation = ServerRotation(["http://only"])
    delays = [rotation.next_attempt(cap_s=BACKOFF_FIRST_S) for _ in range(50)]
    assert all(BACKOFF_FIRST_S / 2 <= delay <= BACKOFF_FIRST_S for delay in delays)
    assert rotation.current == "http://only"
    with pytest.raises(ValueError, match="^an agent needs at least one server$"):
        ServerRotation([])
