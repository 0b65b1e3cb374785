"""The alerts the reconciler watches (table reconcile_watch): each alert triggered through a source whose alerts API
the relay can ask, with its newest trigger row and how many checks in a row found it gone from its source.

Watches are added from incident_log's trigger rows as they come (scan), and dropped once the relay has nothing
left to do for their alert (forget). Kept in the store, so "gone for two checks" holds across restarts and instances.
"""
from datetime import datetime

from sqlalchemy import and_, delete, func, select, tuple_, update
from sqlalchemy.orm import aliased

from relay.store import outbox, rate_budget, states
from relay.store.models import IncidentLog, ReconcileWatch

TRIGGER = "trigger"


_LATER = aliased(IncidentLog, name="later")


def scan(conn, sources: tuple[str, ...], since: datetime | None) -> int:
    """Watch every alert triggered from these sources since then (without since: ever) whose trigger is still its
    newest word, the watch moved on to that row; return how many alerts were found. The caller commits."""
    log = IncidentLog
    newest = conn.execute(select(func.max(log.id), log.routing_key, log.dedup_key).where(
        log.source.in_(sources), log.event_action == TRIGGER, log.dedup_key.is_not(None),
        log.status.in_(states.SETS_STATE), *([log.created_at >= since] if since is not None else []),
        ~select(_LATER.id).where(_LATER.dedup_key == log.dedup_key, _LATER.routing_key == log.routing_key,
                                 _LATER.id > log.id, _LATER.status.in_(states.HEARD)).exists(),
    ).group_by(log.routing_key, log.dedup_key)).all()
    watch = ReconcileWatch
    known = {(digest, dedup_key): log_id for digest, dedup_key, log_id in conn.execute(
        select(watch.routing_key_hash, watch.dedup_key, watch.log_id))}
    for log_id, routing_key, dedup_key in newest:
        key = (rate_budget.key_hash(routing_key), dedup_key)
        if key in known and known[key] >= log_id:
            continue  # scanned before: the scans overlap, so a row committed late is not missed
        if key in known or not outbox.backend(conn).insert_if_absent(conn, watch.__table__, {
                "routing_key_hash": key[0], "dedup_key": dedup_key, "log_id": log_id, "misses": 0}):
            conn.execute(update(watch).where(watch.routing_key_hash == key[0], watch.dedup_key == dedup_key,
                                             watch.log_id < log_id).values(log_id=log_id))
    return len(newest)


def watched(conn) -> list:
    """Every watch with its trigger row: routing_key, dedup_key, route, source, alert, event, misses."""
    log, watch = IncidentLog, ReconcileWatch
    return conn.execute(select(watch.routing_key_hash, watch.dedup_key, watch.misses, log.id.label("log_id"),
                               log.routing_key, log.route, log.source, log.alert, log.event)
                        .join(log, and_(log.id == watch.log_id, log.dedup_key == watch.dedup_key))
                        .order_by(watch.log_id)).all()


def drop_orphans(conn) -> int:
    """Forget the watches whose trigger row was pruned: nothing is left to act on."""
    watch = ReconcileWatch
    return conn.execute(delete(watch).where(~select(IncidentLog.id).where(
        IncidentLog.id == watch.log_id, IncidentLog.dedup_key == watch.dedup_key).exists())).rowcount


def set_misses(conn, counts: dict[tuple[str, str], int], now: datetime) -> None:
    """Record, by (routing key hash, dedup key), how many checks in a row found each alert gone."""
    watch = ReconcileWatch
    for (digest, dedup_key), misses in counts.items():
        conn.execute(update(watch).where(watch.routing_key_hash == digest, watch.dedup_key == dedup_key)
                     .values(misses=misses, checked_at=now))


def forget(conn, keys: list[tuple[str, str]]) -> None:
    """Stop watching these alerts, by (routing key hash, dedup key)."""
    if keys:
        watch = ReconcileWatch
        conn.execute(delete(watch).where(tuple_(watch.routing_key_hash, watch.dedup_key).in_(keys)))
