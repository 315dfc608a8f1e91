"""Cron schedules: parsing, validation and fire times, through cronsim (never a cron parser of our own).

cronsim (Healthchecks' library) follows Debian cron, including its daylight-saving rules: a fixed-time
job in a gap runs at the first minute after it, and in a repeat once; a job with `*` in its minute or
hour field runs every matching wall-clock minute that exists. We chose it over croniter because that is
exactly what people moving from cron expect, and it is small and actively kept.

SPEC §15 allows five fields or one of five aliases. cronsim itself has no aliases and also accepts a
seconds field, so the aliases are spelled out here as Debian's crontab(5) defines them, and any other
number of fields is refused before cronsim sees it.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterator
from datetime import UTC, datetime

import cronsim

# crontab(5): "@hourly: Run once an hour, ie. 0 * * * *", and so on.
ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
}


class ScheduleError(ValueError):
    """A cron expression or time zone that cannot be used; the message says why (cronsim's words)."""


def expand(cron: str) -> str:
    """The five-field form of `cron` (an alias spelled out). Raises ScheduleError if it is neither."""
    text = cron.strip()
    if text.startswith("@"):
        try:
            return ALIASES[text.lower()]
        except KeyError:
            raise ScheduleError(f"unknown alias {text!r}; use one of {', '.join(ALIASES)}") from None
    if len(text.split()) != 5:
        raise ScheduleError("a cron expression has five fields: minute hour day-of-month month day-of-week")
    return text


def zone(name: str) -> zoneinfo.ZoneInfo:
    """The IANA time zone `name`. Raises ScheduleError if there is none of that name."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:  # ValueError: a path-like name
        raise ScheduleError(f"unknown time zone {name!r}") from error


def fires(cron: str, timezone: str, after: datetime) -> Iterator[datetime]:
    """The fire times of `cron` in `timezone` strictly after `after` (aware), as aware UTC datetimes, in
    order. Raises ScheduleError for a bad expression or zone (at once, not on the first next())."""
    tz = zone(timezone)
    try:
        sim = cronsim.CronSim(expand(cron), after.astimezone(tz))
    except cronsim.CronSimError as error:
        raise ScheduleError(str(error)) from None
    # cronsim matches a fixed-time job (no `*` in minute and hour) on the naive local time and then takes
    # its first occurrence, so from a start inside a repeated hour (the second 02:10 of a fall-back night)
    # its first answer is the FIRST 02:30, which lies before the start. Those are not after `after`.
    return (fire for fire in (moment.astimezone(UTC) for moment in sim) if fire > after)


def next_fires(cron: str, timezone: str, after: datetime, count: int) -> list[datetime]:
    """The next `count` fire times after `after` (UTC)."""
    times = fires(cron, timezone, after)
    return [next(times) for _ in range(count)]


def explain(cron: str) -> str:
    """cronsim's English reading of `cron` ("At 09:00 on Monday"); raises ScheduleError if it is bad."""
    try:
        return cronsim.CronSim(expand(cron), datetime.now(UTC)).explain()
    except cronsim.CronSimError as error:
        raise ScheduleError(str(error)) from None
