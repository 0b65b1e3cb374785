"""The JSON API under /api/v1: the create-incident job and its follow-ups."""
from flask import Blueprint, jsonify

from relay import incidents, webhooks
from relay.masking import mask
from relay.payloads import read_json

bp = Blueprint("api", __name__, url_prefix="/api/v1")


@bp.post("/incidents")
def create_incident():
    """Trigger an incident and answer once PagerDuty has."""
    result = incidents.trigger(read_json(), source="api")
    return jsonify(result.body), result.http_status


@bp.post("/incidents/<path:dedup_key>/<any(acknowledge, resolve):action>")
def follow_up(dedup_key, action):
    """Acknowledge or resolve an incident by its dedup key."""
    result = incidents.follow_up(action, dedup_key, read_json(), source="api")
    return jsonify(result.body), result.http_status


@bp.post("/preview/<source_name>")
def preview(source_name):
    """Show the events a payload would produce, without storing or sending anything."""
    planned = webhooks.planned_events(source_name)
    return jsonify({"events": [preview_entry(item) for item in planned]})


def preview_entry(item) -> dict:
    """Describe a planned event in full, routing key masked."""
    return {**webhooks.describe(item), "event": {**item.event, "routing_key": mask(item.event["routing_key"])}}
