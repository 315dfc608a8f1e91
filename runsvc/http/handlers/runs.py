"""Runs: submit, list, read, cancel, events page, raw log."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from quart import Response

from ...model import STATUSES
from ...names import MAX_LABELS, NAME_PATTERN, NAME_RULE
from ...secrets.service import NAME_RULE as SECRET_NAME_RULE
from ...secrets.service import is_secret_name
from ..access import current_user
from ..errors import InvalidRequest
from ..query import choice_list_param, int_param, refuse_unknown_params
from ..run_json import run_json
from ..run_options import (
    NOT_BEFORE,
    RETRIES,
    concurrency,
    normalise_concurrency,
    normalise_not_before,
    normalise_retries,
)
from ..types import json_response, services
from ..validation import number, read_json_object, string, string_list, string_map

MAX_TIMEOUT_S = 7 * 86400  # 7 days
DEFAULT_TIMEOUT_S = 3600
MAX_NAME = 200
MAX_FIELD_JSON_BYTES = 64 * 1024  # command and env, each as JSON (SPEC §14)
RESERVED_ENV = "RUNSVC_RUN_ID"

SUBMIT_FIELDS = {
    "command": string_list(non_empty=True),
    "env": string_map(required=False, default={}),
    "timeout_s": number(required=False, default=DEFAULT_TIMEOUT_S, exclusive_minimum=0, maximum=MAX_TIMEOUT_S),
    "name": string(required=False, nullable=True, default=None, max_length=MAX_NAME),
    "labels": string_list(
        required=False, default=[], max_items=MAX_LABELS, item_pattern=NAME_PATTERN, item_rule=NAME_RULE
    ),
    "retries": RETRIES,
    "concurrency": concurrency(key_required=True),
    "not_before": NOT_BEFORE,
    # Environment variable -> secret name (SPEC §17); the values are read when the run starts.
    "secrets": string_map(required=False, default={}),
}


def check_submission(body: Mapping[str, Any]) -> None:
    """Rules the field types cannot say: things exec() would refuse or runsvc reserves, and sizes. Checks
    the `command` and `env` that `body` holds (a job's PATCH may hold either or neither)."""
    for name in ("command", "env", "secrets"):
        if name not in body:
            continue
        size = len(json.dumps(body[name], ensure_ascii=False).encode())
        if size > MAX_FIELD_JSON_BYTES:
            raise InvalidRequest(f"{name} must be at most {MAX_FIELD_JSON_BYTES} bytes of JSON (got {size})")
    # NUL in any field was refused by read_json_object (validation.nul_place), naming the place.
    if "command" in body and body["command"][0] == "":
        raise InvalidRequest("command[0] must not be empty")
    for key in body.get("env", {}):
        if key == RESERVED_ENV:
            raise InvalidRequest(f"env cannot set {RESERVED_ENV}")
        if not key or "=" in key:
            raise InvalidRequest(f"env key {key!r} must be non-empty without '=' or NUL")
    for key, secret in body.get("secrets", {}).items():
        if key == RESERVED_ENV:
            raise InvalidRequest(f"secrets cannot set {RESERVED_ENV}")
        if not key or "=" in key:
            raise InvalidRequest(f"secrets key {key!r} must be non-empty without '=' or NUL")
        if not is_secret_name(secret):
            raise InvalidRequest(f"secrets.{key} must be a secret name: {SECRET_NAME_RULE}")
    both = env_and_secrets(body.get("env", {}), body.get("secrets", {}))
    if both is not None:
        raise InvalidRequest(both)


def env_and_secrets(env: Mapping[str, str], secrets: Mapping[str, str]) -> str | None:
    """The complaint about a variable set both in `env` and in `secrets` (which would win is nobody's
    guess), or None."""
    for key in secrets:
        if key in env:
            return f"secrets.{key}: {key} is set in env too; a variable comes from one of them"
    return None


async def submit_run() -> Response:
    body = await read_json_object(SUBMIT_FIELDS)
    check_submission(body)
    run = await services().runs.submit(
        command=body["command"],
        env=body["env"],
        timeout_s=float(body["timeout_s"]),
        name=body["name"],
        created_by=current_user().username,
        labels=list(dict.fromkeys(body["labels"])),
        retries=normalise_retries(body["retries"]),
        concurrency=normalise_concurrency(body["concurrency"]),
        not_before=normalise_not_before(body["not_before"]),
        secrets=body["secrets"],
    )
    return json_response({"run": run_json(run)}, status=201)


async def list_runs() -> Response:
    refuse_unknown_params(("status", "limit", "before", "job_id"))
    statuses = choice_list_param("status", STATUSES)
    limit = int_param("limit", default=50, minimum=1, maximum=500)
    before = int_param("before", default=None, minimum=1)
    job_id = int_param("job_id", default=None, minimum=1)
    runs, next_before = await services().runs.list(statuses, limit, before, job_id)
    return json_response({"runs": [run_json(run, summary=True) for run in runs], "next": next_before})


async def get_run(run_id: int) -> Response:
    return json_response({"run": run_json(await services().runs.get(run_id))})


async def cancel_run(run_id: int) -> Response:
    run = await services().runs.cancel(run_id, by=current_user().username)
    return json_response({"run": run_json(run)}, status=202)


async def rerun_run(run_id: int) -> Response:
    run = await services().runs.rerun(run_id, created_by=current_user().username)
    return json_response({"run": run_json(run)}, status=201)


async def run_events(run_id: int) -> Response:
    refuse_unknown_params(("after_seq", "limit"))
    after_seq = int_param("after_seq", default=0, minimum=0)
    limit = int_param("limit", default=1000, minimum=1, maximum=10_000)
    page = await services().runs.events_page(run_id, after_seq, limit)
    # The events' JSON is spliced in as SQLite built it, not decoded and encoded again.
    tail = json.dumps({"last_seq": page.last_seq, "complete": page.complete})[1:]
    body = '{"events":[' + page.events_json + "]," + tail
    return Response(body, content_type="application/json")


async def run_log(run_id: int) -> Response:
    refuse_unknown_params(("download",))
    download = int_param("download", default=0, minimum=0, maximum=1)  # 1: save as a file
    run = await services().runs.get(run_id)
    lines = services().runs.log_lines(run_id, run.last_seq)
    response = Response(lines, content_type="text/plain; charset=utf-8")
    disposition = "attachment" if download else "inline"
    response.headers["Content-Disposition"] = f'{disposition}; filename="run-{run_id}.log"'
    return response

