"""Routing: which executors exist, their labels and free capacity, and which one runs a claimed run.

The local executor is named "local"; a remote agent is "agent:<name>" (the value of a run's `executor`).
The scheduler asks `slots()` for the executors with a free slot and how many, in order of preference, and
claims in one transaction a run for each free slot, each the oldest queued run one of those executors
can take (store/runs.py: claim_batch). A change that may make a queued run
claimable (an agent connects, a slot frees) calls `on_change`, which wakes the scheduler: no polling.

It also counts the runs handed out per concurrency group (`taken`/`released` with the run's group key):
the scheduler tells it about every run it claims or adopts and every run that ends, so `waiting_for`
says `concurrency group <key> (<n> of <limit> running)` without a query per read. (The claim itself
counts in SQL, in its transaction; this count is only for what a queued run is shown to wait for.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs

from ..model import Run
from ..timeutil import now_ts
from .base import Executor

LOCAL = "local"


def agent_executor_name(agent_name: str) -> str:
    return f"agent:{agent_name}"


@attrs.define
class _Entry:
    labels: frozenset[str]
    capacity: int
    executor: Executor


class ExecutorPool:
    def __init__(
        self, local: Executor | None, local_labels: Sequence[str], local_capacity: int,
        *, on_change: Callable[[], None],
    ):
        """`on_change` is called whenever a queued run may have become claimable (the scheduler's
        wakeup)."""
        self._entries: dict[str, _Entry] = {}
        self._busy: dict[str, int] = {}  # runs handed out and not finished, per executor name
        self._groups: dict[str, int] = {}  # runs handed out and not finished, per concurrency key
        self._known: dict[str, Executor] = {}  # every executor a run may still be on (also offline ones)
        self._on_change = on_change
        if local is not None:
            self.connect(LOCAL, local_labels, local_capacity, local)

    # ---- executors coming and going -------------------------------------------------------------

    def connect(self, name: str, labels: Sequence[str], capacity: int, executor: Executor) -> None:
        """`name` takes runs (again), up to `capacity` at once counting the ones it still has."""
        self._entries[name] = _Entry(frozenset(labels), capacity, executor)
        self._known[name] = executor
        self._on_change()

    def set_capacity(self, name: str, capacity: int) -> None:
        entry = self._entries.get(name)
        if entry is not None:
            entry.capacity = capacity
            self._on_change()

    def disconnect(self, name: str) -> None:
        """`name` takes no new runs; the ones it has keep their executor until they finish."""
        self._entries.pop(name, None)

    def forget(self, name: str) -> None:
        self._entries.pop(name, None)
        self._known.pop(name, None)

    def adopt(self, name: str, executor: Executor) -> None:
        """`executor` (unless one is known by `name` already) has runs an earlier server process handed
        out under `name`; it takes no new runs until it connects."""
        self._known.setdefault(name, executor)

    def kill_all_now(self) -> None:
        """Second signal: every executor kills what it runs here, at once (see Executor.kill_all_now)."""
        for executor in self._known.values():
            executor.kill_all_now()

    # ---- routing --------------------------------------------------------------------------------

    def slots(self) -> list[tuple[str, tuple[str, ...], int]]:
        """(name, labels, free slots) of the executors with a free slot, the local one first, then agents
        with the most free slots: what one claim transaction fills (store/runs.py: claim_batch)."""
        free = [
            (name, entry, entry.capacity - self._busy.get(name, 0)) for name, entry in self._entries.items()
            if entry.capacity > self._busy.get(name, 0)
        ]
        free.sort(key=lambda item: (item[0] != LOCAL, -item[2]))
        return [(name, tuple(sorted(entry.labels)), count) for name, entry, count in free]

    def executor(self, name: str) -> Executor | None:
        return self._known.get(name)

    def taken(self, name: str, group: str | None = None) -> None:
        """A run was handed to `name`; `group`: its concurrency key, if it has one."""
        _add(self._busy, name, 1)
        if group is not None:
            _add(self._groups, group, 1)

    def released(self, name: str, group: str | None = None) -> None:
        """A run `taken` with these arguments has ended."""
        _add(self._busy, name, -1)
        if group is not None:
            _add(self._groups, group, -1)
        self._on_change()

    def group_running(self, group: str) -> int:
        return self._groups.get(group, 0)

    def busy(self, name: str) -> int:
        return self._busy.get(name, 0)

    def waiting_for(self, run: Run) -> str | None:
        """What a queued run waits for: the first reason that applies, in this order (SPEC §15): its
        not_before, its full concurrency group, then an executor that can take it; None when nothing
        but a free slot."""
        if run.not_before is not None and run.not_before > now_ts():
            return f"not before {run.not_before}"
        if run.concurrency is not None:
            key, limit = run.concurrency["key"], run.concurrency["limit"]
            running = self.group_running(key)
            if running >= limit:
                return f"concurrency group {key} ({running} of {limit} running)"
        return self.executors_waiting_for(run.labels)

    def executors_waiting_for(self, labels: Sequence[str]) -> str | None:
        """Why a queued run with `labels` cannot start on any connected executor; None if one could
        take it (once it has a free slot)."""
        wanted = frozenset(labels)
        if any(wanted <= entry.labels for entry in self._entries.values()):
            return None
        if not wanted:
            return "an executor (none is connected)"
        return f"an agent with labels {','.join(sorted(wanted))}"


def _add(counts: dict[str, int], key: str, delta: int) -> None:
    """counts[key] += delta, with no entry left at zero."""
    left = counts.get(key, 0) + delta
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)
