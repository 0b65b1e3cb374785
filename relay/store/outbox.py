"""incident_log as the outbox, the same on every database: writing rows, which rows are due, order per alert,
the rate budget per routing key, claiming under a lease, recording what became of each attempt.

What each database does its own way (locks, the write queue, wake-ups, the batch of results) is asked of its
backend module, relay/store/sqlite.py or relay/store/postgres.py; what a row's next state is, of
relay/store/states.py.
"""
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Integer, and_, bindparam, delete, exists, func, insert, literal, or_, select, text, update
from sqlalchemy.orm import aliased

from relay.masking import mask
from relay.store import endpoints, models, postgres, sqlite, states
from relay.store.models import DeliveryAttempt, IncidentLog, KeyHold, db

CANDIDATES_PER_SLOT = 4  # look past rows held back by order or rate limit, so other alerts are not starved
RATE_WINDOW = timedelta(seconds=60)  # PagerDuty 05-Rate-Limits.md: events per minute per integration key
# Attempts are counted when claimed, PagerDuty counts them on arrival: the budget frees this much later, so a
# request's time in flight never lets PagerDuty see more than the limit in any minute.
RATE_SLACK = timedelta(seconds=2)
RATE_LIMITED = 429  # PagerDuty's answer when a key sends too fast: that key waits, no other
# A row held behind an earlier open row of its alert is put off this long, so it stops filling the claim's window;
# it is woken as soon as that row ends (complete), and this is only the fallback for a row that ends otherwise.
BLOCKED_RECHECK = timedelta(seconds=60)
CLAIM_ROUNDS = 8  # windows a claim may read past rows it put off, before it gives the loop a turn
_BACKENDS = {"sqlite": sqlite, "postgresql": postgres}


def backend(bind):
    """The backend module of an engine's or connection's database.

    Each offers the same functions: writer_connection, write_transaction, prepare_candidates, take,
    hold_rate_budget, hold_endpoints, read_holding_alerts, hold_routes, finish, watcher and migration_lock.
    """
    return _BACKENDS[bind.dialect.name]


def row_values(event: dict, source: str, route: str | None = None, alert: dict | None = None,
               status: str = states.PENDING, error: str | None = None, summary: str | None = None,
               events_url: str | None = None, cause: str | None = None, event_action: str | None = None) -> dict:
    """The column values of a new row for a validated event (pending unless told otherwise); summary is shown
    when the event carries none; bound for events_url (None: whichever PAGERDUTY_EVENTS_URL the sending process
    has); cause says why the relay sent it of its own accord; event_action names what an event without one is (a
    change event)."""
    payload = event.get("payload") or {}
    now = models.utcnow()
    return {
        "source": source, "route": route, "event_action": event_action or event["event_action"],
        "dedup_key": event.get("dedup_key"), "summary": payload.get("summary") or summary,
        "severity": payload.get("severity"),
        "routing_key": event["routing_key"], "routing_key_masked": mask(event["routing_key"]),
        "event": {k: v for k, v in event.items() if k != "routing_key"}, "alert": alert, "status": status,
        "attempts": 0, "error": error, "created_at": now, "updated_at": now, "next_attempt_at": now,
        "events_url": events_url, "superseded_by": None, "cause": cause,
    }


def record(event: dict, source: str, **values) -> IncidentLog:
    """Add one row as an ORM object, for callers that follow it (the job); the caller commits."""
    row = IncidentLog(**row_values(event, source, **values))
    db.session.add(row)
    return row


def record_many(conn, rows: list[dict]) -> list[int]:
    """Insert rows made by row_values and return their ids, in order; the caller commits."""
    if not rows:
        return []
    return backend(conn.get_bind() if hasattr(conn, "get_bind") else conn).insert_rows(conn, rows)


def store_rows(engine, rows: list[dict]) -> list[int]:
    """Write rows made by row_values in a write transaction of their own and return their ids, in order."""
    with writer_connection(engine) as conn, write_transaction(conn):
        return record_many(conn, rows)


@dataclass
class Claimed:
    """A row this worker holds the lease on, with the attempt it opened."""

    log_id: int
    attempt_id: int  # the claim's token: each claim opens an attempt, so only the row's latest claim holds it
    event: dict  # the outbound event, routing key included
    created_at: datetime
    attempts: int  # counting this one
    events_url: str | None  # where the row was stored for; None: the sender's own PAGERDUTY_EVENTS_URL


def key_hash(routing_key: str) -> str:
    """Hash a routing key for rate accounting, so the key itself lives in one column only."""
    return hashlib.sha256(routing_key.encode()).hexdigest()


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


