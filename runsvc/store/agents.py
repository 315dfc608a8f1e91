"""SQL for remote agents: enrollment tokens, agents, and the agent side of runs (fenced output).

Secrets (enrollment tokens, agent secrets) are stored only as their sha256.
"""

from __future__ import annotations

import json
from typing import Any

from ..model import StaleReport
from .dialect import Connection, Row

TOKEN_COLUMNS = "id, labels, created_at, expires_at, used_at"
AGENT_COLUMNS = "id, name, labels, created_at, last_seen_at"


def _with_labels(row: Row) -> dict[str, Any]:
    item = dict(row)
    item["labels"] = json.loads(item["labels"])
    return item


# ---- enrollment tokens -------------------------------------------------------------------------------


def create_token(
    conn: Connection, token_hash: bytes, labels: list[str], created_by: str | None, ts: str,
    expires_at: str,
) -> dict[str, Any]:
    row = conn.execute(
        f"INSERT INTO enrollment_tokens (token_hash, labels, created_by, created_at, expires_at) "
        f"VALUES (?, ?, ?, ?, ?) RETURNING {TOKEN_COLUMNS}",
        (token_hash, json.dumps(labels), created_by, ts, expires_at),
    ).fetchone()
    return _with_labels(row)


def list_tokens(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(f"SELECT {TOKEN_COLUMNS} FROM enrollment_tokens ORDER BY id").fetchall()
    return [_with_labels(row) for row in rows]


def delete_token(conn: Connection, token_id: int) -> bool:
    return conn.execute("DELETE FROM enrollment_tokens WHERE id = ?", (token_id,)).rowcount == 1


class NameTaken(Exception):
    """An agent with that name exists already."""


def enroll(
    conn: Connection, token_hash: bytes, name: str, asked_labels: list[str], secret_hash: bytes,
    now: str,
) -> dict[str, Any] | None:
    """Use up a live token and create the agent, in one transaction. None: unknown, used or expired
    token. Raises NameTaken (the token stays unused: the transaction's savepoint rolls back)."""
    token = conn.execute(
        "SELECT id, labels FROM enrollment_tokens WHERE token_hash = ? AND used_at IS NULL AND expires_at > ?",
        (token_hash, now),
    ).fetchone()
    if token is None:
        return None
    if conn.execute("SELECT 1 FROM agents WHERE name = ?", (name,)).fetchone():
        raise NameTaken(f"an agent named {name} exists already")
    labels = json.loads(token["labels"]) or asked_labels
    conn.execute("UPDATE enrollment_tokens SET used_at = ? WHERE id = ?", (now, token["id"]))
    row = conn.execute(
        f"INSERT INTO agents (name, labels, secret_hash, created_at) VALUES (?, ?, ?, ?) "
        f"RETURNING {AGENT_COLUMNS}",
        (name, json.dumps(labels), secret_hash, now),
    ).fetchone()
    return _with_labels(row)


# ---- agents ------------------------------------------------------------------------------------------


def list_agents(conn: Connection) -> list[dict[str, Any]]:
    return [_with_labels(row) for row in conn.execute(f"SELECT {AGENT_COLUMNS} FROM agents ORDER BY id")]


def agent_by_secret(conn: Connection, secret_hash: bytes) -> dict[str, Any] | None:
    row = conn.execute(f"SELECT {AGENT_COLUMNS} FROM agents WHERE secret_hash = ?", (secret_hash,)).fetchone()
    return _with_labels(row) if row else None


def delete_agent(conn: Connection, agent_id: int) -> dict[str, Any] | None:
    row = conn.execute(f"DELETE FROM agents WHERE id = ? RETURNING {AGENT_COLUMNS}", (agent_id,)).fetchone()
    return _with_labels(row) if row else None


def touch_agent(conn: Connection, agent_id: int, ts: str) -> None:
    conn.execute("UPDATE agents SET last_seen_at = ? WHERE id = ?", (ts, agent_id))


# ---- the agent side of runs --------------------------------------------------------------------------


def store_chunks(conn: Connection, run_id: int, attempt: int, first_chunk: int, last_chunk: int) -> None:
    """Transition for an append of output chunks first_chunk..last_chunk: only for the run's current
    attempt while it runs (fencing), and only right after the last chunk stored (never twice).

    Raises StaleReport for another attempt or a finished run, ChunkStored if already stored."""
    row = conn.execute(
        "SELECT status, attempt, agent_chunk FROM runs WHERE id = ?", (run_id,)
    ).fetchone()
    if row is None or row["attempt"] != attempt or row["status"] != "running":
        raise StaleReport(f"run {run_id} attempt {attempt} is not current")
    if first_chunk != row["agent_chunk"] + 1:
        raise ChunkOutOfOrder(row["agent_chunk"])
    conn.execute("UPDATE runs SET agent_chunk = ? WHERE id = ?", (last_chunk, run_id))


class ChunkOutOfOrder(Exception):
    """The chunk is not the one after the last stored (already stored, or one is missing)."""

    def __init__(self, stored: int):
        super().__init__(f"last stored chunk is {stored}")
        self.stored = stored
