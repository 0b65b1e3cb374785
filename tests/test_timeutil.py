"""Durations and moments typed on the command line."""
from datetime import datetime, timedelta, timezone

import pytest

from relay.timeutil import parse_duration, parse_since

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("30m", 1800), ("2h", 7200), ("7d", 604800),
                                           ("1w", 604800), (" 1.5h ", 5400)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "30", "m", "2 hours", "-5m", "30x"])
def test_parse_duration_refuses_other_forms(text):
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_parse_since_reads_durations_and_iso_times():
    assert parse_since("2h", NOW) == NOW - timedelta(hours=2)
    assert parse_since("2026-11-01T00:00:00", NOW) == datetime(2026, 11, 1, tzinfo=timezone.utc)
    assert parse_since("2026-11-01T00:00:00+02:00", NOW) == datetime(2026, 10, 31, 22, tzinfo=timezone.utc)
    with pytest.raises(ValueError, match="neither a duration"):
        parse_since("last tuesday", NOW)


@pytest.mark.parametrize("text", ["99999999999d", "999999w", "1" + "0" * 400 + "s"])
def test_durations_past_what_a_date_can_hold_are_refused_not_overflowed(text):
    with pytest.raises(ValueError, match="longer than any duration|before the year 1"):
        parse_since(text, NOW)
