"""A fourth alert source, for tests: one module, as every source is (see relay/intake/sources/__init__.py)."""
from marshmallow import EXCLUDE, Schema, fields

from relay.intake.alert import FIRING, Alert

NAME = "tiny"
CLIENT = "Tiny Monitor"


class WebhookSchema(Schema):
    """The body: a title and, optionally, the host."""

    class Meta:
        unknown = EXCLUDE

    title = fields.String(required=True)
    host = fields.String(load_default="")


class SettingsSchema(Schema):
    """Config's TINY_WEBHOOK: the severity every alert gets."""

    severity = fields.String(load_default="warning")


SCHEMA = WebhookSchema()
BODY_SCHEMA = WebhookSchema
SETTINGS_SCHEMA = SettingsSchema()


def to_alerts(payload, settings: dict | None = None) -> list[Alert]:
    """Map the body onto one firing alert."""
    data = SCHEMA.load(payload)
    severity = (settings or SETTINGS_SCHEMA.load({}))["severity"]
    return [Alert(source=NAME, status=FIRING, labels={"alertname": data["title"], "host": data["host"],
                                                      "severity": severity})]
