"""POST /webhooks/<source>: read, map and store the alerts of a notification, then answer 202."""
import logging
import time

from flask import Blueprint, current_app, g, jsonify, request

from relay import metrics
from relay.delivery import worker
from relay.errors import RelayError
from relay.intake.mapping import Planned, plan
from relay.intake.sources import get_source
from relay.masking import mask
from relay.store import models, outbox
from relay.store.models import db
from relay.web.payloads import read_json

log = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")


class UnknownSource(RelayError):
    """The URL names a source the relay does not have."""

    status_code = 404
    code = "unknown_source"


def alerts_from_request(source_name: str):
    """Load the request body through the named source's schema into normalized alerts."""
    source = get_source(source_name)
    if source is None:
        raise UnknownSource(f"no source named {source_name!r}; known: alertmanager, grafana, generic")
    settings = current_app.extensions["relay.source_settings"].get(source_name)
    return source.to_alerts(read_json(allow_array=True), settings)


def planned_events(source_name: str) -> list[Planned]:
    """Map the request's alerts to the events they call for (nothing stored)."""
    return plan(alerts_from_request(source_name), current_app.extensions["relay.intake.routing"])


def describe(item: Planned, log_id=None) -> dict:
    """Summarize one planned event for an answer, routing key masked."""
    entry = {"route": item.route, "event_action": item.event["event_action"],
             "dedup_key": item.event.get("dedup_key"), "routing_key": mask(item.event["routing_key"])}
    if log_id is not None:
        entry = {"log_id": log_id, **entry}
    if item.problem:
        entry.update(status=models.UNROUTED, problem=item.problem)
    return entry


def store(source_name: str, planned: list[Planned]) -> list[int]:
    """Write one incident_log row per planned event, commit them together, and return their ids."""
    rows = [outbox.row_values(item.event, source=source_name, route=item.route, alert=item.alert.as_dict(),
                              status=models.PENDING if item.routed else models.UNROUTED, error=item.problem)
            for item in planned]
    ids = outbox.store_rows(db.engine, rows)
    worker.wake()
    metrics.events_stored(source_name, planned)
    return ids


@bp.post("/<source_name>")
def receive(source_name):
    """Accept a notification: every alert becomes a stored event before the 202."""
    planned = planned_events(source_name)
    ids = store(source_name, planned)
    events = [describe(item, log_id) for item, log_id in zip(planned, ids)]
    log.info("webhook accepted", extra={"source": source_name, "events": len(events),
                                        "unrouted": sum(not item.routed for item in planned)})
    return jsonify({"accepted": len(events), "events": events}), 202


@bp.url_value_preprocessor
def start_clock(_endpoint, _values):
    """Note when the relay began on this webhook, for its duration in the metrics (URL preprocessors run before
    every before_request function, the authentication check included, so refused webhooks are timed too)."""
    g.webhook_started = time.perf_counter()


@bp.after_request
def count(response):
    """Count every webhook by source and outcome, refused ones included; say why one was refused."""
    name = (request.view_args or {}).get("source_name", "")
    source = name if get_source(name) is not None else "unknown"  # URL junk must not become label values
    outcome = metrics.webhook(source, response.status_code, time.perf_counter() - g.webhook_started)
    if outcome != "accepted":
        log.info("webhook refused", extra={"source": source, "outcome": outcome, "status": response.status_code})
    return response
