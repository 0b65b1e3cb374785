"""The rate budget per routing key, shared by every instance: attempts counted in a rolling window, and the
keys PagerDuty rate limited held until their Retry-After has passed."""
import hashlib
from datetime import datetime, timedelta

from sqlalchemy import delete, func, insert, or_, select

from relay.store import models, states
from relay.store.models import DeliveryAttempt, KeyHold
from relay.store.outbox import backend

RATE_WINDOW = timedelta(seconds=60)  # PagerDuty 05-Rate-Limits.md: events per minute per integration key
# Attempts are counted when claimed, PagerDuty counts them on arrival: the budget frees this much later, so a
# request's time in flight never lets PagerDuty see more than the limit in any minute.
RATE_SLACK = timedelta(seconds=2)
RATE_LIMITED = 429  # PagerDuty's answer when a key sends too fast: that key waits, no other


def key_hash(routing_key: str) -> str:
    """Hash a routing key for rate accounting, so the key itself lives in one column only."""
    return hashlib.sha256(routing_key.encode()).hexdigest()


def _rate_windows(conn, keys, now: datetime) -> dict[str, tuple[int, datetime]]:
    """Count each key's attempts in its rolling window, with the oldest of them, in one query."""
    backend(conn).hold_rate_budget(conn)
    hashes = {key_hash(key): key for key in keys}
    attempt = DeliveryAttempt
    counts = conn.execute(select(attempt.routing_key_hash, func.count(), func.min(attempt.started_at)).where(
        attempt.routing_key_hash.in_(list(hashes)), attempt.started_at > now - RATE_WINDOW - RATE_SLACK,
    ).group_by(attempt.routing_key_hash)).all()
    return {hashes[found]: (used, models.as_utc(oldest)) for found, used, oldest in counts}


def _held_keys(conn, rows, now: datetime) -> dict[str, datetime]:
    """The candidates' keys PagerDuty rate limited whose Retry-After has not passed, with when it does."""
    hashes = {key_hash(row.routing_key): row.routing_key for row in rows}
    if not hashes:
        return {}
    found = conn.execute(select(KeyHold.routing_key_hash, KeyHold.until).where(
        KeyHold.routing_key_hash.in_(list(hashes)), KeyHold.until > now)).all()
    return {hashes[digest]: models.as_utc(until) for digest, until in found}


def hold_rate_limited_keys(conn, results, moves, now: datetime) -> None:
    """After PagerDuty's 429 for a key, hold all of that key's rows, and only that key's, until its row is due
    again (Retry-After honoured by the retry rule)."""
    holds = {key_hash(claimed.event["routing_key"]): moved.due_at for (claimed, delivery), moved in zip(results, moves)
             if delivery.http_status == RATE_LIMITED and moved.status == states.RETRYING}
    if not holds:
        return
    conn.execute(delete(KeyHold).where(or_(KeyHold.routing_key_hash.in_(list(holds)), KeyHold.until <= now)))
    conn.execute(insert(KeyHold), [{"routing_key_hash": digest, "until": until} for digest, until in holds.items()])


def within_rate_limit(conn, rows, now: datetime, per_minute: int):
    """Split candidates into rows the per-key budget allows now, and rows deferred until it frees up (or until a
    key's Retry-After has passed)."""
    held = _held_keys(conn, rows, now)
    if held:
        deferred = {row.id: held[row.routing_key] for row in rows if row.routing_key in held}
        rows = [row for row in rows if row.routing_key not in held]
    else:
        deferred = {}
    if not per_minute:
        return rows, deferred
    windows = _rate_windows(conn, {row.routing_key for row in rows}, now)
    allowed, spent = [], {}
    for row in rows:
        used, oldest = windows.get(row.routing_key, (0, now))
        if used + spent.get(row.routing_key, 0) < per_minute:
            spent[row.routing_key] = spent.get(row.routing_key, 0) + 1
            allowed.append(row)
        else:
            deferred[row.id] = oldest + RATE_WINDOW + RATE_SLACK
    return allowed, deferred
