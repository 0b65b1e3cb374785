"""POST /heartbeats/<name> (and /start, /fail): a job checks in, authenticated like a webhook source (the
`heartbeats` credential); the heartbeat service records it and answers the heartbeat's state."""
from flask import Blueprint, current_app, jsonify, request

from relay.delivery import heartbeats, worker
from relay.errors import RelayError
from relay.store.models import db, utcnow
from relay.web import schemas

bp = Blueprint("heartbeats", __name__, url_prefix="/heartbeats")
SIGNALS = {"start": heartbeats.START, "fail": heartbeats.FAIL}


class UnknownHeartbeat(RelayError):
    """The URL names a job HEARTBEATS does not have."""

    status_code = 404
    code = "unknown_heartbeat"


@bp.post("/<name>")
@bp.post("/<name>/<any(start, fail):signal>")
def check_in(name, signal=None):
    """Record a check-in, its body kept as the last message; answer the heartbeat's state."""
    jobs = current_app.extensions["relay.heartbeats"]
    job = jobs.get(name)
    if job is None:
        known = ", ".join(sorted(jobs)) or "none (HEARTBEATS is empty)"
        raise UnknownHeartbeat(f"no heartbeat named {name!r} in HEARTBEATS; known: {known}")
    body = request.get_data(as_text=True)
    message = body[:heartbeats.MESSAGE_MAX] if body else None
    row = heartbeats.check_in(db.engine, job, SIGNALS.get(signal, heartbeats.SUCCESS), message, utcnow(),
                              current_app.config["PAGERDUTY_EVENTS_URL"])
    worker.wake()
    return jsonify(schemas.heartbeat.dump(heartbeats.describe(row)))


def init_app(app):
    """Check HEARTBEATS at start-up (a bad job stops the relay, named) and keep the jobs for check-ins."""
    app.extensions["relay.heartbeats"] = heartbeats.load_jobs(app.config.get("HEARTBEATS"))
    app.register_blueprint(bp)
