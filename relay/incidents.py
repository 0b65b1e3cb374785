"""The create-incident job (the original product): input schema, event building, answers."""
from dataclasses import dataclass

from flask import current_app
from marshmallow import EXCLUDE, Schema, fields, validate

from relay import outbox
from relay.events import DEDUP_KEY_MAX, load_event
from relay.models import db
from relay.pagerduty import Delivery

# Urgency is not an Events API field; dynamic notifications map severity to it
# (support.pagerduty.com "Dynamic notifications": critical, error → high; warning, info → low).
URGENCY_SEVERITY = {"high": "critical", "low": "warning"}
FOLLOW_UPS = ("acknowledge", "resolve")


class ServiceKeySchema(Schema):
    """The input every job needs: which PagerDuty service to address."""

    class Meta:
        unknown = EXCLUDE

    service_key = fields.Str(required=True, validate=validate.Regexp(
        r"^\S{1,255}$", error="must be a PagerDuty integration key (no spaces)"))


class IncidentInputSchema(ServiceKeySchema):
    """The job's input block."""

    title = fields.Str(required=True, validate=validate.Length(min=1, error="must not be empty"))
    urgency = fields.Str(load_default="high", validate=validate.OneOf(tuple(URGENCY_SEVERITY)))
    body = fields.Str(load_default="")
    dedup_key = fields.Str(validate=validate.Length(min=1, max=DEDUP_KEY_MAX))
    source = fields.Str(validate=validate.Length(min=1))


incident_input = IncidentInputSchema()
follow_up_input = ServiceKeySchema()


@dataclass
class JobResult:
    """The job's JSON answer and the HTTP status that fits it."""

    body: dict
    http_status: int

    @property
    def ok(self) -> bool:
        """Tell whether PagerDuty accepted the event."""
        return self.http_status < 300


def trigger(data: dict, source: str) -> JobResult:
    """Validate the job input, send its trigger, and answer like the original job."""
    job = incident_input.load(data)
    payload = {
        "summary": job["title"],
        "source": job.get("source") or current_app.config["RELAY_EVENT_SOURCE"],
        "severity": URGENCY_SEVERITY[job["urgency"]],
        "custom_details": {"body": job["body"], "urgency": job["urgency"]},
    }
    event = {"routing_key": job["service_key"], "event_action": "trigger", "payload": payload}
    if job.get("dedup_key"):
        event["dedup_key"] = job["dedup_key"]
    return _send(event, source)


def follow_up(action: str, dedup_key: str, data: dict, source: str) -> JobResult:
    """Send an acknowledge or resolve for an incident the job opened."""
    job = follow_up_input.load(data)
    event = {"routing_key": job["service_key"], "event_action": action, "dedup_key": dedup_key}
    return _send(event, source)


def _send(event: dict, source: str) -> JobResult:
    row = outbox.record(load_event(event), source=source)
    db.session.commit()  # on record before PagerDuty is asked, so no attempt goes unlogged
    delivery = outbox.deliver_now(row)
    return answer(delivery, row)


def answer(delivery: Delivery, row) -> JobResult:
    """Shape a delivery of a row as the job's success JSON or its PagerDutyError."""
    if delivery.ok:
        return JobResult({
            "success": True, "dedup_key": delivery.dedup_key or row.dedup_key,
            "status": delivery.status, "message": delivery.message, "log_id": row.id,
        }, 200)
    detail = delivery.message or "no answer"
    if delivery.errors:
        detail += ": " + "; ".join(delivery.errors)
    error = {"name": "PagerDutyError", "value": f"PagerDuty API error: {detail}", "log_id": row.id}
    return JobResult(error, _failure_status(delivery))


def _failure_status(delivery: Delivery) -> int:
    """Pick our HTTP status for a refused or failed delivery."""
    if delivery.http_status in (400, 429):
        return delivery.http_status  # the event was invalid / PagerDuty is rate limiting this key
    if delivery.error == "timeout":
        return 504
    return 502  # PagerDuty answered 5xx or could not be reached
