"""Prometheus Alertmanager webhooks (version "4"): the payload schema and its mapping onto alerts."""
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from relay.intake.alert import FIRING, RESOLVED, SOURCE_LINK, TRUNCATED, Alert, http_links, notification_alert

NAME = "alertmanager"
CLIENT = "Prometheus Alertmanager"
VERSION = "4"
METHODS = ("POST",)  # webhook_config has no method option (alertmanager notify/webhook/config.go WebhookConfig)

# Go's zero time.Time in JSON. A firing alert carries it as endsAt: alertmanager types/types.go Alerts()
# hides an end time that has not been reached yet.
ZERO_TIME_PREFIX = "0001-01-01T00:00:00"


NOT_A_STRING = fields.String.default_error_messages["invalid"]


class LabelMap(fields.Dict):
    """A map of label (or annotation) names to string values, checked in one pass: fields.Dict with String keys
    and values would load every entry as a field of its own, for every label of every alert."""

    def _deserialize(self, value, attr, data, **kwargs):
        if _plain_map(value):
            return dict(value)
        if not isinstance(value, dict):
            raise self.make_error("invalid")
        raise ValidationError({key: {"key" if not isinstance(key, str) else "value": [NOT_A_STRING]}
                               for key, item in value.items() if not (isinstance(key, str) and isinstance(item, str))})


def _plain_map(value) -> bool:
    """Tell whether value is a map of names to string values."""
    return isinstance(value, dict) and all(isinstance(key, str) and isinstance(item, str)
                                           for key, item in value.items())


def label_map(**kwargs) -> LabelMap:
    """Declare a map of label (or annotation) names to string values."""
    return LabelMap(**kwargs)


def optional_map(data_key: str | None = None) -> LabelMap:
    """Declare an optional label map; null (a Go nil map) loads as {}."""
    return label_map(data_key=data_key, load_default=dict, allow_none=True, pre_load=[_nil_as_empty])


def _nil_as_empty(value):
    """Read a Go nil map (null) as an empty one."""
    return {} if value is None else value


def go_time(value: str | None) -> str | None:
    """Return an ISO 8601 time as sent, or None when it is missing or Go's zero time."""
    if not value or value.startswith(ZERO_TIME_PREFIX):
        return None
    return value


class AlertSchema(Schema):
    """One entry of alerts[]: alertmanager template/template.go Alert."""

    class Meta:
        unknown = EXCLUDE

    error_messages = {"type": "Each alert must be a JSON object."}

    status = fields.String(required=True, validate=validate.OneOf([FIRING, RESOLVED]))
    labels = label_map(required=True)
    annotations = optional_map()
    starts_at = fields.String(data_key="startsAt", load_default=None, post_load=[go_time])
    ends_at = fields.String(data_key="endsAt", load_default=None, post_load=[go_time])
    generator_url = fields.String(data_key="generatorURL", load_default="")
    fingerprint = fields.String(load_default=None)


class WebhookSchema(Schema):
    """The notification body: alertmanager notify/webhook/webhook.go Message."""

    class Meta:
        unknown = EXCLUDE  # fields later releases add

    error_messages = {"type": "Payload must be a JSON object."}

    version = fields.String(
        required=True,
        validate=validate.Equal(VERSION, error='Must be "{other}" (Alertmanager webhook), got "{input}".'),
    )
    group_key = fields.String(data_key="groupKey", load_default=None)
    truncated_alerts = fields.Integer(
        data_key="truncatedAlerts", strict=True, load_default=0, validate=validate.Range(min=0)
    )
    status = fields.String(load_default=None, validate=validate.OneOf([FIRING, RESOLVED]))
    receiver = fields.String(load_default=None)
    group_labels = optional_map("groupLabels")
    common_labels = optional_map("commonLabels")
    common_annotations = optional_map("commonAnnotations")
    external_url = fields.String(data_key="externalURL", load_default=None)
    alerts = fields.List(fields.Nested(AlertSchema), required=True)
    # 0.32: why this notification was sent ("first notification", "repeat interval", "alert resolved", …).
    notification_reason = fields.String(load_default=None, allow_none=True)
    # 0.34: the labels of the route that matched, as its configuration gave them.
    route_labels = optional_map("routeLabels")


SCHEMA = WebhookSchema()
BODY_SCHEMA = WebhookSchema  # what /openapi.json describes
SETTINGS_SCHEMA = None  # takes no settings


def to_alert(data: dict, entry: dict) -> Alert:
    """Map one alert of a loaded Alertmanager notification."""
    links = http_links(
        (entry["generator_url"], SOURCE_LINK),
        (entry["annotations"].get("runbook_url"), "Runbook"),
    )
    # truncatedAlerts > 0 means max_alerts dropped alerts from this notification: worth telling the responder.
    details = {TRUNCATED: data["truncated_alerts"]} if data["truncated_alerts"] else {}
    if data["notification_reason"]:
        details["notification_reason"] = data["notification_reason"]
    return notification_alert(NAME, data, entry, links, details)


def alert_count(payload) -> int:
    """Count the alerts of a payload not yet loaded (0 when it has no array of them: the schema says why)."""
    alerts = payload.get("alerts") if isinstance(payload, dict) else None
    return len(alerts) if isinstance(alerts, list) else 0


def looks_like(payload, settings: dict | None = None) -> bool:
    """Tell whether a payload looks like an Alertmanager notification, by its version; settings are not used."""
    return notification_version(payload) == VERSION


def notification_version(payload):
    """The version of a payload in Alertmanager's notification shape (Grafana's too), or None."""
    return payload.get("version") if isinstance(payload, dict) and isinstance(payload.get("alerts"), list) else None


def to_alerts(payload, settings: dict | None = None) -> list[Alert]:
    """Load an Alertmanager webhook payload and map each of its alerts; settings are not used."""
    data = SCHEMA.load(payload)
    return [to_alert(data, entry) for entry in data["alerts"]]
