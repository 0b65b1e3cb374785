"""PostgreSQL's one-statement forms of the outbox's batch reads and writes.

Per row, executemany costs a round trip's worth of driver work and a VALUES list costs SQLAlchemy a fresh
compile; these statements are fixed text whose size never grows, fed one array or one JSON document per batch.
"""
import json
from datetime import datetime

from sqlalchemy import text

# The first open row per alert: one index probe per alert (ix_incident_log_order), whatever the backlog and
# whether or not the table's statistics are fresh.
_FIRST_OPEN = text("""
SELECT k.routing_key, k.dedup_key,
       (SELECT min(l.id) FROM incident_log AS l
         WHERE l.routing_key = k.routing_key AND l.dedup_key = k.dedup_key AND l.status IN ('pending', 'retrying'))
FROM unnest(CAST(:routing_keys AS text[]), CAST(:dedup_keys AS text[])) AS k(routing_key, dedup_key)
""")

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


def first_open(conn, alerts: list[tuple[str, str]]) -> list[tuple[str, str, int | None]]:
    """For each (routing key, dedup key), the id of its first open row."""
    return conn.execute(_FIRST_OPEN, {"routing_keys": [key for key, _ in alerts],
                                      "dedup_keys": [dedup for _, dedup in alerts]}).all()


def finish(conn, worker_id: str, records: list[dict], now: datetime) -> None:
    """Record a batch of results, given as the outbox's result records."""
    conn.execute(_FINISH, {"results": json.dumps(records, default=_iso), "now": now, "worker": worker_id})


def _iso(value):
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__}")
