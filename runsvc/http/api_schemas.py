"""The JSON Schemas of the objects the API answers with (the OpenAPI document's components): runs, jobs,
users, agents, tokens. A run's schema names exactly the fields of `model.Run` (tests/http/test_run_json.py
checks), so a new field cannot go undocumented."""

from __future__ import annotations

from typing import Any

from ..accounts import ROLES
from ..model import STATUSES, TERMINAL_STATUSES, TRIGGERS, WEBHOOK_EVENTS

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


TIMESTAMP: Schema = {"type": "string", "description": "RFC 3339 UTC, e.g. 2026-11-27T09:26:22.123456Z"}

SECRET_MAP: Schema = {
    "type": "object", "additionalProperties": {"type": "string"},
    "description": "environment variable -> secret name; the values are never shown",
}

SCHEMAS: dict[str, Schema] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "additionalProperties": False,
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            }
        },
    },
    "User": {
        "type": "object",
        "required": ["id", "username", "role", "disabled", "created_at"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "integer"},
            "username": {"type": "string"},
            "role": {"enum": list(ROLES)},
            "disabled": {"type": "boolean"},
            "created_at": TIMESTAMP,
        },
    },
    "Run": {
        "type": "object",
        "required": ["id", "name", "command", "env", "status", "exit_code", "created_at", "started_at",
                     "ended_at", "created_by", "last_seq", "timeout_s"],
        "properties": {
            "id": {"type": "integer"},
            "name": nullable({"type": "string"}),
            "command": {"type": "array", "items": {"type": "string"}},
            "env": {"type": "object", "additionalProperties": {"type": "string"}},
            "status": {"enum": list(STATUSES)},
            "exit_code": nullable({"type": "integer"}),
            "created_at": TIMESTAMP,
            "started_at": nullable(TIMESTAMP),
            "ended_at": nullable(TIMESTAMP),
            "created_by": nullable({"type": "string"}),
            "last_seq": {"type": "integer", "minimum": 0},
            "timeout_s": {"type": "number"},
            "labels": {"type": "array", "items": {"type": "string"}},
            "executor": nullable({"type": "string", "description": "local, agent:<name>, or null while queued"}),
            "attempt": {"type": "integer", "minimum": 0},
            "job_id": nullable({"type": "integer", "description": "null when not from a job or the job was deleted"}),
            "job_name": nullable({"type": "string", "description": "kept when the job is deleted"}),
            "trigger": {"enum": list(TRIGGERS)},
            "retry_of": nullable({"type": "integer", "description": "the run whose failure this try retries"}),
            "try": {"type": "integer", "minimum": 1},
            "not_before": nullable(TIMESTAMP),
            "scheduled_for": nullable(TIMESTAMP),
            "params": {"type": "object", "additionalProperties": {"type": "string"}},
            "retries": nullable({"$ref": "#/components/schemas/Retries"}),
            "concurrency": nullable({"$ref": "#/components/schemas/Concurrency"}),
            "secrets": SECRET_MAP,
            "waiting_for": nullable(
                {"type": "string", "description": "what a queued run no connected executor can take waits for"}
            ),
        },
    },
    "Retries": {
        "type": "object",
        "required": ["max", "delay_s", "backoff", "on"],
        "additionalProperties": False,
        "properties": {
            "max": {"type": "integer", "minimum": 0, "maximum": 10},
            "delay_s": {"type": "number", "minimum": 0, "maximum": 86400},
            "backoff": {"enum": ["fixed", "exponential"]},
            "on": {"type": "array", "minItems": 1, "uniqueItems": True,
                   "items": {"enum": ["failed", "timed_out"]}},
        },
    },
    "Concurrency": {
        "type": "object",
        "required": ["key", "limit"],
        "additionalProperties": False,
        "properties": {
            "key": {"type": "string", "minLength": 1, "maxLength": 200},
            "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
        },
    },
    # What lists and the runs feed carry (SPEC §14): a run without its `env`.
    "RunSummary": {},  # filled in below from Run
    "Agent": {
        "type": "object",
        "required": ["id", "name", "labels", "connected", "last_seen_at", "running", "created_at"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "integer"},
            "name": {"type": "string"},
            "labels": {"type": "array", "items": {"type": "string"}},
            "connected": {"type": "boolean"},
            "last_seen_at": nullable(TIMESTAMP),
            "running": {"type": "array", "items": {"type": "integer"}},
            "created_at": TIMESTAMP,
        },
    },
    "EnrollmentToken": {
        "type": "object",
        "required": ["id", "labels", "created_at", "expires_at", "used_at"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "integer"},
            "labels": {"type": "array", "items": {"type": "string"}},
            "created_at": TIMESTAMP,
            "expires_at": TIMESTAMP,
            "used_at": nullable(TIMESTAMP),
        },
    },
    "Event": {
        "type": "object",
        "required": ["seq", "ts", "kind", "data"],
        "properties": {
            "seq": {"type": "integer", "minimum": 1},
            "ts": TIMESTAMP,
            "kind": {"enum": ["state", "stdout", "stderr", "system"]},
            "data": {"anyOf": [{"type": "string"}, {"type": "object"}]},
        },
    },
    "ApiToken": {
        "type": "object",
        "required": ["id", "name", "username", "role", "created_at", "expires_at", "last_used_at"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "integer"},
            "name": {"type": "string"},
            "username": {"type": "string"},
            "role": {"enum": list(ROLES)},
            "created_at": TIMESTAMP,
            "expires_at": nullable(TIMESTAMP),
            "last_used_at": nullable(TIMESTAMP),
        },
    },
    "Secret": {
        "type": "object",
        "required": ["name", "created_at", "updated_at", "updated_by"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]{0,63}$"},
            "created_at": TIMESTAMP,
            "updated_at": TIMESTAMP,
            "updated_by": nullable({"type": "string"}),
        },
    },
    # Jobs (SPEC §15): every nested object normalised, each default filled in.
    "Job": {
        "type": "object",
        "required": ["id", "name", "description", "command", "env", "timeout_s", "labels", "params", "retries",
                     "concurrency", "schedule", "secrets", "created_at", "created_by", "updated_at", "next_fires",
                     "last_run"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "integer"},
            "name": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,100}$"},
            "description": {"type": "string"},
            "command": {"type": "array", "items": {"type": "string"}},
            "env": {"type": "object", "additionalProperties": {"type": "string"}},
            "timeout_s": {"type": "number"},
            "labels": {"type": "array", "items": {"type": "string"}},
            "params": {"type": "array", "items": {"$ref": "#/components/schemas/JobParam"}},
            "retries": nullable({"$ref": "#/components/schemas/Retries"}),
            "concurrency": nullable({"$ref": "#/components/schemas/JobConcurrency"}),
            "schedule": nullable({"$ref": "#/components/schemas/Schedule"}),
            "secrets": SECRET_MAP,
            "created_at": TIMESTAMP,
            "created_by": nullable({"type": "string"}),
            "updated_at": TIMESTAMP,
            "next_fires": {"type": "array", "items": TIMESTAMP, "description": "[] without an enabled schedule"},
            "last_run": nullable({"$ref": "#/components/schemas/RunSummary"}),
        },
    },
    "JobParam": {
        "type": "object",
        "required": ["name", "description", "default", "required", "choices"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}$",
                     "description": "a run gets the value as PARAM_<NAME in upper case>"},
            "description": {"type": "string"},
            "default": nullable({"type": "string"}),
            "required": {"type": "boolean"},
            "choices": nullable({"type": "array", "items": {"type": "string"}}),
        },
    },
    "JobConcurrency": {
        "type": "object",
        "required": ["key", "limit"],
        "additionalProperties": False,
        "properties": {
            "key": nullable({"type": "string", "description": "null: each run of the job takes the job's name"}),
            "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
        },
    },
    "Schedule": {
        "type": "object",
        "required": ["cron", "timezone", "overlap", "enabled", "missed"],
        "additionalProperties": False,
        "properties": {
            "cron": {"type": "string", "description": "five fields, or @hourly, @daily, @weekly, @monthly, @yearly"},
            "timezone": {"type": "string", "description": "an IANA name"},
            "overlap": {"enum": ["skip", "allow", "cancel_previous"]},
            "enabled": {"type": "boolean"},
            "missed": {"enum": ["run_once", "skip"]},
        },
    },
    "Fire": {
        "type": "object",
        "required": ["scheduled_for", "outcome", "run_id"],
        "additionalProperties": False,
        "properties": {
            "scheduled_for": TIMESTAMP,
            "outcome": {"enum": ["started", "skipped_overlap", "skipped_missed", "cancelled_previous"]},
            "run_id": nullable({"type": "integer", "description": "the run it started"}),
        },
    },
    "Webhook": {
        "type": "object",
        "required": ["id", "url", "events", "job", "statuses", "created_at"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "integer"},
            "url": {"type": "string"},
            "events": {"type": "array", "items": {"enum": list(WEBHOOK_EVENTS)}},
            "job": nullable({"type": "string", "description": "a job name; null: every run"}),
            "statuses": {"type": "array", "items": {"enum": [s for s in STATUSES if s in TERMINAL_STATUSES]}},
            "created_at": TIMESTAMP,
        },
    },
    "WebhookDelivery": {
        "type": "object",
        "required": ["id", "event", "run_id", "attempts", "last_status_code", "last_error", "delivered_at",
                     "next_try_at"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "integer", "description": "also the X-Runsvc-Delivery header"},
            "event": {"enum": list(WEBHOOK_EVENTS)},
            "run_id": {"type": "integer"},
            "attempts": {"type": "integer", "description": "POSTs made, the successful one included"},
            "last_status_code": nullable({"type": "integer"}),
            "last_error": nullable({"type": "string"}),
            "delivered_at": nullable(TIMESTAMP),
            "next_try_at": nullable({**TIMESTAMP, "description": "null once delivered"}),
        },
    },
}

SCHEMAS["RunSummary"] = {
    **SCHEMAS["Run"],
    "required": [name for name in SCHEMAS["Run"]["required"] if name != "env"],
    "properties": {name: value for name, value in SCHEMAS["Run"]["properties"].items() if name != "env"},
}
