"""The JSON API under /api/v1: the create-incident job and its follow-ups."""
from flask import Blueprint, jsonify, request

from relay import incidents
from relay.errors import BadInput

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def json_object() -> dict:
    """Return the request body as a JSON object, or refuse it with 400."""
    data = request.get_json(force=True, silent=True)
    if not isinstance(data, dict):
        raise BadInput("the request body must be a JSON object")
    return data


@bp.post("/incidents")
def create_incident():
    """Trigger an incident and answer once PagerDuty has."""
    result = incidents.trigger(json_object(), source="api")
    return jsonify(result.body), result.http_status


@bp.post("/incidents/<path:dedup_key>/<any(acknowledge, resolve):action>")
def follow_up(dedup_key, action):
    """Acknowledge or resolve an incident by its dedup key."""
    result = incidents.follow_up(action, dedup_key, json_object(), source="api")
    return jsonify(result.body), result.http_status
