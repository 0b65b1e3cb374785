"""How an incident_log row is shown to people and API clients: never with the full routing key."""
from relay.masking import redact, redact_value
from relay.pagerduty.client import safe_url
from relay.store import states
from relay.store.logquery import alert_summaries
from relay.store.models import IncidentLog

EXPLAINED = (states.RETRYING, states.FAILED, states.DEAD, states.UNROUTED, states.STALE, states.SUPERSEDED,
             states.HELD)  # say why


def _iso(moment):
    return moment.isoformat() if moment else None


def reason(row: IncidentLog) -> str | None:
    """Say why a row is retrying, failed, dead, unrouted, stale, superseded or held: PagerDuty's last answer and our
    error."""
    if row.status not in EXPLAINED:
        return None
    parts = [row.pd_message, *(str(error) for error in row.pd_errors or [])]
    if row.error and row.error not in parts:
        parts.append(row.error)
    text = "; ".join(part for part in parts if part)
    if row.http_status:
        text = f"HTTP {row.http_status}" + (f": {text}" if text else "")
    return text or None


def log_entries(session, rows: list[IncidentLog], with_attempts: bool = False) -> list[dict]:
    """Render rows as log_entry does, each follow-up without a summary given its alert's."""
    summaries = alert_summaries(session, rows)
    return [log_entry(row, with_attempts, alert_summary=summaries.get(row.id)) for row in rows]


def log_entry(row: IncidentLog, with_attempts: bool = False, alert_summary: str | None = None) -> dict:
    """Render a row as JSON-ready data, routing key masked, in its texts too (a title typed with the key, an error
    quoting it), as the page scrubs itself; ids, times and the dedup key a client acts on stay as stored.

    alert_summary stands in for the summary of a row that has none (see logquery.alert_summaries)."""
    entry = {
        "id": row.id,
        "created_at": _iso(row.created_at),
        "source": row.source,
        "route": row.route,
        "event_action": row.event_action,
        "dedup_key": row.dedup_key,
        "summary": redact(row.summary or alert_summary, row.routing_key),
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
        "reason": redact(reason(row), row.routing_key),
        "superseded_by": row.superseded_by,
        "cause": redact(row.cause, row.routing_key),
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
