"""The JSON API under /api/v1: the create-incident job, the incident log, retries and previews."""
from flask import Blueprint, abort, jsonify, request
from werkzeug.routing import PathConverter

from relay import accept, incidents
from relay.delivery import heartbeats
from relay.store import logquery, states
from relay.store.entry import log_entries
from relay.store.models import IncidentLog, db
from relay.web import schemas
from relay.web.payloads import read_json

bp = Blueprint("api", __name__, url_prefix="/api/v1")
LOG_ID = "int(min=1, max=9223372036854775807)"  # ids are 64-bit; larger numbers are simply not found


class DedupKeyConverter(PathConverter):
    """A dedup key in a path: any key a body may carry, slashes and line breaks too (werkzeug's path stops at a
    line break, which would answer 404 for an incident the job opened)."""

    regex = r"[^/][\s\S]*?"


bp.record_once(lambda state: state.app.url_map.converters.setdefault("dedup_key", DedupKeyConverter))


@bp.post("/incidents")
def create_incident():
    """Trigger an incident and answer once PagerDuty has."""
    return _job_answer(incidents.trigger(read_json(), source="api"))


@bp.post("/incidents/<dedup_key:dedup_key>/<any(acknowledge, resolve):action>")
def follow_up(dedup_key, action):
    """Acknowledge or resolve an incident by its dedup key."""
    return _job_answer(incidents.follow_up(action, dedup_key, read_json(), source="api"))


def _job_answer(result: incidents.JobResult):
    schema = schemas.pagerduty_error if result.pagerduty_error else schemas.job_result
    return jsonify(schema.dump(result.body)), result.http_status


@bp.get("/log")
def list_log():
    """List incident_log rows, newest first, filtered and paginated by the query string (unknown names a 400)."""
    rows, next_before_id = logquery.find(db.session, logquery.log_filter.load(request.args))
    return jsonify(schemas.log_page.dump({"items": log_entries(db.session, rows), "next_before_id": next_before_id}))


@bp.get(f"/log/<{LOG_ID}:log_id>")
def show_log(log_id):
    """Show one row: the stored event (routing key masked), the inbound alert, PagerDuty's answers, attempts."""
    row = db.session.get(IncidentLog, log_id) or abort(404, f"no incident_log row with id {log_id}")
    return jsonify(schemas.log_detail.dump(log_entries(db.session, [row], with_attempts=True)[0]))


@bp.post(f"/log/<{LOG_ID}:log_id>/retry")
def retry(log_id):
    """Send a failed or dead row again."""
    incidents.requeue_one(log_id)
    return jsonify(schemas.retried.dump({"log_id": log_id, "status": states.PENDING})), 202


@bp.post("/preview/<source_name>")
def preview(source_name):
    """Show the events a payload would produce, without storing or sending anything."""
    source = accept.source_named(source_name)
    return jsonify(schemas.preview.dump({"events": accept.preview(source, read_json(allow_array=True))}))


@bp.get("/heartbeats")
def list_heartbeats():
    """Every heartbeat's state: up, late or down, last seen, next expected."""
    with db.engine.connect() as conn:
        return jsonify(schemas.heartbeat_list.dump({"items": heartbeats.overview(conn)}))
