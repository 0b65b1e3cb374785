"""PagerDuty's own Events API, served by the relay (the drop-in endpoint): POST /v2/enqueue, /v2/change/enqueue
and the legacy v1 /generic/2010-04-15/create_event.json take what PagerDuty takes and answer as PagerDuty does,
once the event is stored; every error in PagerDuty's shape, so its clients show it."""
import logging
import time

from flask import Blueprint, g, jsonify
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from relay import accept, metrics
from relay.errors import RelayError, retry_after_headers
from relay.intake.sources import pagerduty
from relay.web import schemas
from relay.web.payloads import body_too_large, read_json

log = logging.getLogger(__name__)
bp = Blueprint("dropin", __name__)

ACCEPTED = {"status": "success", "message": "Event processed"}  # 01-Overview.md: the 202's body, and v1's 200
CHANGE_ACCEPTED = {"status": "success", "message": "Change event processed"}  # 03-Change-Events.md
INVALID = {"status": "invalid event", "message": "Event object is invalid"}  # the 400's, with "errors"
V1_PATH = "/generic/2010-04-15/create_event.json"


@bp.post("/v2/enqueue")
def enqueue():
    """Accept an Events API v2 event: stored before the 202, which carries the dedup key PagerDuty will get."""
    events = accept.receive(pagerduty, read_json())
    _log_accepted("v2", events)
    return jsonify(schemas.dropin_accepted.dump({**ACCEPTED, "dedup_key": accept.answer_dedup_key(events)})), 202


@bp.post(V1_PATH)
def create_event():
    """Accept a legacy Events API v1 event, translated to v2; PagerDuty answered v1 with 200 and incident_key."""
    try:
        events = accept.receive(pagerduty, pagerduty.from_v1(read_json()))
    except ValidationError as exc:
        raise ValidationError(pagerduty.v1_texts(_texts(exc))) from None
    except pagerduty.KeyNotAllowed as exc:
        raise pagerduty.KeyNotAllowed(pagerduty.v1_texts([exc.message])[0]) from None
    _log_accepted("v1", events)
    return jsonify(schemas.dropin_accepted.dump({**ACCEPTED, "incident_key": accept.answer_dedup_key(events)})), 200


@bp.post("/v2/change/enqueue")
def change_enqueue():
    """Accept a change event: stored for PagerDuty's change endpoint before the 202."""
    log_id = accept.receive_change(read_json())
    log.info("change event accepted", extra={"source": pagerduty.NAME, "log_id": log_id})
    return jsonify(schemas.dropin_accepted.dump(CHANGE_ACCEPTED)), 202


@bp.url_value_preprocessor
def start_clock(_endpoint, _values):
    """Note when the relay began on this event (before the authentication check, so refusals are timed too)."""
    g.dropin_started = time.perf_counter()


@bp.after_request
def count(response):
    """Count every drop-in request as a webhook of the pagerduty source, by outcome."""
    metrics.webhook(pagerduty.NAME, response.status_code, time.perf_counter() - g.dropin_started)
    return response


def _log_accepted(version: str, events: list[dict]) -> None:
    log.info("drop-in event accepted", extra={"source": pagerduty.NAME, "api": version, "events": len(events),
                                              "statuses": sorted({event.get("status", "pending") for event in events})})


def _texts(exc: ValidationError) -> list[str]:
    """The error texts of a refused event: PagerDuty's own from the checks, else the marshmallow messages."""
    if isinstance(exc.messages, list):
        return [str(text) for text in exc.messages]
    return [f"'{name}' {messages}" for name, messages in exc.messages.items()]


@bp.errorhandler(ValidationError)
def invalid_event(exc: ValidationError):
    """PagerDuty's 400 for an event it would refuse."""
    return jsonify({**INVALID, "errors": _texts(exc)}), 400


@bp.errorhandler(RelayError)
def refused(exc: RelayError):
    """Any other refusal (not JSON, bad credentials, a key outside the allow-list, the store down), in PagerDuty's
    shape; a 503 keeps its Retry-After."""
    if exc.status_code == 400:
        return jsonify({**INVALID, "errors": [exc.message]}), 400
    return jsonify(_error(exc.code, exc.message)), exc.status_code, retry_after_headers(exc)


@bp.errorhandler(RequestEntityTooLarge)
def too_large(exc: RequestEntityTooLarge):
    """A body over RELAY_MAX_BODY_BYTES, said as the webhooks say it, in PagerDuty's shape."""
    response, status = body_too_large(exc)
    return jsonify(_error("too large", response.get_json()["error"]["message"])), status


@bp.errorhandler(HTTPException)
def http_error(exc: HTTPException):
    """A wrong method and the like, in PagerDuty's shape."""
    headers = [(name, value) for name, value in exc.get_headers() if name != "Content-Type"]
    return jsonify(_error((exc.name or "error").lower(), exc.description or exc.name)), exc.code, headers


def _error(status: str, message: str) -> dict:
    return {"status": status.replace("_", " "), "message": message, "errors": [message]}
