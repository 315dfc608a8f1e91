"""The run options shared by plain runs and jobs (SPEC §15): retries, concurrency, not_before — what
POST /runs accepts, echoes normalised, and refuses with a 400 naming the field."""

from __future__ import annotations

import sys

import pytest
import trio

from runsvc.http.errors import InvalidRequest
from runsvc.http.run_options import (
    NOT_BEFORE,
    RETRIES,
    concurrency,
    normalise_concurrency,
    normalise_not_before,
    normalise_retries,
)
from runsvc.http.validation import validate_object
from tests.helpers import add_user, assert_error, login

RUNS = "/api/v1/runs"
PY = sys.executable
FIELDS = {"retries": RETRIES, "concurrency": concurrency(), "not_before": NOT_BEFORE}


@pytest.fixture(name="operator")
async def _operator(server, client):
    """`client` logged in as an operator; yields its CSRF token."""
    await add_user(server, "olga", "operator")
    return await login(client, "olga")


async def _submit(client, csrf, extra, status=201):
    body = {"command": [PY, "-c", "pass"], **extra}
    response = await client.post(RUNS, json=body, headers={"X-CSRF-Token": csrf})
    assert response.status_code == status, response.text
    return response.json()["run"] if status == 201 else response


def test_retries_defaults_filled_in():
    """An empty retries object becomes every default; `on` is folded to the canonical order."""
    assert normalise_retries({}) == {"max": 0, "delay_s": 10, "backoff": "exponential", "on": ["failed", "timed_out"]}
    assert normalise_retries({"max": 3, "on": ["timed_out", "failed", "timed_out"]}) == {
        "max": 3, "delay_s": 10, "backoff": "exponential", "on": ["failed", "timed_out"]}
    assert normalise_retries(None) is None


def test_concurrency_limit_defaults_to_one_and_key_may_be_optional():
    """limit defaults to 1; a job's field leaves key optional while a plain run's requires it."""
    assert normalise_concurrency({"key": "db"}) == {"key": "db", "limit": 1}
    assert normalise_concurrency({"limit": 4}) == {"limit": 4}
    assert validate_object({"concurrency": {"limit": 4}}, {"concurrency": concurrency(key_required=False)})
    with pytest.raises(InvalidRequest, match="concurrency.key is required"):
        validate_object({"concurrency": {"limit": 4}}, FIELDS)


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("2026-12-01T08:00:00Z", "2026-12-01T08:00:00.000000Z"),
        ("2026-12-01T09:30:00.5+01:30", "2026-12-01T08:00:00.500000Z"),
        ("2026-12-01t08:00:00.1234567891z", "2026-12-01T08:00:00.123456Z"),
        ("2026-12-01 03:00:00-05:00", "2026-12-01T08:00:00.000000Z"),
    ],
)
def test_not_before_normalised_to_utc(text, normalised):
    """Any RFC 3339 offset becomes the fixed-width UTC text runsvc stores."""
    assert validate_object({"not_before": text}, FIELDS)["not_before"] == text
    assert normalise_not_before(text) == normalised


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"retries": {"max": 11}}, "retries.max must be <= 10"),
        ({"retries": {"max": -1}}, "retries.max must be >= 0"),
        ({"retries": {"max": 1.5}}, "retries.max must be an integer"),
        ({"retries": {"delay_s": 86401}}, "retries.delay_s must be <= 86400"),
        ({"retries": {"backoff": "linear"}}, "retries.backoff must be one of fixed, exponential"),
        ({"retries": {"on": []}}, "retries.on must not be empty"),
        ({"retries": {"on": ["cancelled"]}}, "retries.on[0] must be one of failed, timed_out"),
        ({"retries": {"backof": "fixed"}}, "unknown field: retries.backof"),
        ({"retries": {"max": None}}, "retries.max must be an integer"),
        ({"retries": 3}, "retries must be an object"),
        ({"concurrency": {"limit": 2}}, "concurrency.key is required"),
        ({"concurrency": {"key": ""}}, "concurrency.key must be at least 1 characters"),
        ({"concurrency": {"key": "k" * 201}}, "concurrency.key must be at most 200 characters"),
        ({"concurrency": {"key": "k", "limit": 0}}, "concurrency.limit must be >= 1"),
        ({"concurrency": {"key": "k", "limit": 1001}}, "concurrency.limit must be <= 1000"),
        ({"concurrency": {"key": "k", "size": 2}}, "unknown field: concurrency.size"),
        ({"not_before": "2026-12-01T08:00:00"}, "not_before must be an RFC 3339 date-time with a UTC offset"),
        ({"not_before": "2026-12-01"}, "not_before must be an RFC 3339 date-time with a UTC offset"),
        ({"not_before": "2026-13-01T08:00:00Z"}, "not_before must be a date-time between years 1000 and 9999"),
        ({"not_before": "0999-12-01T08:00:00Z"}, "not_before must be a date-time between years 1000 and 9999"),
        ({"not_before": "9999-12-31T23:00:00-05:00"}, "not_before must be a date-time between years"),
        ({"not_before": 1700000000}, "not_before must be a string"),
    ],
)
async def test_submit_refuses_bad_options(client, operator, body, message):
    """Each bad option is a 400 naming the field by its path."""
    with trio.fail_after(10):
        response = await _submit(client, operator, body, status=400)
    assert_error(response, 400, "invalid_request")
    assert message in response.json()["error"]["message"]


async def test_submit_echoes_options_normalised(client, operator):
    """POST /runs stores the options and answers them with defaults filled in and not_before in UTC."""
    extra = {"retries": {"max": 2, "backoff": "fixed"}, "concurrency": {"key": "db"},
             "not_before": "2099-01-01T01:00:00+01:00"}
    with trio.fail_after(10):
        run = await _submit(client, operator, extra)
        read = (await client.get(f"{RUNS}/{run['id']}")).json()["run"]
    assert run["retries"] == {"max": 2, "delay_s": 10, "backoff": "fixed", "on": ["failed", "timed_out"]}
    assert run["concurrency"] == {"key": "db", "limit": 1}
    assert run["not_before"] == "2099-01-01T00:00:00.000000Z"
    assert run["trigger"] == "api" and run["try"] == 1 and run["retry_of"] is None
    assert {key: read[key] for key in ("retries", "concurrency", "not_before")} == {
        key: run[key] for key in ("retries", "concurrency", "not_before")}


async def test_submit_without_options_has_none(client, operator):
    """Left out (or null), the options are null on the run."""
    with trio.fail_after(10):
        run = await _submit(client, operator, {"retries": None})
    assert run["retries"] is None and run["concurrency"] is None and run["not_before"] is None
