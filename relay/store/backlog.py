"""The outbox's backlog: how many rows wait to be delivered, by state, and since when (for /metrics and /readyz)."""
from sqlalchemy import func, select, text

from relay.store import models, states
from relay.store.models import IncidentLog


def outbox_backlog(conn) -> tuple[dict[str, int], object]:
    """Count open rows (pending, retrying) by status and find the oldest one's created_at, in one query."""
    rows = conn.execute(select(IncidentLog.status, func.count(), func.min(IncidentLog.created_at))
                        .where(text(f"incident_log.{states.OPEN_SQL}"))  # verbatim: the partial index serves it
                        .group_by(IncidentLog.status)).all()
    counts = {status: 0 for status in states.OPEN}
    oldest = None
    for status, count, created_at in rows:
        counts[status] = count
        created_at = models.as_utc(created_at)
        oldest = created_at if oldest is None or created_at < oldest else oldest
    return counts, oldest


def open_rows_by_answer(conn) -> dict[int, int]:
    """Count open rows by the HTTP status of their last answer (rows never answered left out), in one query."""
    rows = conn.execute(select(IncidentLog.http_status, func.count())
                        .where(text(f"incident_log.{states.OPEN_SQL}"), IncidentLog.http_status.is_not(None))
                        .group_by(IncidentLog.http_status)).all()
    return {http_status: count for http_status, count in rows}
