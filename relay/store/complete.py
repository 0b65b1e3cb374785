"""The completion: each attempt's result recorded on its attempt and its row, the row moved on (delivered, retry
at a time, failed), its lease released, and the next row of its alert woken."""
from datetime import datetime

from sqlalchemy import and_, bindparam, func, select, text, update
from sqlalchemy.orm import aliased

from relay.store import endpoints, states
from relay.store.claim import Claimed
from relay.store.models import IncidentLog
from relay.store.outbox import backend
from relay.store.rate_budget import RATE_LIMITED, hold_rate_limited_keys


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
        hold_rate_limited_keys(conn, results, moves, now)
    if records and outage is not None:
        endpoints.record(conn, results, now, outage)
    return moves


_NOW = bindparam("now")
_IDS = bindparam("ids", expanding=True)
_ENDED = aliased(IncidentLog, name="ended")
_FOLLOWING = aliased(IncidentLog, name="following")
# The next open row of each ended row's alert, put off while it waited behind it: due at once, so the alert's
# events follow each other without waiting out claim.BLOCKED_RECHECK.
_WAKE_NEXT_OF_ALERT = update(IncidentLog).where(IncidentLog.id.in_(
    select(func.min(_FOLLOWING.id)).join(_ENDED, and_(_FOLLOWING.routing_key == _ENDED.routing_key,
                                                     _FOLLOWING.dedup_key == _ENDED.dedup_key, _FOLLOWING.id > _ENDED.id))
    .where(_ENDED.id.in_(_IDS), text(f"following.{states.OPEN_SQL}")).group_by(_ENDED.id)),
    IncidentLog.next_attempt_at > _NOW).values(next_attempt_at=_NOW)


def _errors_text(delivery) -> str | None:
    if delivery.outcome == states.DELIVERED:
        return None
    return "; ".join([delivery.message or "", *delivery.errors]).strip("; ") or None

