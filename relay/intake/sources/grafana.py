"""Grafana-managed alerting webhooks (version "1"): the payload schema and its mapping onto alerts."""
import re

from marshmallow import fields, validate

from relay.intake.alert import SOURCE_LINK, TRUNCATED, Alert, http_links, notification_alert
from relay.intake.sources import alertmanager as am  # Grafana's webhook extends Alertmanager's

NAME = "grafana"
CLIENT = "Grafana"
VERSION = "1"
# The webhook contact point's "HTTP Method" option (grafana/alerting receivers/webhook/v1/config.go httpMethod).
METHODS = ("POST", "PUT")
# A contact point's "Test" button: grafana/alerting notify/testreceivers.go sends alertname TestAlert, instance
# Grafana (unless the user gives labels) under the group key "test-<fingerprint>-<unix time>".
TEST_LABELS = {"alertname": "TestAlert", "instance": "Grafana"}
TEST_GROUP_KEY = re.compile(r"test-[0-9a-f]{16}-[0-9]+")


class Number(fields.Field):
    """A JSON number, kept as sent; strings and booleans are refused (fields.Float would cast "1")."""

    default_error_messages = {"invalid": "Not a valid number."}

    def _deserialize(self, value, attr, data, **kwargs):
        """Return value when it is an int or float, not a bool."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.make_error("invalid")
        return value


class AlertSchema(am.AlertSchema):
    """One entry of alerts[]: grafana/alerting templates/template_data.go ExtendedAlert."""

    silence_url = fields.String(data_key="silenceURL", load_default="")
    dashboard_url = fields.String(data_key="dashboardURL", load_default="")
    panel_url = fields.String(data_key="panelURL", load_default="")
    # map[string]float64 in Go: null when the rule has no values annotation.
    values = fields.Dict(keys=fields.String(), values=Number(), load_default=None, allow_none=True)
    value_string = fields.String(data_key="valueString", load_default="")
    image_url = fields.String(data_key="imageURL", load_default="")
    org_id = fields.Integer(data_key="orgId", strict=True, load_default=None)
    rule_uid = fields.String(data_key="ruleUID", load_default=None)
    # What Grafana's alert enrichment added to this alert (grafana/alerting ExtendedAlert ExtraData): any JSON.
    enrichments = fields.Raw(load_default=None, allow_none=True)


class WebhookSchema(am.WebhookSchema):
    """The notification body: grafana/alerting receivers/webhook/v1 webhookMessage."""

    version = fields.String(
        required=True,
        validate=validate.Equal(VERSION, error='Must be "{other}" (Grafana webhook), got "{input}".'),
    )
    alerts = fields.List(fields.Nested(AlertSchema), required=True)
    org_id = fields.Integer(data_key="orgId", strict=True, load_default=None)
    title = fields.String(load_default=None)
    message = fields.String(load_default=None)
    state = fields.String(load_default=None)  # "alerting" or "ok", derived from status


SCHEMA = WebhookSchema()
BODY_SCHEMA = WebhookSchema  # what /openapi.json describes
SETTINGS_SCHEMA = None  # takes no settings


def details_of(data: dict, entry: dict) -> dict:
    """Collect the Grafana extras worth showing on the incident, leaving out empty ones."""
    extras = {
        "values": entry["values"],
        "valueString": entry["value_string"],
        "orgId": entry["org_id"] if entry["org_id"] is not None else data["org_id"],
        "ruleUID": entry["rule_uid"],
        TRUNCATED: data["truncated_alerts"],
        "enrichments": entry["enrichments"],
    }
    return {key: value for key, value in extras.items() if value not in (None, "", 0, {})}


def to_alert(data: dict, entry: dict) -> Alert:
    """Map one alert of a loaded Grafana notification."""
    links = http_links(
        (entry["generator_url"], SOURCE_LINK),
        (entry["annotations"].get("runbook_url"), "Runbook"),  # the runbook first: responders read it first
        (entry["dashboard_url"], "Dashboard"),
        (entry["panel_url"], "Panel"),
        (entry["silence_url"], "Silence"),
    )
    alert = notification_alert(NAME, data, entry, links, details_of(data, entry))
    alert.image_url = entry["image_url"] or None
    return alert


def is_test(alert: Alert) -> bool:
    """Tell whether an alert is a contact point's test notification."""
    if alert.group_key and TEST_GROUP_KEY.fullmatch(alert.group_key):
        return True
    return all(alert.labels.get(name) == value for name, value in TEST_LABELS.items())


alert_count = am.alert_count  # the same alerts array


def looks_like(payload, settings: dict | None = None) -> bool:
    """Tell whether a payload looks like a Grafana notification, by its version; settings are not used."""
    return am.notification_version(payload) == VERSION


def to_alerts(payload, settings: dict | None = None) -> list[Alert]:
    """Load a Grafana webhook payload and map each of its alerts; settings are not used."""
    data = SCHEMA.load(payload)
    return [to_alert(data, entry) for entry in data["alerts"]]