def _hold_rate_limited_keys(conn, results, moves, now: datetime) -> None:
    """After PagerDuty's 429 for a key, hold all of that key's rows, and only that key's, until its row is due
    again (Retry-After honoured by the retry rule)."""
    holds = {key_hash(claimed.event["routing_key"]): moved.due_at for (claimed, delivery), moved in zip(results, moves)
             if delivery.http_status == RATE_LIMITED and moved.status == states.RETRYING}
    if not holds:
        return
    conn.execute(delete(KeyHold).where(or_(KeyHold.routing_key_hash.in_(list(holds)), KeyHold.until <= now)))
    conn.execute(insert(KeyHold), [{"routing_key_hash": digest, "until": until} for digest, until in holds.items()])


def _within_rate_limit(conn, rows, now: datetime, per_minute: int):
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
        allowed, deferred = _within_rate_limit(conn, rows, now, per_minute)
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


def _result_record(claimed: Claimed, delivery, moved: states.Transition, now: datetime) -> dict:
    """The bind values that record one result on its attempt and its row."""
    return {
        "b_attempt_id": claimed.attempt_id, "b_outcome": delivery.outcome, "b_http_status": delivery.http_status,
        "b_duration_ms": round(delivery.duration_ms, 2), "b_attempt_error": delivery.error or _errors_text(delivery),
        "b_log_id": claimed.log_id, "b_status": moved.status, "b_next": moved.due_at,
        "b_delivered_at": now if moved.status == states.DELIVERED else None, "b_dedup_key": delivery.dedup_key,
        "b_pd_status": delivery.status, "b_pd_message": delivery.message, "b_pd_errors": delivery.errors or None,
        "b_error": delivery.error,
    }


def complete(conn, worker_id: str, results, now: datetime, policy,
             outage: endpoints.OutageRule | None = None) -> list[states.Transition]:
    """Record each (claimed, delivery) result on its attempt and move its row on, releasing the lease; return
    where each row went, in order. With an outage rule, the results also move their endpoints' states.

    A row moves only for the claim that holds it now (its worker, and its token: no later attempt opened): a
    late result from a lease that ran out, even this worker's own, is kept on its attempt and moves nothing."""
    moves = [states.after(claimed, delivery, now, policy) for claimed, delivery in results]
    records = [_result_record(claimed, delivery, moved, now) for (claimed, delivery), moved in zip(results, moves)]
    rate_limited = any(delivery.http_status == RATE_LIMITED for _, delivery in results)
    if records and (rate_limited or (outage is not None and endpoints.must_hold(conn, results, now, outage))):
        backend(conn).hold_endpoints(conn)  # before the rows' locks: key holds and endpoint states, one step at a time
    if records:
        backend(conn).finish(conn, worker_id, records, now)
    ended = [claimed.log_id for (claimed, _), moved in zip(results, moves)
             if moved.status not in states.OPEN and claimed.event.get("dedup_key") is not None]
    if ended:
        conn.execute(_WAKE_NEXT_OF_ALERT, {"ids": ended, "now": now})
    if rate_limited:
        _hold_rate_limited_keys(conn, results, moves, now)
    if records and outage is not None:
        endpoints.record(conn, results, now, outage)
    return moves


_ENDED = aliased(IncidentLog, name="ended")
_FOLLOWING = aliased(IncidentLog, name="following")
# The next open row of each ended row's alert, put off while it waited behind it: due at once, so the alert's
# events follow each other without waiting out BLOCKED_RECHECK.
_WAKE_NEXT_OF_ALERT = update(IncidentLog).where(IncidentLog.id.in_(
    select(func.min(_FOLLOWING.id)).join(_ENDED, and_(_FOLLOWING.routing_key == _ENDED.routing_key,
                                                     _FOLLOWING.dedup_key == _ENDED.dedup_key, _FOLLOWING.id > _ENDED.id))
    .where(_ENDED.id.in_(_IDS), text(f"following.{states.OPEN_SQL}")).group_by(_ENDED.id)),
    IncidentLog.next_attempt_at > _NOW).values(next_attempt_at=_NOW)


def _errors_text(delivery) -> str | None:
    if delivery.outcome == states.DELIVERED:
        return None
    return "; ".join([delivery.message or "", *delivery.errors]).strip("; ") or None


