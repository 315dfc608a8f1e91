"""Cron schedules through cronsim: the five aliases, five fields only, IANA zones, and daylight saving as
Debian cron does it (the library's rules, which the README promises)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from runsvc.jobs.schedule import ALIASES, ScheduleError, expand, explain, fires, next_fires


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_aliases_are_crontab5s_and_fire_accordingly():
    """@hourly … @yearly mean what crontab(5) says; the alias is case-insensitive."""
    assert expand("@DAILY") == "0 0 * * *"
    assert next_fires("@hourly", "UTC", utc(2026, 12, 3, 10, 15), 2) == [utc(2026, 12, 3, 11), utc(2026, 12, 3, 12)]
    assert next_fires("@yearly", "UTC", utc(2026, 12, 3), 1) == [utc(2027, 1, 1)]
    assert set(ALIASES) == {"@hourly", "@daily", "@weekly", "@monthly", "@yearly"}


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("* * * *", "five fields"),
        ("0 * * * * *", "five fields"),  # cronsim would take a seconds field: SPEC §15 does not
        ("@reboot", "unknown alias"),
        ("61 * * * *", "Bad minute"),
        ("* 25 * * *", "Bad hour"),
        ("", "five fields"),
    ],
)
def test_bad_expressions_are_refused_with_a_message(cron, message):
    """Anything but five valid fields or an alias is a ScheduleError whose message says what is wrong."""
    with pytest.raises(ScheduleError, match=message):
        fires(cron, "UTC", utc(2026, 12, 3))


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", "../etc/passwd", "/etc/localtime"])
def test_unknown_time_zones_are_refused(zone):
    """Only IANA names are time zones; a path is not."""
    with pytest.raises(ScheduleError, match="unknown time zone"):
        fires("* * * * *", zone, utc(2026, 12, 3))


def test_fire_times_follow_the_zone():
    """09:00 in New York is 14:00 UTC in winter and 13:00 UTC in summer."""
    assert next_fires("0 9 * * *", "America/New_York", utc(2026, 3, 7, 15), 2) == [
        utc(2026, 3, 8, 13), utc(2026, 3, 9, 13),  # DST began on 2026-03-08 at 02:00
    ]
    assert next_fires("0 9 * * *", "America/New_York", utc(2026, 1, 5, 15), 1) == [utc(2026, 1, 6, 14)]


def test_a_fixed_time_in_the_spring_gap_runs_once_right_after_it():
    """Europe/Berlin skips 02:00–03:00 on 2026-03-29: a 02:30 job runs at 03:00 local (01:00 UTC) that day."""
    assert next_fires("30 2 * * *", "Europe/Berlin", utc(2026, 3, 28, 12), 2) == [
        utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30),
    ]


def test_a_fixed_time_in_the_autumn_repeat_runs_once():
    """Europe/Berlin repeats 02:00–03:00 on 2026-10-25: a 02:30 job runs once (the first 02:30, CEST)."""
    assert next_fires("30 2 * * *", "Europe/Berlin", utc(2026, 10, 24, 12), 2) == [
        utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30),
    ]


def test_explain_reads_the_expression():
    """The UI shows the library's English reading of an expression."""
    assert explain("0 9 * * 1") == "At 09:00 on Monday"
    with pytest.raises(ScheduleError):
        explain("nonsense")
