"""Writing events into incident_log and recording what each delivery attempt did."""
from flask import current_app

from relay import models
from relay.models import DeliveryAttempt, IncidentLog, db, utcnow
from relay.pagerduty import DELIVERED, FAILED, Delivery


def record(event: dict, source: str, route: str | None = None, alert: dict | None = None,
           status: str = models.PENDING, error: str | None = None) -> IncidentLog:
    """Add a row (pending unless told otherwise) for a validated event; the caller commits."""
    payload = event.get("payload") or {}
    row = IncidentLog(
        source=source,
        route=route,
        event_action=event["event_action"],
        dedup_key=event.get("dedup_key"),
        summary=payload.get("summary"),
        severity=payload.get("severity"),
        event={k: v for k, v in event.items() if k != "routing_key"},
        alert=alert,
        status=status,
        attempts=0,
        error=error,
    )
    row.set_routing_key(event["routing_key"])
    db.session.add(row)
    return row


def record_delivery(row: IncidentLog, delivery: Delivery) -> None:
    """Store an attempt and move the row to the state its outcome calls for."""
    row.attempts += 1
    row.http_status = delivery.http_status
    row.pd_status = delivery.status
    row.pd_message = delivery.message
    row.pd_errors = delivery.errors or None
    row.error = delivery.error
    if delivery.dedup_key and not row.dedup_key:
        row.dedup_key = delivery.dedup_key  # PagerDuty generated it
    row.status = _next_status(delivery.outcome)
    if row.status == models.DELIVERED:
        row.delivered_at = utcnow()
    db.session.add(DeliveryAttempt(
        log=row, duration_ms=round(delivery.duration_ms, 2), outcome=delivery.outcome,
        http_status=delivery.http_status, error=delivery.error or _errors_text(delivery),
    ))


def _next_status(outcome: str) -> str:
    return {DELIVERED: models.DELIVERED, FAILED: models.FAILED}.get(outcome, models.RETRYING)


def _errors_text(delivery):
    if delivery.ok:
        return None
    return "; ".join([delivery.message or "", *delivery.errors]).strip("; ") or None


def deliver_now(row: IncidentLog) -> Delivery:
    """Send a committed row to PagerDuty in this thread and commit the outcome."""
    delivery = current_app.extensions["relay.pagerduty"].send(row.outbound_event())
    record_delivery(row, delivery)
    db.session.commit()
    return delivery