def _latest_states_statement():
    """The newest row each alert among the given keys has had, sent or superseded, with the row a superseded one
    was collapsed into: built once, its IN lists expanded at execution, so a webhook pays for one cached statement
    and not for building and compiling a new one."""
    log = IncidentLog
    carrier = aliased(IncidentLog, name="carrier")
    newest = select(func.max(log.id)).where(
        log.dedup_key.in_(bindparam("dedup_keys", expanding=True)),
        log.routing_key.in_(bindparam("routing_keys", expanding=True)),
        log.status.in_(states.HEARD)).group_by(log.routing_key, log.dedup_key)
    return select(log.id, log.routing_key, log.dedup_key, log.event_action, log.status, log.alert, log.event,
                  log.cause, log.created_at, log.superseded_by, carrier.event_action.label("carrier_action"),
                  carrier.status.label("carrier_status"), carrier.created_at.label("carrier_created_at")) \
        .outerjoin(carrier, carrier.id == log.superseded_by).where(log.id.in_(newest))


_LATEST_STATES = _latest_states_statement()


def latest_states(conn, pairs) -> dict[tuple[str, str], object]:
    """The newest row each alert has had (id, event_action, status, alert, event, cause, created_at, superseded_by, and
    the carrier_action, carrier_status and carrier_created_at of the row superseding it), by (routing key, dedup
    key), its alert held against other writers until the transaction ends."""
    if not pairs:
        return {}
    rows = backend(conn).read_holding_alerts(conn, pairs, _LATEST_STATES, {
        "dedup_keys": sorted({dedup_key for _, dedup_key in pairs}),
        "routing_keys": sorted({routing_key for routing_key, _ in pairs})})
    return {(row.routing_key, row.dedup_key): row for row in rows if (row.routing_key, row.dedup_key) in pairs}


_LATER = aliased(IncidentLog, name="later")


def _newer_of_its_alert():
    """A later row of the same alert (routing key and dedup key) the relay has heard, sent or superseded (but not a
    repeat collapsed into this very row): the row is no longer its alert's latest word."""
    return and_(_LATER.routing_key == IncidentLog.routing_key, _LATER.dedup_key == IncidentLog.dedup_key,
                _LATER.id > IncidentLog.id, _LATER.status.in_(states.HEARD),
                or_(_LATER.superseded_by.is_(None), _LATER.superseded_by != IncidentLog.id))


def requeue(conn, now: datetime, *conditions, statuses=states.REPLAYABLE) -> list[int]:
    """Put failed or dead rows matching the conditions back in the outbox, due now, unless a later row of their
    alert has superseded them (sending them would undo it); return their ids.

    One UPDATE, no read before it: safe against concurrent writers on SQLite too.
    """
    result = conn.execute(update(IncidentLog).where(
        IncidentLog.status.in_(statuses), *conditions, ~exists().where(_newer_of_its_alert())).values(
        status=states.PENDING, next_attempt_at=now, claimed_by=None, claimed_until=None, updated_at=now,
    ).returning(IncidentLog.id))
    return sorted(result.scalars().all())


@dataclass(frozen=True)
class Superseded:
    """A failed or dead row left alone by requeue, and the newest row of its alert that supersedes it."""

    id: int
    event_action: str
    newer_id: int
    newer_action: str
    newer_status: str

    @property
    def reason(self) -> str:
        """Say why the row was not sent again, and what would restore its alert's state instead."""
        text = (f"row {self.id} ({self.event_action}) was not sent again: row {self.newer_id} "
                f"({self.newer_action}, {self.newer_status}) is newer for the same alert, and sending the older "
                "event would undo it")
        if self.newer_status in states.REPLAYABLE:
            text += f"; replay row {self.newer_id} to restore the alert's latest state"
        return text


def superseded(conn, *conditions, statuses=states.REPLAYABLE) -> list[Superseded]:
    """The failed or dead rows matching the conditions that a later row of their alert supersedes, by id."""
    log = IncidentLog
    newest = (select(log.id, log.event_action, func.max(_LATER.id).label("newer_id"))
              .join(_LATER, _newer_of_its_alert()).where(log.status.in_(statuses), *conditions)
              .group_by(log.id, log.event_action).subquery())
    rows = conn.execute(select(newest, _LATER.event_action.label("newer_action"), _LATER.status.label("newer_status"))
                        .join(_LATER, _LATER.id == newest.c.newer_id).order_by(newest.c.id)).all()
    return [Superseded(**row._mapping) for row in rows]


def writer_connection(engine):
    """A connection for claims and stored webhooks, as its database wants one (see write_transaction)."""
    return backend(engine).writer_connection(engine)


def write_transaction(conn):
    """A transaction on a writer connection; on SQLite it holds the file's one write lock."""
    return backend(conn).write_transaction(conn)


def new_rows_watcher(engine):
    """A function (wake, stopping) that calls wake() when another process stores rows, until stopping is set;
    None when no other process can."""
    return backend(engine).watcher(engine)
