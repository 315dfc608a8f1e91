"""Routing without a server: the executor pool's offers and `waiting_for`, the claim statement, settings."""

from __future__ import annotations

import pytest
import trio

from runsvc.config import SettingsError, load_settings
from runsvc.executors.pool import ExecutorPool
from runsvc.store import runs as sql


class _Nothing:
    async def execute(self, spec, emit, stop):  # never called here
        raise AssertionError


def test_offers_free_executors_local_first_then_most_free_agent():
    """Only executors with a free slot are offered; the local one first, then agents by free slots."""
    pool = ExecutorPool(_Nothing(), ["local"], 1, on_change=lambda: None)
    pool.connect("agent:a", ["gpu"], 1, _Nothing())
    pool.connect("agent:b", ["gpu", "big"], 3, _Nothing())
    assert pool.slots() == [("local", ("local",), 1), ("agent:b", ("big", "gpu"), 3), ("agent:a", ("gpu",), 1)]
    pool.taken("local")
    pool.taken("agent:b")
    pool.taken("agent:b")
    assert [(name, free) for name, _, free in pool.slots()] == [("agent:a", 1), ("agent:b", 1)]
    pool.released("local")
    assert pool.slots()[0] == ("local", ("local",), 1)


def test_waiting_for_names_missing_labels_of_connected_executors():
    """A run waits for an executor that has all its labels; capacity does not matter."""
    pool = ExecutorPool(None, ["local"], 1, on_change=lambda: None)
    assert pool.executors_waiting_for([]) == "an executor (none is connected)"
    pool.connect("agent:a", ["gpu", "linux"], 0, _Nothing())
    assert pool.executors_waiting_for([]) is None
    assert pool.executors_waiting_for(["gpu"]) is None
    assert pool.executors_waiting_for(["gpu", "tpu"]) == "an agent with labels gpu,tpu"
    pool.disconnect("agent:a")
    assert pool.executors_waiting_for(["gpu"]) == "an agent with labels gpu"


async def test_claim_takes_oldest_run_some_executor_can_take_and_counts_attempts(store):
    """One statement: the oldest queued run whose labels an offered executor has, named and attempt 1."""

    def check(conn):
        for labels in (["tpu"], ["gpu"], []):
            sql.create_run(conn, command=["x"], env={}, timeout_s=1, name=None, created_by=None, ts="t",
                           labels=labels)
        offers = [("local", ("local",)), ("agent:a", ("gpu",))]
        first, _ = sql.claim_next(conn, "t2", offers)
        second, _ = sql.claim_next(conn, "t2", offers)
        assert (first.id, first.executor, first.attempt) == (2, "agent:a", 1)
        assert (second.id, second.executor) == (3, "local")
        assert sql.claim_next(conn, "t2", offers) is None
        assert sql.claim_next(conn, "t2", []) is None

    with trio.fail_after(10):
        await store.write(check)


def test_local_labels_and_executor_settings():
    """local_labels is comma-separated (flag, environment) or a list (TOML); bad labels are refused."""
    settings = load_settings({"local_labels": "local, linux", "local_executor": "false"}, environ={})
    assert settings.local_labels == ("local", "linux") and settings.local_executor is False
    assert load_settings(environ={}).local_labels == ("local",)
    assert load_settings(environ={}).agent_lease_s == 60
    with pytest.raises(SettingsError, match="invalid local_labels"):
        load_settings({"local_labels": "bad label"}, environ={})
