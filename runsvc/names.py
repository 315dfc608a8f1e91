"""The one rule for names people and agents choose: usernames, agent names and labels (of runs, agents,
enrollment tokens and the local executor). Imports nothing, so every floor can use it.

Usernames share the rule: SPEC §5 gives them exactly these characters and lengths, and a username ends up
where agent names and labels do (`created_by`, logs, URLs); one rule means one place to change if that
ever stops being true.
"""

from __future__ import annotations

import re

NAME_PATTERN = r"[A-Za-z0-9_.-]{1,64}"
NAME_RE = re.compile(NAME_PATTERN)
NAME_RULE = "1-64 characters of A-Z a-z 0-9 _ . -"  # the rule in words, for error messages
MAX_LABELS = 32  # labels of one run, agent or enrollment token


def is_name(value: str) -> bool:
    """Whether `value` follows the rule in full."""
    return NAME_RE.fullmatch(value) is not None
