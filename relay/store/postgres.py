"""PostgreSQL's one-statement form of the outbox's batch of results.

Per row, executemany costs a round trip's worth of driver work and a VALUES list costs SQLAlchemy a fresh
compile; this statement is fixed text whose size never grows, fed one JSON document per batch.
"""
import json
from datetime import datetime

from sqlalchemy import text

# Each result on its attempt, then on its row (only while this worker holds the lease), in one statement.
_FINISH = text("""
WITH r AS (
    SELECT * FROM json_to_recordset(CAST(:results AS json)) AS r(
        b_attempt_id bigint, b_outcome text, b_http_status int, b_duration_ms float8, b_attempt_error text,
        b_log_id bigint, b_status text, b_next timestamptz, b_delivered_at timestamptz, b_dedup_key text,
        b_pd_status text, b_pd_message text, b_pd_errors json, b_error text)
), attempts AS (
    UPDATE delivery_attempt AS a
    SET outcome = r.b_outcome, http_status = r.b_http_status, duration_ms = r.b_duration_ms, error = r.b_attempt_error
    FROM r WHERE a.id = r.b_attempt_id
)
UPDATE incident_log AS l
SET status = r.b_status, next_attempt_at = r.b_next, delivered_at = coalesce(l.delivered_at, r.b_delivered_at),
    dedup_key = coalesce(l.dedup_key, r.b_dedup_key), http_status = r.b_http_status, pd_status = r.b_pd_status,
    pd_message = r.b_pd_message, pd_errors = r.b_pd_errors, error = r.b_error,
    claimed_by = NULL, claimed_until = NULL, updated_at = :now
FROM r WHERE l.id = r.b_log_id AND l.claimed_by = :worker
""")


def finish(conn, worker_id: str, records: list[dict], now: datetime) -> None:
    """Record a batch of results, given as the outbox's result records."""
    conn.execute(_FINISH, {"results": json.dumps(records, default=_iso), "now": now, "worker": worker_id})


def _iso(value):
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__}")
