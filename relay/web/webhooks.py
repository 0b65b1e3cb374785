"""POST (or PUT, for the sources whose senders offer it) /webhooks/<source>: read the notification, have it
accepted (mapped and stored), then answer 202. Each source's URL takes its own methods (its METHODS), and a 405's
Allow names only those."""
import logging
import time

from flask import Blueprint, g, jsonify, request

from relay import accept, metrics
from relay.intake.sources import SOURCES, get_source, webhook_methods
from relay.store import states
from relay.web import schemas
from relay.web.payloads import read_json

log = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")


def receive(source_name):
    """Accept a notification: every alert becomes a stored event before the 202."""
    source = accept.source_named(source_name)
    events = accept.receive(source, read_json(allow_array=True))
    log.info("webhook accepted", extra={"source": source_name, "events": len(events),
                                        "unrouted": sum(event.get("status") == states.UNROUTED for event in events),
                                        "stale": sum(event.get("status") == states.STALE for event in events),
                                        "superseded": sum(event.get("status") == states.SUPERSEDED
                                                          for event in events),
                                        "held": sum(event.get("status") == states.HELD for event in events)})
    return jsonify(schemas.webhook_accepted.dump({"accepted": len(events), "events": events})), 202


@bp.record
def add_rules(state):
    """Route each registered source's URL with its own methods: one rule for all would take, and list in a 405's
    Allow, every source's. Any other name takes what every source takes, to be answered 404 (unknown_source)."""
    for name, source in SOURCES.items():
        state.add_url_rule(f"/{name}", "receive", receive, defaults={"source_name": name},
                           methods=webhook_methods(source))
    common = set.intersection(*(set(webhook_methods(source)) for source in SOURCES.values()))
    state.add_url_rule("/<source_name>", "unknown", receive, methods=sorted(common))


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
