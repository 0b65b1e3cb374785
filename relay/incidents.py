"""The create-incident job (the original product), the service the API and the CLI share: input schema, event
building, waiting for PagerDuty's outcome, answers; and sending one failed row again, unless a newer event of
its alert supersedes it."""
import uuid
from dataclasses import dataclass

from flask import current_app
from marshmallow import RAISE, Schema, fields, validate
from werkzeug.exceptions import NotFound

from relay import metrics
from relay.delivery import worker
from relay.errors import RelayError
from relay.pagerduty.event import DEDUP_KEY_MAX, load_event
from relay.store import models, outbox, requeue, states
from relay.store.models import IncidentLog, db

# Urgency is not an Events API field; dynamic notifications map severity to it
# (support.pagerduty.com "Dynamic notifications": critical, error → high; warning, info → low).
URGENCY_SEVERITY = {"high": "critical", "low": "warning"}
FOLLOW_UPS = ("acknowledge", "resolve")
# PagerDuty's one answer that refuses the event itself (01-Overview.md: 400, "Event object is invalid").
REFUSAL_STATUS = 400


@dataclass(frozen=True)
class Outcome:
    """One of the job's answers: what it means, the API's HTTP status and the CLI's exit code."""

    name: str
    http_status: int
    exit_code: int
    meaning: str
    pagerduty_error: bool = False  # answered as the original PagerDutyError shape rather than a JobResult


DELIVERED = Outcome("delivered", 200, 0, "PagerDuty accepted the event")
QUEUED = Outcome("queued", 202, 3, "stored; PagerDuty has not accepted it within RELAY_SYNC_WAIT_SECONDS and the "
                 "relay keeps trying (an outage, 429s, timeouts, answers that are not the Events API's)")
REFUSED = Outcome("refused", 422, 1, "PagerDuty refused the event as invalid (its 400); sending it again cannot help",
                  pagerduty_error=True)
DEAD = Outcome("dead", 502, 1, "the relay gave up: retried until RELAY_GIVE_UP_AFTER_SECONDS, or failed for good on "
               "an answer that is no refusal of the event; `value` says what was answered", pagerduty_error=True)
INVALID_INPUT = Outcome("invalid input", 400, 2, "the input was invalid or named an unknown field; nothing was sent")
OUTCOMES = (DELIVERED, QUEUED, REFUSED, DEAD, INVALID_INPUT)


class Conflict(RelayError):
    """The row is not in a state the request can act on."""

    status_code = 409
    code = "conflict"


class NotLatest(Conflict):
    """The row is no longer its alert's latest word: sending it again would undo a newer event."""

    code = "superseded"


class ServiceKeySchema(Schema):
    """The input every job needs: which PagerDuty service to address."""

    class Meta:
        unknown = RAISE  # a misspelt or unsupported field must not be dropped in silence

    service_key = fields.Str(required=True, validate=validate.Regexp(
        r"^[!-~]{1,255}$", error="must be a PagerDuty integration key (printable ASCII, no spaces)"))


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
    """The job's answer: its JSON body and which outcome it is."""

    body: dict
    outcome: Outcome

    @property
    def http_status(self) -> int:
        """The API's HTTP status for the outcome."""
        return self.outcome.http_status

    @property
    def exit_code(self) -> int:
        """The CLI's exit status for the outcome."""
        return self.outcome.exit_code

    @property
    def pagerduty_error(self) -> bool:
        """Tell whether the body is a PagerDutyError rather than a JobResult."""
        return self.outcome.pagerduty_error


def trigger(data: dict, source: str, events_url: str | None = None) -> JobResult:
    """Validate the job input, send its trigger (to events_url, by default this process's PAGERDUTY_EVENTS_URL),
    and answer like the original job."""
    job = incident_input.load(data)
    payload = {
        "summary": job["title"],
        "source": job.get("source") or current_app.config["RELAY_EVENT_SOURCE"],
        "severity": URGENCY_SEVERITY[job["urgency"]],
        "custom_details": {"body": job["body"], "urgency": job["urgency"]},
    }
    # Chosen here, not by PagerDuty, so that every answer (queued and failed too) names the key to follow up with.
    dedup_key = job.get("dedup_key") or uuid.uuid4().hex
    event = {"routing_key": job["service_key"], "event_action": "trigger", "dedup_key": dedup_key,
             "payload": payload}
    return _send(event, source, events_url)


