"""Plain types every layer shares: runs and their statuses, events and batches of events, domain errors.

This module imports nothing of runsvc, so the store, the event subsystem, the services and the HTTP layer
can all use it without pointing up.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import attrs

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "timed_out", "interrupted")

TERMINAL_STATUSES = frozenset(STATUSES[2:])  # a terminal run never changes again

TRIGGERS = ("api", "job", "schedule", "retry", "rerun")  # what created a run (SPEC §15)

T = TypeVar("T")


@attrs.frozen(kw_only=True)
class Run:
    """A run as every layer sees it: the store reads it (store/runs.py), the services pass it on, and its
    JSON is made at the HTTP edge (http/run_json.py), one key per field in this order (a field's
    `metadata["json"]` names its key when the API's name is not a Python name, `try`). A new field is
    added here and as a column of `runs`: the store reads the columns these fields name (decoding the
    ones it lists as JSON); the OpenAPI document describes it (tests/http/test_run_json.py checks)."""

    id: int
    name: str | None
    command: tuple[str, ...]
    env: dict[str, str] | None  # None in a summary: lists and the runs feed do not read it (SPEC §14)
    status: str
    exit_code: int | None  # -N when killed by signal N; None before the end or when it never started
    created_at: str  # RFC 3339 UTC, as every timestamp here
    started_at: str | None
    ended_at: str | None
    created_by: str | None  # username
    last_seq: int  # seq of the run's newest event
    timeout_s: float
    labels: tuple[str, ...]  # an executor needs all of them
    executor: str | None  # "local" or "agent:<name>"; None until claimed
    attempt: int  # hand-outs so far
    # Jobs, retries, concurrency groups, delayed runs (SPEC §15).
    job_id: int | None = None  # None when not from a job, or the job was deleted
    job_name: str | None = None  # kept when the job is deleted
    trigger: str = "api"  # one of TRIGGERS
    retry_of: int | None = None  # the run whose failure this try retries
    try_number: int = attrs.field(default=1, metadata={"json": "try"})  # 1 for a first try
    not_before: str | None = None  # not claimed before this time
    scheduled_for: str | None = None  # the fire time, for trigger "schedule"
    params: dict[str, str] = attrs.field(factory=dict)  # the job's parameter values
    retries: dict[str, Any] | None = None  # {max, delay_s, backoff, on}, normalised
    concurrency: dict[str, Any] | None = None  # {key, limit}
    # Environment variable -> secret name (SPEC §17); the values are read when the run starts, never here.
    secrets: dict[str, str] = attrs.field(factory=dict)
    # For a queued run that no connected executor can take, what it waits for. Computed when the run is
    # read or published (it depends on which agents are connected then), never stored.
    waiting_for: str | None = None


@attrs.frozen(kw_only=True)
class Job:
    """A saved job (SPEC §15) as the store reads it. Nested objects are JSON-shaped dicts, normalised
    (every default filled in) before they are stored, so what is read is what the API answers. The
    answer's computed fields (`next_fires`, `last_run`) are added by the jobs service."""

    id: int
    name: str
    description: str
    command: tuple[str, ...]
    env: dict[str, str]
    timeout_s: float
    labels: tuple[str, ...]
    params: tuple[dict[str, Any], ...]  # {name, description, default, required, choices}
    retries: dict[str, Any] | None  # {max, delay_s, backoff, on}
    concurrency: dict[str, Any] | None  # {key, limit}; key None means "the job's name"
    schedule: dict[str, Any] | None  # {cron, timezone, overlap, enabled, missed}
    secrets: dict[str, str] = attrs.field(factory=dict)  # environment variable -> secret name (SPEC §17)
    # Fire times are counted from here: set when a schedule is created, changed or re-enabled, so
    # nothing before it counts as missed (SPEC §15). None without a schedule. Not in the API.
    schedule_from: str | None
    created_at: str
    created_by: str | None
    updated_at: str


@attrs.frozen(kw_only=True)
class Secret:
    """A secret as the API shows it (SPEC §17): never its value."""

    name: str
    created_at: str
    updated_at: str
    updated_by: str | None


Event = dict[str, Any]  # {"seq": int, "ts": str, "kind": str, "data": str | dict}


FRAGMENT_CAP = 256 * 1024  # characters of event JSON per WebSocket frame (≤ 1 MiB even if all 4-byte)


def _dumps(events: list[Event]) -> str:
    return json.dumps(events, ensure_ascii=False, separators=(",", ":"))[1:-1]


# Between two serialized events. It cannot occur inside a JSON string (every quote there is escaped)
# nor inside a state event's data object (whose keys are not "seq"): only at event boundaries.
_BOUNDARY = '},{"seq":'


def _split_text(text: str) -> list[str]:
    """Serialized events (array items without brackets) in pieces of at most FRAGMENT_CAP characters
    where possible (a single event larger than that stays whole), cut at event boundaries."""
    pieces: list[str] = []
    start = 0
    while len(text) - start > FRAGMENT_CAP:
        cut = text.rfind(_BOUNDARY, start, start + FRAGMENT_CAP)
        if cut == -1:  # the next event alone is larger than the cap: it becomes a piece of its own
            cut = text.find(_BOUNDARY, start + FRAGMENT_CAP)
            if cut == -1:
                break
        pieces.append(text[start : cut + 1])
        start = cut + 2
    pieces.append(text[start:])
    return pieces


class EventBatch:
    """Consecutive events of one run, in seq order; serialized to JSON at most once, in fragments of at
    most FRAGMENT_CAP characters, each spliced as is into one WebSocket frame for every subscriber.

    A batch read back from SQLite arrives already as JSON (SQLite builds it); its events are decoded
    only if somebody asks for them.
    """

    __slots__ = ("run_id", "first_seq", "last_seq", "_events", "_fragments", "_terminal", "_derived")

    def __init__(self, run_id: int, events: list[Event], fragments: list[str] | None = None):
        self.run_id = run_id
        self.first_seq: int = events[0]["seq"]
        self.last_seq: int = events[-1]["seq"]
        self._events: list[Event] | None = events
        self._fragments = fragments
        self._derived: dict[Hashable, Any] | None = None
        last = events[-1]
        self._terminal = last["kind"] == "state" and last["data"]["status"] in TERMINAL_STATUSES

    @classmethod
    def serialized(cls, run_id: int, events: list[Event]) -> EventBatch:
        """A batch whose JSON is built now, for the writer thread: the Trio thread then only splices it."""
        return cls(run_id, events, _split_text(_dumps(events)))

    @classmethod
    def from_json(cls, run_id: int, text: str, first_seq: int, last_seq: int, terminal: bool) -> EventBatch:
        """A batch from its JSON array items (without brackets), for events read back from SQLite."""
        batch = cls.__new__(cls)
        batch.run_id, batch.first_seq, batch.last_seq = run_id, first_seq, last_seq
        batch._events, batch._fragments, batch._terminal = None, _split_text(text), terminal
        batch._derived = None
        return batch

    @classmethod
    def concat(cls, batches: list[EventBatch]) -> EventBatch:
        """Consecutive batches as one, reusing their JSON: small fragments are packed together."""
        if len(batches) == 1:
            return batches[0]
        # Pack fragments into groups of at most FRAGMENT_CAP characters, each joined once: appending to
        # a string in a loop would copy it again for every fragment (quadratic in the group's size).
        groups: list[list[str]] = []
        size = 0
        for fragment in (f for batch in batches for f in batch.fragments):
            if groups and size + 1 + len(fragment) <= FRAGMENT_CAP:
                groups[-1].append(fragment)
                size += 1 + len(fragment)
            else:
                groups.append([fragment])
                size = len(fragment)
        fragments = [",".join(group) for group in groups]
        merged = cls.__new__(cls)
        merged.run_id = batches[0].run_id
        merged.first_seq, merged.last_seq = batches[0].first_seq, batches[-1].last_seq
        merged._fragments, merged._terminal = fragments, batches[-1].is_terminal
        merged._derived = None
        events: list[Event] | None = []
        for batch in batches:
            if batch._events is None or events is None:
                events = None  # some were read back as JSON only: decode the merged batch if asked
                break
            events.extend(batch._events)
        merged._events = events
        return merged

    def __len__(self) -> int:
        """The number of events (seqs are consecutive), without decoding them."""
        return self.last_seq - self.first_seq + 1

    @property
    def events(self) -> list[Event]:
        if self._events is None:
            self._events = json.loads("[" + ",".join(self._fragments or ()) + "]")
        return self._events

    @property
    def fragments(self) -> list[str]:
        """The events as JSON array items without the brackets, in pieces of at most FRAGMENT_CAP."""
        if self._fragments is None:
            self._fragments = _split_text(_dumps(self.events))
        return self._fragments

    def wrapped(self, prefix: str, suffix: str) -> list[str]:
        """Each fragment between `prefix` and `suffix` (a whole message around the events), built once
        per batch: every subscriber that sends this batch sends the same strings."""
        return self.derived(("wrapped", prefix, suffix), lambda batch: [prefix + f + suffix for f in batch.fragments])

    def derived(self, key: Hashable, build: Callable[[EventBatch], T]) -> T:
        """`build(self)`, computed once per batch and `key` (a frame's text, its bytes on the wire): every
        subscriber that sends this batch shares it."""
        derived = self._derived
        if derived is None:
            derived = self._derived = {}
        try:
            return derived[key]
        except KeyError:
            value = derived[key] = build(self)
            return value

    @property
    def json_fragment(self) -> str:
        """All the events as JSON array items without the brackets."""
        return ",".join(self.fragments)

    @property
    def is_terminal(self) -> bool:
        """Whether the batch holds the run's terminal `state` event (always its last event)."""
        return self._terminal

    def after(self, seq: int) -> EventBatch | None:
        """The part of this batch with seq > `seq` (None if nothing is left)."""
        if seq < self.first_seq:
            return self
        if seq >= self.last_seq:
            return None
        return EventBatch(self.run_id, self.events[seq - self.first_seq + 1 :])


def state_data(status: str, exit_code: int | None = None, reason: str | None = None) -> dict[str, Any]:
    """The data of a `state` event."""
    return {"status": status, "exit_code": exit_code, "reason": reason}


# ---- domain errors ---------------------------------------------------------------------------------


class RunNotFound(Exception):
    """No run with that id (never existed, or deleted by retention)."""


class StatusConflict(Exception):
    """The run is not in the status the transition requires (e.g. cancelling a finished run)."""


class RunGone(Exception):
    """The run was deleted while subscribed."""


class UnknownSecret(Exception):
    """A run or job names a secret that does not exist (400; the message names it)."""


class StaleReport(Exception):
    """An agent reported on an attempt that is not the run's current one (or the run has ended)."""


# ---- webhooks (SPEC §17) ---------------------------------------------------------------------------

WEBHOOK_EVENTS = ("run.finished",)  # the event types a webhook can ask for


@attrs.frozen(kw_only=True)
class Webhook:
    """A webhook as the API shows it; its signing secret stays in the store, sealed."""

    id: int
    url: str
    events: tuple[str, ...]
    job: str | None  # a job name; None: every run
    statuses: tuple[str, ...]  # terminal statuses
    created_at: str
    created_by: str | None

    def matches(self, event: str, run: Run) -> bool:
        """Whether a run that reached its terminal status should be delivered to this webhook."""
        return (
            event in self.events and run.status in self.statuses and (self.job is None or self.job == run.job_name)
        )


@attrs.frozen(kw_only=True)
class Delivery:
    """One row of the webhook outbox: what was (or will be) POSTed for one event, and how it went."""

    id: int
    webhook_id: int
    event: str
    run_id: int
    attempts: int  # POSTs made, the successful one included
    last_status_code: int | None
    last_error: str | None
    delivered_at: str | None
    next_try_at: str | None  # None once delivered
    created_at: str


class WebhookNotFound(Exception):
    """No webhook with that id."""
