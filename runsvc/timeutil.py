"""Wall-clock time in the one format runsvc stores and serves: RFC 3339 UTC, fixed width."""

from __future__ import annotations

import datetime as dt

_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def format_ts(moment: dt.datetime) -> str:
    """Fixed-width text, so that string order is time order (SQLite compares these as text)."""
    return moment.astimezone(dt.UTC).strftime(_FORMAT)


def now_ts() -> str:
    return format_ts(utcnow())


def parse_ts(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, _FORMAT).replace(tzinfo=dt.UTC)


def ts_after(seconds: float, *, start: dt.datetime | None = None) -> str:
    """The timestamp `seconds` after `start` (default: now)."""
    return format_ts((start or utcnow()) + dt.timedelta(seconds=seconds))
