"""The login throttle's rules as pure functions: window, lockout, doubling, cap, restart."""

from __future__ import annotations

import datetime as dt

from runsvc.accounts import throttle
from runsvc.timeutil import format_ts

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def fail_at(row, *moments):
    for moment in moments:
        row = throttle.after_failure(row, at(moment))
    return row


def test_fifth_failure_in_the_window_locks_for_a_minute():
    """Four failures lock nothing; the fifth locks for 60 s, counted down by retry_after_s."""
    row = fail_at(None, 0, 10, 20, 30)
    assert row["failures"] == 4 and row["locked_until"] is None
    assert throttle.retry_after_s(row, at(31)) == 0
    row = fail_at(row, 40)
    assert row["lockout_s"] == 60
    assert row["locked_until"] == format_ts(at(100))
    assert throttle.retry_after_s(row, at(40)) == 60
    assert throttle.retry_after_s(row, at(99.2)) == 1  # rounded up
    assert throttle.retry_after_s(row, at(100)) == 0


def test_failures_after_a_lockout_double_it_up_to_an_hour():
    """Each failure after a lockout ends starts one twice as long, capped at 3600 s."""
    row = fail_at(None, 0, 1, 2, 3, 4)
    lengths = [row["lockout_s"]]
    moment = 4.0
    for _ in range(8):
        moment += row["lockout_s"] + 1  # just after the lockout ends
        row = fail_at(row, moment)
        lengths.append(row["lockout_s"])
    assert lengths == [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]
    assert row["first_failed_at"] == format_ts(T0)


def test_count_restarts_after_the_window():
    """Failures spread over more than 15 min never lock: the count starts over."""
    row = fail_at(None, 0, 60, 120, 180)
    row = fail_at(row, 15 * 60)  # 15 min after the first: a new window
    assert row["failures"] == 1 and row["first_failed_at"] == format_ts(at(15 * 60))
    assert row["locked_until"] is None


def test_window_after_a_lockout_starts_at_its_end():
    """After a lockout, the count starts over only once 15 quiet minutes have followed its end."""
    row = fail_at(None, 0, 1, 2, 3, 4)  # locked until 64
    doubled = fail_at(row, 64 + 15 * 60 - 1)
    assert doubled["lockout_s"] == 120
    fresh = fail_at(row, 64 + 15 * 60)
    assert fresh["failures"] == 1 and fresh["lockout_s"] == 0 and fresh["locked_until"] is None


def test_an_active_lockout_never_restarts_the_count():
    """Even with an old first failure, a failure during an active lockout extends, not resets."""
    row = {"failures": 9, "first_failed_at": format_ts(at(0)), "last_failed_at": format_ts(at(0)),
           "locked_until": format_ts(at(7200)), "lockout_s": 3600}
    row = fail_at(row, 3600)
    assert row["failures"] == 10 and row["lockout_s"] == 3600
