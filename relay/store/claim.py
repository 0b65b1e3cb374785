"""The claim: which rows are due, an alert's rows one at a time in acceptance order, each key within its rate
budget, and the lease under which one worker sends a row, with the attempt it opens."""
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Integer, bindparam, func, insert, literal, or_, select, text, update
from sqlalchemy.orm import aliased

from relay.store import endpoints, models, states
from relay.store.models import DeliveryAttempt, IncidentLog
from relay.store.outbox import backend
from relay.store.rate_budget import key_hash, within_rate_limit

CANDIDATES_PER_SLOT = 4  # look past rows held back by order or rate limit, so other alerts are not starved
# A row held behind an earlier open row of its alert is put off this long, so it stops filling the claim's window;
# it is woken as soon as that row ends (complete), and this is only the fallback for a row that ends otherwise.
BLOCKED_RECHECK = timedelta(seconds=60)
CLAIM_ROUNDS = 8  # windows a claim may read past rows it put off, before it gives the loop a turn


@dataclass
class Claimed:
    """A row this worker holds the lease on, with the attempt it opened."""

    log_id: int
    attempt_id: int  # the claim's token: each claim opens an attempt, so only the row's latest claim holds it
    event: dict  # the outbound event, routing key included
    created_at: datetime
    attempts: int  # counting this one
    events_url: str | None  # where the row was stored for; None: the sender's own PAGERDUTY_EVENTS_URL


# Verbatim, so the partial index ix_incident_log_open serves it.
_OPEN = text(f"incident_log.{states.OPEN_SQL}")


def _open_unleased(now):
    """Open rows no live lease holds."""
    return _OPEN, or_(IncidentLog.claimed_until.is_(None), IncidentLog.claimed_until < now)


def _due(now):
    """Open, unleased rows whose time has come."""
    return (*_open_unleased(now), IncidentLog.next_attempt_at <= now)


# The claim's statements, built once: per claim only their parameters change (no construction, no cache-key
# walk), which is most of what a one-row claim costs.
_NOW = bindparam("now")
_IDS = bindparam("ids", expanding=True)
_FIRST_DUE = (select(IncidentLog.id, IncidentLog.routing_key, IncidentLog.dedup_key, IncidentLog.events_url)
              .where(*_due(_NOW))
              .order_by(IncidentLog.id).limit(bindparam("count", type_=Integer, literal_execute=True)).subquery())
_EARLIER = aliased(IncidentLog, name="earlier")
# Each candidate with its alert's first open row: one index probe per candidate (ix_incident_log_alert_order)
# rather than an anti-join over the backlog, whose plan PostgreSQL gets badly wrong without fresh statistics.
_CANDIDATES = select(_FIRST_DUE, select(func.min(_EARLIER.id)).where(
    _EARLIER.routing_key == _FIRST_DUE.c.routing_key, _EARLIER.dedup_key == _FIRST_DUE.c.dedup_key,
    text(f"earlier.{states.OPEN_SQL}")).scalar_subquery().label("first_open")).order_by(_FIRST_DUE.c.id)
_TAKE = (select(IncidentLog.id, IncidentLog.routing_key, IncidentLog.event, IncidentLog.created_at,
                IncidentLog.attempts, IncidentLog.claimed_by, IncidentLog.events_url)
         .where(IncidentLog.id.in_(_IDS), *_due(_NOW)).order_by(IncidentLog.id))
_LEASE = update(IncidentLog).where(IncidentLog.id.in_(_IDS)).values(
    claimed_by=bindparam("worker"), claimed_until=bindparam("until"), attempts=IncidentLog.attempts + 1)
_OPEN_ATTEMPTS = insert(DeliveryAttempt).returning(DeliveryAttempt.id, sort_by_parameter_order=True)
_DEFER = update(IncidentLog).where(IncidentLog.id.in_(_IDS)).values(next_attempt_at=bindparam("until"))
# A row behind an earlier open row of its alert is put off only while that row is still open as the statement
# runs: one that ended after the candidates were read (another instance's complete) has already tried to wake it.
# On PostgreSQL an earlier row another transaction is writing (a complete not yet committed, whose wake-up has
# already run) does not count either: that row is skipped, not waited for, and the blocked row stays due.
_DEFER_BLOCKED = update(IncidentLog).where(IncidentLog.id.in_(_IDS), select(literal(1)).where(
    _EARLIER.routing_key == IncidentLog.routing_key, _EARLIER.dedup_key == IncidentLog.dedup_key,
    _EARLIER.id < IncidentLog.id, text(f"earlier.{states.OPEN_SQL}"),
).with_for_update(read=True, skip_locked=True, of=_EARLIER).exists()).values(next_attempt_at=bindparam("until"))


