"""PagerDuty's own Events API, for the tools that already speak it (the drop-in endpoint): an Events API v2 event,
or a legacy v1 one translated to v2, checked by PagerDuty's rules and mapped onto one alert whose labels are the
event's fields, so that routes can re-key it; change events checked the same way.

The event itself is passed on as its sender made it (relay/intake/mapping.py dropin_event), with the dedup key the
relay answered with: the relay assigns one to a trigger that has none, as PagerDuty would.
"""
import hmac
import uuid

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from relay.errors import RelayError
from relay.intake.alert import FIRING, RESOLVED, ROUTING_KEY_LABEL, Alert
from relay.pagerduty.event import ROUTING_KEY_LENGTH, TRIGGER_ONLY, EventSchema, change_event_schema, refusals

NAME = "pagerduty"
CLIENT = "PagerDuty Events API"  # the sender's own client field, when it sends one, is passed on instead
METHODS = ("POST",)  # PagerDuty's Events API takes POST only
PAYLOAD_LABELS = ("severity", "source", "component", "group", "class")  # a trigger's payload fields, as labels

# Events API v1 (POST /generic/2010-04-15/create_event.json), by the v2 field each becomes.
V1_FIELDS = {"service_key": "routing_key", "event_type": "event_action", "incident_key": "dedup_key",
             "description": "payload.summary", "details": "payload.custom_details"}
V1_SEVERITY = "error"  # v1 has no severity: the relay's default severity, as for alerts without one
V1_SOURCE = "Events API v1"  # v1 has no source: the client's name, or this


class SettingsSchema(Schema):
    """The source's settings (PAGERDUTY_WEBHOOK): the routing keys senders may name; empty: any."""

    class Meta:
        unknown = RAISE  # a misspelt setting must fail at start-up, not leave the endpoint open

    # A key of another length never matches an event (PagerDuty's have 32 characters): a typo would refuse them all.
    # The error names the entry's position, never the key.
    routing_keys = fields.List(fields.String(validate=validate.Length(equal=ROUTING_KEY_LENGTH, error=(
        f"not a routing key: a PagerDuty routing key has {ROUTING_KEY_LENGTH} characters "
        "(RELAY_PAGERDUTY_ROUTING_KEYS, counted from 0)"))), load_default=list)


class KeyNotAllowed(RelayError):
    """The event names a routing key outside PAGERDUTY_WEBHOOK's allow-list."""

    status_code = 403
    code = "forbidden"


SETTINGS_SCHEMA = SettingsSchema()
BODY_SCHEMA = EventSchema  # what /openapi.json describes


def allow_list(settings: dict | None) -> list[str]:
    """The routing keys senders may name (empty: any): with one, the key in the body is the sender's credential."""
    return (settings or {}).get("routing_keys") or []


def check_key(routing_key: str, settings: dict | None) -> None:
    """Refuse a routing key outside the allow-list, comparing in constant time and naming no key."""
    allowed = allow_list(settings)
    if allowed and not any([hmac.compare_digest(routing_key.encode(), key.encode()) for key in allowed]):
        raise KeyNotAllowed("'routing_key' is not one this relay accepts (RELAY_PAGERDUTY_ROUTING_KEYS)")


def checked(event, settings: dict | None, schema=None) -> dict:
    """Return an event PagerDuty would take and the allow-list admits; raise ValidationError with PagerDuty's
    texts, or KeyNotAllowed."""
    problems = refusals(event) if schema is None else refusals(event, schema)
    if problems:
        raise ValidationError(problems)
    check_key(event["routing_key"], settings)
    return event


def checked_change(event, settings: dict | None = None) -> dict:
    """Return a change event PagerDuty would take and the allow-list admits, as checked() does."""
    return checked(event, settings, change_event_schema)


def labels_of(event: dict) -> dict[str, str]:
    """The event's fields as labels: custom_details' string values, the payload's texts, the routing key."""
    payload = event.get("payload") if event["event_action"] == "trigger" else None
    payload = payload or {}
    details = payload.get("custom_details") or {}
    labels = {name: value for name, value in details.items() if isinstance(value, str)}
    labels.update({name: payload[name] for name in PAYLOAD_LABELS if isinstance(payload.get(name), str)})
    labels[ROUTING_KEY_LABEL] = event["routing_key"]
    return labels


def to_alert(event: dict) -> Alert:
    """Map a checked event onto its alert, assigning a trigger without a dedup key one of its own."""
    dedup_key = event.get("dedup_key") or uuid.uuid4().hex  # PagerDuty's own keys are 32 hex digits too
    ignored = ("routing_key",) if event["event_action"] == "trigger" else ("routing_key", *TRIGGER_ONLY)
    passed = {name: value for name, value in event.items() if name not in ignored}
    return Alert(
        source=NAME,
        status=RESOLVED if event["event_action"] == "resolve" else FIRING,
        labels=labels_of(event),
        fingerprint=dedup_key,
        dedup_key=dedup_key,
        event={**passed, "dedup_key": dedup_key},
    )


def looks_like(payload, settings: dict | None = None) -> bool:
    """Tell whether a payload looks like an Events API event (v2 or v1); settings are not used."""
    return isinstance(payload, dict) and ("event_action" in payload or "service_key" in payload)


def to_alerts(payload, settings: dict | None = None) -> list[Alert]:
    """Check an Events API v2 event by PagerDuty's rules and the allow-list, and map it onto one alert."""
    return [to_alert(checked(payload, settings))]


def from_v1(body) -> dict:
    """Translate an Events API v1 event into the v2 event PagerDuty makes of it (anything but an object is left
    for the checks to refuse)."""
    if not isinstance(body, dict):
        return body
    event = {"routing_key": body.get("service_key"), "event_action": body.get("event_type")}
    if body.get("incident_key") is not None:
        event["dedup_key"] = body["incident_key"]
    if event["event_action"] != "trigger":
        return event
    payload = {"summary": body.get("description"), "severity": V1_SEVERITY,
               "source": body["client"] if isinstance(body.get("client"), str) and body["client"] else V1_SOURCE}
    if body.get("details") is not None:
        details = body["details"]
        payload["custom_details"] = details if isinstance(details, dict) else {"details": details}
    event["payload"] = payload
    event.update({name: body[name] for name in ("client", "client_url") if body.get(name) is not None})
    contexts = body.get("contexts") if isinstance(body.get("contexts"), list) else []
    links = [{"href": item.get("href"), "text": item.get("text", "")} for item in contexts
             if isinstance(item, dict) and item.get("type") == "link"]
    images = [{name: item[name] for name in ("src", "href", "alt") if name in item} for item in contexts
              if isinstance(item, dict) and item.get("type") == "image"]
    if links:
        event["links"] = links
    if images:
        event["images"] = images
    return event


def v1_texts(problems: list[str]) -> list[str]:
    """Name the fields of a translated v1 event's problems as the v1 sender wrote them."""
    by_v2 = {v2: v1 for v1, v2 in V1_FIELDS.items()}
    return [_renamed(problem, by_v2) for problem in problems]


def _renamed(problem: str, by_v2: dict) -> str:
    quoted = problem.split("'")
    if len(quoted) >= 3 and quoted[1] in by_v2:
        quoted[1] = by_v2[quoted[1]]
    return "'".join(quoted)
