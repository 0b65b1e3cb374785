"""Reading the moments and durations people type: `30m`, `2h`, `7d`, or an ISO 8601 time."""
import re
from datetime import datetime, timedelta, timezone

# Go and Grafana send nanoseconds ("…:00.123456789Z"); Python parses at most microseconds.
_FRACTION = re.compile(r"(\.\d{6})\d+")

DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_iso8601(text) -> datetime | None:
    """Parse an ISO 8601 timestamp (nanoseconds and Z allowed); None when it is not one."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(_FRACTION.sub(r"\1", text.strip()).replace("Z", "+00:00"))
    except ValueError:
        return None


def parse_duration(text: str) -> timedelta:
    """Parse `90s`, `30m`, `2h`, `7d` or `1w`; raise ValueError naming the accepted forms."""
    match = DURATION.match(text or "")
    if not match:
        raise ValueError(f"{text!r} is not a duration such as 90s, 30m, 2h, 7d or 1w")
    try:
        return timedelta(seconds=float(match.group(1)) * UNIT_SECONDS[match.group(2)])
    except OverflowError:
        raise ValueError(f"{text!r} is longer than any duration this can count") from None


def duration_text(seconds: float) -> str:
    """Say a number of seconds the way people write durations: 1m, 90s, 2h."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:g}{unit}"
    return f"{seconds:g}s"


def parse_seconds(text: str) -> float:
    """Parse a number of seconds (`2.5`) or a duration with a unit (`90s`, `5m`, `1d`); raise ValueError saying
    which forms are accepted."""
    try:
        seconds = float(text)
    except (TypeError, ValueError):
        try:
            return parse_duration(text).total_seconds()
        except ValueError:
            raise ValueError(f"{text!r} is neither a number of seconds nor a duration such as 90s, 5m, 2h or 1d"
                             ) from None
    if not 0 <= seconds < float("inf"):  # also refuses nan and inf, which parse as floats
        raise ValueError(f"{text!r} is not a number of seconds, 0 or more")
    return seconds


def parse_since(text: str, now: datetime) -> datetime:
    """Parse a moment: a duration back from now, or an ISO 8601 time (UTC when it names no zone)."""
    moment = parse_iso8601(text)
    if moment is None:
        if not DURATION.match(text or ""):
            raise ValueError(f"{text!r} is neither a duration (30m, 2h, 7d) nor an ISO 8601 time")
        delta = parse_duration(text)
        try:
            return now - delta
        except OverflowError:
            raise ValueError(f"{text!r} reaches back before the year 1") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