def follow_up(action: str, dedup_key: str, data: dict, source: str, events_url: str | None = None) -> JobResult:
    """Send an acknowledge or resolve for an incident the job opened (to events_url, as trigger does)."""
    job = follow_up_input.load(data)
    event = {"routing_key": job["service_key"], "event_action": action, "dedup_key": dedup_key}
    return _send(event, source, events_url)


def _send(event: dict, source: str, events_url: str | None) -> JobResult:
    row = outbox.record(load_event(event), source=source,
                        events_url=events_url or current_app.config["PAGERDUTY_EVENTS_URL"])
    db.session.commit()  # on record before PagerDuty is asked: nothing accepted is lost
    metrics.event_stored(source, event["event_action"])
    worker.wait_for_outcome(row.id, current_app.config["RELAY_SYNC_WAIT_SECONDS"])
    db.session.refresh(row)
    return answer(row)


def outcome_of(row: IncidentLog) -> Outcome:
    """Which of the job's outcomes a row's state is."""
    if row.status == states.DELIVERED:
        return DELIVERED
    if row.status == states.FAILED and row.http_status == REFUSAL_STATUS:
        return REFUSED
    if row.status in states.NOT_DELIVERED:
        return DEAD
    return QUEUED


def answer(row: IncidentLog) -> JobResult:
    """Shape a row's delivery as the job's success JSON, its PagerDutyError, or "queued"."""
    outcome = outcome_of(row)
    if outcome is DELIVERED:
        return JobResult({"success": True, "dedup_key": row.dedup_key, "status": row.pd_status,
                          "message": row.pd_message, "log_id": row.id}, outcome)
    if outcome.pagerduty_error:
        errors = "; ".join(row.pd_errors or [])
        detail = f"{row.pd_message or row.error or 'no answer'}{': ' + errors if errors else ''}"
        if outcome is DEAD:
            detail = _dead_detail(row, detail)
        return JobResult({"name": "PagerDutyError", "value": f"PagerDuty API error: {detail}", "log_id": row.id,
                          "dedup_key": row.dedup_key}, outcome)
    last = f" (last attempt: {row.pd_message or row.error})" if row.attempts else ""
    if worker.delivering_process() is not None:
        message = f"stored; PagerDuty has not confirmed it yet and the relay keeps trying{last}"
    else:
        message = (f"stored; PagerDuty has not confirmed it yet{last}, and no delivery process is running: it is "
                   "sent once one runs (`make run` or `flask --app wsgi relay worker`)")
    return JobResult({"success": False, "status": "queued", "dedup_key": row.dedup_key, "log_id": row.id,
                      "message": message}, outcome)


def _dead_detail(row: IncidentLog, answered: str) -> str:
    """Say why a row that PagerDuty never refused is dead, and what was answered last."""
    if row.http_status and not answered.startswith(f"HTTP {row.http_status}"):
        answered = f"HTTP {row.http_status}: {answered}"
    if row.status == states.FAILED:
        return f"the answer ends delivery for good: {answered}"
    return f"gave up after {row.attempts} attempt(s); the last answer: {answered}"


def requeue_one(log_id: int) -> None:
    """Put one failed or dead row back in the outbox and wake delivery, if it is still its alert's latest event;
    NotFound, NotLatest or Conflict otherwise."""
    condition = IncidentLog.id == log_id
    moved = requeue.requeue(db.session, models.utcnow(), condition)
    newer = [] if moved else requeue.superseded(db.session, condition)
    db.session.commit()
    if newer:
        raise NotLatest(newer[0].reason)
    if not moved:
        row = db.session.get(IncidentLog, log_id)
        if row is None:
            raise NotFound(f"no incident_log row with id {log_id}")
        raise Conflict(f"row {log_id} is {row.status}; only failed or dead rows can be retried")
    worker.wake()
