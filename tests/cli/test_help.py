"""`runsvc serve --help`: every setting once, with its default said once."""

from __future__ import annotations

import re

from runsvc.cli import build_parser
from runsvc.config import SETTINGS_FIELDS, env_name


def serve_help() -> str:
    commands = next(a for a in build_parser()._actions if a.dest == "command")
    return " ".join(commands.choices["serve"].format_help().split())  # unwrapped


def test_serve_help_prints_each_default_once():
    """Each setting's flag text has exactly one "(default: …; env RUNSVC_…)"."""
    text = serve_help()
    assert text.count("(default:") == len(SETTINGS_FIELDS)
    for field in SETTINGS_FIELDS:
        assert re.search(r"\(default: [^()]*; env " + env_name(field.name) + r"\)", text), field.name
    assert "(default: number of CPUs; env RUNSVC_MAX_CONCURRENT_RUNS)" in text
    assert "(default: ;" not in text
