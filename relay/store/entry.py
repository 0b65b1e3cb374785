"""How an incident_log row is shown to people and API clients: never with the full routing key."""
from relay.masking import redact, redact_value
from relay.pagerduty.client import safe_url
from relay.store import states
from relay.store.models import IncidentLog


def _iso(moment):
    return moment.isoformat() if moment else None


def log_entry(row: IncidentLog, with_attempts: bool = False) -> dict:
    """Render a row as JSON-ready data, routing key masked, in its texts too (a title typed with the key, an error
    quoting it), as the page scrubs itself; ids, times and the dedup key a client acts on stay as stored."""
    entry = {
        "id": row.id,
        "created_at": _iso(row.created_at),
        "source": row.source,
        "route": row.route,
        "event_action": row.event_action,
        "dedup_key": row.dedup_key,
        "summary": redact(row.summary, row.routing_key),
        "severity": row.severity,
        "routing_key": row.routing_key_masked,
        "status": row.status,
        "attempts": row.attempts,
        "next_attempt_at": _iso(row.next_attempt_at) if row.status == states.RETRYING else None,
        "delivered_at": _iso(row.delivered_at),
        "http_status": row.http_status,
        "pagerduty": redact_value({"status": row.pd_status, "message": row.pd_message, "errors": row.pd_errors or []},
                                  row.routing_key),
        "error": redact(row.error, row.routing_key),
        "events_url": safe_url(row.events_url) if row.events_url else None,
    }
    if with_attempts:
        entry["event"] = {"routing_key": row.routing_key_masked, **redact_value(row.event, row.routing_key)}
        entry["alert"] = redact_value(row.alert, row.routing_key)
        entry["attempt_log"] = [
            {"started_at": _iso(a.started_at), "duration_ms": a.duration_ms, "outcome": a.outcome,
             "http_status": a.http_status, "error": redact(a.error, row.routing_key)}
            for a in row.attempt_rows
        ]
    return entry
