"""GET /openapi.json: the API described from the same marshmallow schemas that load and answer requests."""
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, jsonify

from relay.incidents import OUTCOMES, IncidentInputSchema, ServiceKeySchema
from relay.intake.sources import SOURCES, webhook_methods
from relay.pagerduty.event import ChangeEventSchema, EventSchema
from relay.store.logquery import NO_NUL, LogFilterSchema, Moment
from relay.web import schemas

bp = Blueprint("openapi", __name__)
_spec = None


def _json(schema, description="", status=None):
    return {"description": description or (status or "answer"),
            "content": {"application/json": {"schema": schema}}}


ERRORS = {"400": _json("Error", "invalid input, named per field"), "401": _json("Error", "missing or bad token"),
          "403": _json("Error", "no token configured and the caller is not on loopback")}
KEY_REFUSED = "a routing key outside the allow-list, or no credential configured and the caller not on loopback"
TOO_LARGE = {"413": _json("Error", "body over RELAY_MAX_BODY_BYTES, more alerts than RELAY_MAX_ALERTS_PER_REQUEST, or "
                                   "an alert of more labels or annotations than RELAY_MAX_LABELS_PER_ALERT")}


def _webhook(source, body_schema, methods):
    return {method.lower(): {  # one operation each: apispec resolves an operation's schemas in place
        "summary": f"Receive a {source} notification: every alert is stored as an event before the 202.",
        "tags": ["webhooks"], "security": [{"webhook_bearer": []}, {"webhook_basic": []}, {}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": body_schema}}},
        "responses": {"202": _json("WebhookAccepted", "stored"), **ERRORS, **TOO_LARGE,
                      "409": _json("Error", "a signed request whose signature was accepted before (a replay)")}}
        for method in methods}


def _dropin(summary, body_schema, status, errors_meaning):
    answers = {status: _json("DropInAccepted", "stored"),
               "400": _json("PagerDutyAnswer", "refused as PagerDuty would: status \"invalid event\", errors"),
               "401": _json("PagerDutyAnswer", "missing or bad credentials"),
               "403": _json("PagerDutyAnswer", errors_meaning), "413": _json("PagerDutyAnswer", "body too large")}
    return {"post": {"summary": summary, "tags": ["drop-in"],
                     "security": [{"webhook_bearer": []}, {"webhook_basic": []}, {}],
                     "requestBody": {"required": True, "content": {"application/json": {"schema": body_schema}}},
                     "responses": answers}}


def _preview(source, body_schema):
    return {"post": {
        "summary": f"The events a {source} payload would produce; nothing stored or sent.",
        "tags": ["api"], "security": [{"api_token": []}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": body_schema}}},
        "responses": {"200": _json("Preview"), **ERRORS, **TOO_LARGE}}}


def _job_responses():
    """The job's answers, one per outcome (relay/incidents.py), and the API's own errors."""
    outcomes = {str(outcome.http_status): _json(
        "PagerDutyError" if outcome.pagerduty_error else "JobResult" if outcome.http_status < 300 else "Error",
        f"{outcome.name}: {outcome.meaning} (CLI exit {outcome.exit_code})") for outcome in OUTCOMES}
    return {**ERRORS, **outcomes, "413": _json("Error", "body over RELAY_MAX_BODY_BYTES")}


def _check_ins():
    """POST /heartbeats/{name}, /start and /fail: a job of HEARTBEATS checks in."""
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    what = {"": "a success (resolves its incident)", "/start": "a start", "/fail": "a failure (pages at once)"}
    return {f"/heartbeats/{{name}}{suffix}": {"post": {
        "summary": f"A job checks in: {meaning}; the body is kept as its last message.",
        "tags": ["heartbeats"], "security": [{"webhook_bearer": []}, {"webhook_basic": []}, {}], "parameters": [name],
        "requestBody": {"required": False, "content": {"text/plain": {"schema": {"type": "string"}}}},
        "responses": {"200": _json("Heartbeat", "recorded"), "404": _json("Error", "no job of that name"),
                      **ERRORS}}} for suffix, meaning in what.items()}


def _paths():
    log_id = {"name": "log_id", "in": "path", "required": True,
              "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}}
    dedup = {"name": "dedup_key", "in": "path", "required": True,
             "schema": {"type": "string", "pattern": NO_NUL.regex.pattern}}
    api = {"tags": ["api"], "security": [{"api_token": []}]}
    return {
        "/api/v1/incidents": {"post": {**api, "summary": "Create a PagerDuty incident (the original job).",
                                       "requestBody": {"required": True, "content": {"application/json": {
                                           "schema": IncidentInputSchema}}},
                                       "responses": _job_responses()}},
        "/api/v1/incidents/{dedup_key}/acknowledge": {"post": {
            **api, "summary": "Acknowledge an incident.", "parameters": [dedup],
            "requestBody": {"required": True, "content": {"application/json": {"schema": ServiceKeySchema}}},
            "responses": _job_responses()}},
        "/api/v1/incidents/{dedup_key}/resolve": {"post": {
            **api, "summary": "Resolve an incident.", "parameters": [dedup],
            "requestBody": {"required": True, "content": {"application/json": {"schema": ServiceKeySchema}}},
            "responses": _job_responses()}},
        "/api/v1/log": {"get": {**api, "summary": "List incident_log rows, newest first.",
                                "parameters": [{"in": "query", "schema": LogFilterSchema}],
                                "responses": {"200": _json("LogPage"), **ERRORS, "400": _json(
                                    "Error", "a bad filter, or a parameter it does not know, named per field")}}},
        "/api/v1/log/{log_id}": {"get": {**api, "summary": "One row in full.", "parameters": [log_id],
                                         "responses": {"200": _json("LogDetail"),
                                                       "404": _json("Error", "no such row"), **ERRORS}}},
        "/api/v1/log/{log_id}/retry": {"post": {
            **api, "summary": "Send a failed or dead row again.", "parameters": [log_id],
            "responses": {"202": _json("Retry", "back in the outbox"), "404": _json("Error", "no such row"),
                          "409": _json("Error", "not failed or dead, or a newer row of its alert supersedes it"),
                          **ERRORS}}},
        "/api/v1/heartbeats": {"get": {**api, "summary": "Every heartbeat's state: up, late or down, last seen, "
                                                         "next expected.",
                                       "responses": {"200": _json("HeartbeatList"), **ERRORS}}},
        **_check_ins(),
        **{f"/api/v1/preview/{name}": _preview(name, source.BODY_SCHEMA) for name, source in SOURCES.items()},
        **{f"/webhooks/{name}": _webhook(name, source.BODY_SCHEMA, webhook_methods(source))
           for name, source in SOURCES.items()},
        "/v2/enqueue": _dropin("PagerDuty's Events API v2: stored, then delivered; the 202 carries the dedup key "
                               "PagerDuty gets.", EventSchema, "202", KEY_REFUSED),
        "/v2/change/enqueue": _dropin("PagerDuty's change events: stored, then delivered to its change endpoint.",
                                      ChangeEventSchema, "202", KEY_REFUSED),
        "/generic/2010-04-15/create_event.json": _dropin(
            "PagerDuty's legacy Events API v1, translated to v2; answered 200 with incident_key.",
            {"type": "object"}, "200", KEY_REFUSED),
        "/healthz": {"get": {"tags": ["health"], "summary": "The process is up.",
                             "responses": {"200": {"description": "up"}}}},
        "/readyz": {"get": {"tags": ["health"],
                            "summary": "The relay can work: the store answers, delivery runs, the outbox keeps up.",
                            "responses": {"200": {"description": "ready, with every check"},
                                          "503": {"description": "not ready, with the reasons and every check"}}}},
        "/metrics": {"get": {"tags": ["health"], "summary": "Prometheus metrics (OpenMetrics when asked).",
                             "responses": {"200": {"description": "the metrics, as text"}}}},
    }


def _schema_name(schema) -> str:
    """Name components by class, prefixed by source where two sources share class names."""
    cls = schema if isinstance(schema, type) else type(schema)
    name = cls.__name__.removesuffix("Schema")
    source = next((source for source, module in SOURCES.items() if module.__name__ == cls.__module__), None)
    return source.capitalize() + name if source else name


def build_spec() -> dict:
    """Assemble the OpenAPI 3 document."""
    plugin = MarshmallowPlugin(schema_name_resolver=_schema_name)
    spec = APISpec(title="relay", version="1.0.0", openapi_version="3.0.3", plugins=[plugin],
                   info={"description": "An alert relay between monitoring and PagerDuty's Events API v2."})
    plugin.map_to_openapi_type(Moment, "string", "date-time")  # durations such as 2h are accepted too
    for name in ("Error", "JobResult", "PagerDutyError", "LogPage", "LogDetail", "WebhookAccepted", "Preview",
                 "Retry", "DropInAccepted", "Heartbeat", "HeartbeatList"):  # PagerDutyAnswer comes with LogDetail
        spec.components.schema(name, schema=getattr(schemas, f"{name}Schema"))
    spec.components.security_scheme("api_token", {"type": "http", "scheme": "bearer",
                                                  "description": "RELAY_API_TOKEN"})
    spec.components.security_scheme("webhook_bearer", {"type": "http", "scheme": "bearer"})
    spec.components.security_scheme("webhook_basic", {"type": "http", "scheme": "basic"})
    for path, operations in _paths().items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()


@bp.get("/openapi.json")
def openapi_json():
    """Serve the OpenAPI document (built once per process)."""
    global _spec
    if _spec is None:
        _spec = build_spec()
    return jsonify(_spec)
