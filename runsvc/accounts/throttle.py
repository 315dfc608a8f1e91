"""The login throttle's rules, as pure functions of a throttle row and the time.

Per (normalized username, client address):

- Failures are counted from the first one. The MAX_FAILURES-th failure within WINDOW_S of the first
  starts a lockout of FIRST_LOCKOUT_S.
- While locked out, every attempt is refused (429) without looking at the password, and the row is left
  alone, so Retry-After stays true.
- Each failure after a lockout has ended starts a new lockout twice as long, at most MAX_LOCKOUT_S.
- The count starts over with a failure that comes WINDOW_S or more after the window's anchor (the first
  failure, or the end of the latest lockout) when no lockout is active.
- A successful login deletes the row.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Any

from ..timeutil import format_ts, parse_ts

WINDOW_S = 15 * 60  # 15 min
MAX_FAILURES = 5
FIRST_LOCKOUT_S = 60  # 1 min
MAX_LOCKOUT_S = 3600  # 1 h


def retry_after_s(row: Mapping[str, Any] | None, now: dt.datetime) -> int:
    """Whole seconds until the row's lockout ends (rounded up); 0 when no lockout is active."""
    if row is None or row["locked_until"] is None:
        return 0
    remaining = (parse_ts(row["locked_until"]) - now).total_seconds()
    return max(0, math.ceil(remaining))


def after_failure(row: Mapping[str, Any] | None, now: dt.datetime) -> dict[str, Any]:
    """The row after one more failed login at `now`."""
    now_text = format_ts(now)
    if row is None or _window_over(row, now):
        return {"failures": 1, "first_failed_at": now_text, "last_failed_at": now_text,
                "locked_until": None, "lockout_s": 0}
    failures = row["failures"] + 1
    lockout_s = row["lockout_s"]
    locked_until = row["locked_until"]
    if failures >= MAX_FAILURES:
        lockout_s = FIRST_LOCKOUT_S if lockout_s == 0 else min(lockout_s * 2, MAX_LOCKOUT_S)
        locked_until = format_ts(now + dt.timedelta(seconds=lockout_s))
    return {"failures": failures, "first_failed_at": row["first_failed_at"], "last_failed_at": now_text,
            "locked_until": locked_until, "lockout_s": lockout_s}


def _window_over(row: Mapping[str, Any], now: dt.datetime) -> bool:
    if row["locked_until"] is not None:
        anchor = parse_ts(row["locked_until"])
        if anchor > now:
            return False  # an active lockout never restarts the count
    else:
        anchor = parse_ts(row["first_failed_at"])
    return (now - anchor).total_seconds() >= WINDOW_S
