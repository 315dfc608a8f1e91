"""The webhook outbox's writing side: in the transaction that records a run's end, one delivery per
matching webhook (SPEC §17).

Every terminal transition goes through `store.runs.finish`, which calls an `Outbox` with the ended run
while the transaction is still open, so the delivery commits with the status or not at all. The set of
webhooks is kept in memory (loaded at start, replaced after every committed change of a webhook), so a
run that no webhook matches costs no SQL: the common case, a server without webhooks, stays as fast as
before. A match costs one INSERT … SELECT (the body is the same for every matching webhook).

The set is read in the writer thread and replaced on the Trio thread by assigning a new tuple: a reader
sees the old set or the new one, never half of either. A run ending in the batch that creates a webhook
may miss it; one ending in the batch that deletes one is skipped by the INSERT's join (no foreign-key
failure can reach a run's end).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from ..model import Run, Webhook
from ..store import webhooks as sql
from ..store.dialect import Connection

RUN_FINISHED = "run.finished"


class Outbox:
    def __init__(self, summary: Callable[[Run], dict[str, Any]], on_written: Callable[[], None] | None = None):
        self._summary = summary  # the run as the API lists it (no env)
        self._webhooks: tuple[Webhook, ...] = ()
        self._written = False  # set in the writer thread; read after the commit
        self._on_written = on_written
        self.deliveries_written = 0

    @property
    def webhooks(self) -> tuple[Webhook, ...]:
        return self._webhooks

    def replace(self, webhooks: Sequence[Webhook]) -> None:
        """The webhooks as committed (Trio thread, after the commit that changed them)."""
        self._webhooks = tuple(webhooks)

    def __call__(self, conn: Connection, run: Run) -> None:
        """Writer thread, inside the transaction that ends `run` (its fields as committed, `last_seq`
        counting the terminal event)."""
        matching = [webhook.id for webhook in self._webhooks if webhook.matches(RUN_FINISHED, run)]
        if not matching:
            return
        body = json.dumps({"type": RUN_FINISHED, "run": self._summary(run)}, ensure_ascii=False)
        assert run.ended_at is not None  # a terminal run
        self.deliveries_written += sql.insert_deliveries(
            conn, matching, event=RUN_FINISHED, run_id=run.id, body=body, ts=run.ended_at
        )
        self._written = True

    def committed(self) -> None:
        """Trio thread, after a commit that ended runs: wake the sender if deliveries were written (a
        write that was rolled back after all only costs the sender one look)."""
        if self._written:
            self._written = False
            if self._on_written is not None:
                self._on_written()


def no_outbox(conn: Connection, run: Run) -> None:
    """For tools and tests that end runs without a server: no webhook is told."""