def next_due_at(conn, now: datetime) -> datetime | None:
    """When a row next becomes claimable: a retry time still ahead, or a lease running out."""
    log = IncidentLog
    due = conn.execute(select(func.min(log.next_attempt_at)).where(*_open_unleased(now),
                                                                     log.next_attempt_at > now)).scalar()
    lease = conn.execute(select(func.min(log.claimed_until)).where(
        _OPEN, log.claimed_until >= now)).scalar()
    moments = [models.as_utc(m) for m in (due, lease) if m is not None]
    return min(moments) if moments else None


def _candidates(conn, now: datetime, count: int):
    """The first due rows in acceptance order, read without locks: those that are their alert's first open row,
    and those held behind an earlier open row of their alert (in flight or due), and whether the window was full."""
    backend(conn).prepare_candidates(conn)
    rows = conn.execute(_CANDIDATES, {"now": now, "count": count}).all()
    ready = [row for row in rows if row.dedup_key is None or row.first_open == row.id]
    blocked = [row.id for row in rows if row.dedup_key is not None and row.first_open != row.id]
    return ready, blocked, len(rows) == count


def _take(conn, rows, now: datetime):
    """Read the events of the rows still due, held for this claim until it commits."""
    if not rows:
        return []
    return backend(conn).take(conn, _TAKE, {"ids": [row.id for row in rows], "now": now})
def _defer(conn, deferred: dict[int, datetime]) -> None:
    """Hold rows over their key's budget until it frees up: one statement per moment (one per spent key), since
    a backlog waiting on its budget is deferred again each time a send frees a place in it."""
    by_moment = {}
    for log_id, moment in deferred.items():
        by_moment.setdefault(moment, []).append(log_id)
    for moment, ids in by_moment.items():
        conn.execute(_DEFER, {"ids": ids, "until": moment})


def claim(conn, worker_id: str, slots: int, now: datetime, lease_seconds: float, per_minute: int,
          outage: endpoints.OutageRule | None = None):
    """Lease up to `slots` due rows to this worker and open an attempt for each; with an outage rule, the rows of
    an endpoint that is down go one probe at a time.

    Rows that cannot go now are put off rather than read again on every claim: a row behind an earlier one of its
    alert until that one ends, a row over its key's budget until the budget frees, a row of a down endpoint until
    its next probe; so a row for any other key is reached however large their backlog."""
    down_now = endpoints.down(conn) if outage is not None else {}
    if down_now:  # probes are decided one claimer at a time
        backend(conn).hold_endpoints(conn)
        down_now = endpoints.down(conn)
    for _ in range(CLAIM_ROUNDS):
        rows, blocked, full = _candidates(conn, now, slots * CANDIDATES_PER_SLOT)
        held, probes = {}, {}
        if down_now:
            rows, held, probes = endpoints.gate(rows, down_now, now, outage)
        allowed, deferred = within_rate_limit(conn, rows, now, per_minute)
        allowed = _take(conn, allowed[:slots], now)
        if probes:
            endpoints.probes_sent(conn, probes, [row.id for row in allowed], now, lease_seconds, outage)
            down_now = endpoints.down(conn)
        put_off = deferred | held
        _defer(conn, put_off)
        if blocked:
            conn.execute(_DEFER_BLOCKED, {"ids": blocked, "until": now + BLOCKED_RECHECK})
        if allowed or not full or not (put_off or blocked):
            break
    if not allowed:
        return []
    ids = [row.id for row in allowed]
    conn.execute(_LEASE, {"ids": ids, "worker": worker_id, "until": now + timedelta(seconds=lease_seconds)})
    taken_over = [row.id for row in allowed if row.claimed_by is not None]
    if taken_over:  # a lease that ran out means its sender died mid-request: say so rather than leave it "sending"
        conn.execute(update(DeliveryAttempt).values(outcome=states.ABANDONED).where(
            DeliveryAttempt.log_id.in_(taken_over), DeliveryAttempt.outcome == states.SENDING))
    attempts = [{"log_id": row.id, "started_at": now, "outcome": states.SENDING,
                 "routing_key_hash": key_hash(row.routing_key)} for row in allowed]
    attempt_ids = conn.execute(_OPEN_ATTEMPTS, attempts).scalars().all()
    return [Claimed(row.id, attempt_id, {"routing_key": row.routing_key, **row.event},
                    models.as_utc(row.created_at), row.attempts + 1, row.events_url)
            for row, attempt_id in zip(allowed, attempt_ids)]

