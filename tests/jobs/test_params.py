"""A job's parameter values: defaults, required ones, choices, and the PARAM_<NAME> variables a run gets."""

from __future__ import annotations

import pytest

from runsvc.jobs.params import ParamError, environment, resolve
from runsvc.jobs.runs import job_run_fields
from runsvc.model import Job

SPEC = (
    {"name": "target", "description": "", "default": None, "required": True, "choices": ["staging", "prod"]},
    {"name": "version", "description": "", "default": "latest", "required": False, "choices": None},
    {"name": "note", "description": "", "default": None, "required": False, "choices": None},
)


def test_defaults_fill_in_and_an_optional_parameter_without_one_is_absent():
    """Given values win, defaults fill in, and `note` (optional, no default) is not set at all."""
    assert resolve(SPEC, {"target": "prod"}) == {"target": "prod", "version": "latest"}
    assert resolve(SPEC, {"target": "staging", "version": "1.2", "note": ""}) == {
        "target": "staging", "version": "1.2", "note": "",
    }


@pytest.mark.parametrize(
    ("given", "param", "message"),
    [
        ({}, "target", "required"),
        ({"target": "dev"}, "target", "one of staging, prod"),
        ({"target": "prod", "colour": "red"}, "colour", "unknown parameter"),
    ],
)
def test_bad_values_name_the_parameter(given, param, message):
    """Unknown, missing required and out-of-choices values are refused naming the parameter."""
    with pytest.raises(ParamError, match=message) as caught:
        resolve(SPEC, given)
    assert caught.value.param == param


def test_values_reach_the_run_only_as_param_variables():
    """A value is an environment variable PARAM_<NAME>, never part of the command; it wins over a job
    variable of the same name, and a concurrency group without a key is the job's name."""
    assert environment({"target": "prod; rm -rf /"}) == {"PARAM_TARGET": "prod; rm -rf /"}
    job = Job(
        id=3, name="deploy", description="", command=("sh", "-c", "deploy $PARAM_TARGET"),
        env={"PARAM_TARGET": "job", "MODE": "ci"}, timeout_s=60.0, labels=("linux",), params=SPEC,
        retries=None, concurrency={"key": None, "limit": 1}, schedule=None, schedule_from=None,
        created_at="2026-12-03T10:00:00.000000Z", created_by="olga", updated_at="2026-12-03T10:00:00.000000Z",
    )
    fields = job_run_fields(job, given={"target": "prod"}, trigger="job", created_by="olga")
    assert fields["command"] == ["sh", "-c", "deploy $PARAM_TARGET"]
    assert fields["env"] == {"PARAM_TARGET": "prod", "MODE": "ci", "PARAM_VERSION": "latest"}
    assert fields["params"] == {"target": "prod", "version": "latest"}
    assert fields["concurrency"] == {"key": "deploy", "limit": 1}
    assert (fields["name"], fields["job_id"], fields["job_name"], fields["trigger"]) == ("deploy", 3, "deploy", "job")
