"""The executor interface: what the scheduler gives an executor and what it gets back."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import attrs
import trio

from ..secrets.masking import Masker


class OutputSink(Protocol):
    """Receives output events in order: ("stdout" | "stderr" | "system", one line of text). Lines read
    together are passed together, so they are appended (and committed) together.

    `transition(conn)`, if given, runs in the transaction that stores the lines and may refuse them by
    raising (agents: fencing by attempt, a chunk stored once); it runs even if the output cap drops
    every line."""

    async def __call__(
        self, items: Sequence[tuple[str, str]], transition: Callable[[Any], None] | None = None
    ) -> None: ...


@attrs.frozen
class RunSpec:
    id: int
    command: tuple[str, ...]
    env: dict[str, str]  # the run's env with its secrets' values
    timeout_s: float
    workdir: Path  # fresh per-run directory; the executor creates it and removes it afterwards
    attempt: int = 1  # the hand-out this execution is (agents fence their reports by it)
    kill_grace_s: float = 10.0  # between SIGTERM and SIGKILL (told to agents with the assignment)
    adopted_chunk: int | None = None  # set when a restarted server takes over an agent run in flight
    masked: tuple[str, ...] = ()  # variables of `env` holding secrets: their values are masked in the output

    def masker(self) -> Masker:
        """What masks this run's secrets in its output (SPEC §17)."""
        return Masker(self.env[name] for name in self.masked if name in self.env)


@attrs.frozen
class Outcome:
    status: str  # succeeded | failed | cancelled | timed_out | interrupted
    exit_code: int | None  # -N when killed by signal N; None when the command never started
    reason: str | None = None  # human text: "spawn failed: …", "timed out after 5s", …
    # Called once the outcome is recorded (an agent is told it may forget the run).
    recorded: Callable[[], Awaitable[None]] | None = attrs.field(default=None, eq=False)


@attrs.define(eq=False)
class StopRequest:
    """Set once, by a cancel, a timeout or shutdown; the executor then stops the run."""

    status: str | None = None  # the terminal status the run gets: cancelled | timed_out | interrupted
    reason: str | None = None
    event: trio.Event = attrs.Factory(trio.Event)

    def request(self, status: str, reason: str) -> bool:
        """Ask for the run to stop; the first request wins. True if this call was the first."""
        if self.event.is_set():
            return False
        self.status, self.reason = status, reason
        self.event.set()
        return True

    @property
    def requested(self) -> bool:
        return self.event.is_set()


class Executor(Protocol):
    async def execute(self, spec: RunSpec, emit: OutputSink, stop: StopRequest) -> Outcome:
        """Run `spec` to completion, passing its output to `emit`; honour `stop` at any time.

        Returns the outcome once nothing of the run is left running. Never raises for a failure of
        the command itself (that is an Outcome with status failed).
        """
        ...

    def kill_all_now(self) -> None:
        """Kill whatever runs are executing, at once and without waiting (the server is exiting on a
        second signal and will not wait for them)."""
        ...
