"""Prometheus Alertmanager webhooks (version "4"): the payload schema and its mapping onto alerts."""
import functools
import re
from urllib.parse import urlsplit

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, validate

from relay.intake.alert import FIRING, RESOLVED, Alert, Link

NAME = "alertmanager"
VERSION = "4"

# Go's zero time.Time in JSON. A firing alert carries it as endsAt: alertmanager types/types.go Alerts()
# hides an end time that has not been reached yet.
ZERO_TIME_PREFIX = "0001-01-01T00:00:00"


NOT_A_STRING = fields.String.default_error_messages["invalid"]


class LabelMap(fields.Dict):
    """A map of label (or annotation) names to string values, checked in one pass: fields.Dict with String keys
    and values loads every entry as a field of its own, a third of the time an Alertmanager webhook takes to load."""

    def _deserialize(self, value, attr, data, **kwargs):
        if _plain_map(value):
            return dict(value)
        if not isinstance(value, dict):
            raise self.make_error("invalid")
        raise ValidationError({key: {"key" if not isinstance(key, str) else "value": [NOT_A_STRING]}
                               for key, item in value.items() if not (isinstance(key, str) and isinstance(item, str))})


def label_map(**kwargs) -> LabelMap:
    """Declare a map of label (or annotation) names to string values."""
    return LabelMap(**kwargs)


def optional_map(data_key: str | None = None) -> LabelMap:
    """Declare an optional label map; null (a Go nil map) loads as {}."""
    return label_map(data_key=data_key, load_default=dict, allow_none=True)


class AlertSchema(Schema):
    """One entry of alerts[]: alertmanager template/template.go Alert."""

    class Meta:
        unknown = EXCLUDE

    error_messages = {"type": "Each alert must be a JSON object."}

    status = fields.String(required=True, validate=validate.OneOf([FIRING, RESOLVED]))
    labels = label_map(required=True)
    annotations = optional_map()
    starts_at = fields.String(data_key="startsAt", load_default=None)
    ends_at = fields.String(data_key="endsAt", load_default=None)
    generator_url = fields.String(data_key="generatorURL", load_default="")
    fingerprint = fields.String(load_default=None)

    @post_load
    def normalize(self, data: dict, **kwargs) -> dict:
        """Load null maps as {} and Go's zero time as None."""
        data["annotations"] = data["annotations"] or {}
        data["starts_at"] = go_time(data["starts_at"])
        data["ends_at"] = go_time(data["ends_at"])
        return data


def plain_alert(entry) -> dict | None:
    """AlertSchema's answer for a plain, well-formed alert, in one pass where the schema loads a field at a time;
    None for anything else, which the schema then judges. tests/test_sources_alertmanager.py holds the two to
    the same answers."""
    if not (isinstance(entry, dict) and entry.get("status") in (FIRING, RESOLVED)
            and _plain_map(entry.get("labels"))
            and (entry.get("annotations") is None or _plain_map(entry["annotations"]))
            and all(isinstance(entry.get(key), (str, type(None))) for key in ("startsAt", "endsAt", "fingerprint"))
            and isinstance(entry.get("generatorURL", ""), str)):
        return None
    return {"status": entry["status"], "labels": dict(entry["labels"]),
            "annotations": dict(entry.get("annotations") or {}),
            "starts_at": go_time(entry.get("startsAt")), "ends_at": go_time(entry.get("endsAt")),
            "generator_url": entry.get("generatorURL", ""), "fingerprint": entry.get("fingerprint")}


def _plain_map(value) -> bool:
    """Tell whether value is a map of names to string values, as LabelMap loads it."""
    return isinstance(value, dict) and all(isinstance(key, str) and isinstance(item, str)
                                           for key, item in value.items())


class WebhookSchema(Schema):
    """The notification body: alertmanager notify/webhook/webhook.go Message."""

    class Meta:
        unknown = EXCLUDE  # 0.32 added notification_reason, 0.34 routeLabels; more will come

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


SCHEMA = WebhookSchema()
_NOTIFICATION_TEXTS = ("groupKey", "receiver", "externalURL")
_NOTIFICATION_MAPS = {"group_labels": "groupLabels", "common_labels": "commonLabels",
                      "common_annotations": "commonAnnotations"}


def plain_notification(payload) -> dict | None:
    """WebhookSchema's answer for a plain, well-formed notification, in one pass where the schema loads a field
    at a time; None for anything else, which the schema then judges. tests/test_sources_alertmanager.py holds
    the two to the same answers."""
    truncated = payload.get("truncatedAlerts", 0) if isinstance(payload, dict) else None
    if not (type(truncated) is int and truncated >= 0 and payload.get("version") == VERSION  # noqa: E721 - no bool
            and payload.get("status") in (FIRING, RESOLVED, None) and isinstance(payload.get("alerts"), list)
            and all(isinstance(payload.get(key), (str, type(None))) for key in _NOTIFICATION_TEXTS)
            and all(payload.get(key) is None or _plain_map(payload[key]) for key in _NOTIFICATION_MAPS.values())):
        return None
    alerts = [plain_alert(entry) for entry in payload["alerts"]]
    if None in alerts:
        return None
    maps = {name: dict(payload[key]) if payload.get(key) is not None else payload.get(key, {})
            for name, key in _NOTIFICATION_MAPS.items()}
    return {"version": VERSION, "group_key": payload.get("groupKey"), "truncated_alerts": truncated,
            "status": payload.get("status"), "receiver": payload.get("receiver"), **maps,
            "external_url": payload.get("externalURL"), "alerts": alerts}


def go_time(value: str | None) -> str | None:
    """Return an ISO 8601 time as sent, or None when it is missing or Go's zero time."""
    if not value or value.startswith(ZERO_TIME_PREFIX):
        return None
    return value


@functools.lru_cache(maxsize=256)  # every alert of a notification has its receiver, and receivers are few
def unquote_receiver(receiver: str | None) -> str | None:
    """Undo the regexp quoting of the receiver name: `web\\.hook` is receiver `web.hook`."""
    # alertmanager template/template.go Data() sets Receiver to regexp.QuoteMeta(recv); grafana/alerting
    # templates/template_data.go ExtendData copies it, so both senders need this.
    if not receiver:
        return None
    return re.sub(r"\\(.)", r"\1", receiver, flags=re.DOTALL)


def is_http_url(href: str | None) -> bool:
    """Tell whether href is an absolute http(s) URL (Prometheus may send a relative generatorURL)."""
    if not href:
        return False
    try:
        parts = urlsplit(href)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def http_links(*candidates: tuple[str | None, str]) -> list[Link]:
    """Keep the http(s) hrefs among (href, text) candidates as links, each href once, in order."""
    links, seen = [], set()
    for href, text in candidates:
        href = (href or "").strip()
        if is_http_url(href) and href not in seen:
            seen.add(href)
            links.append(Link(href=href, text=text))
    return links


def base_alert(source: str, data: dict, entry: dict, links: list[Link], details: dict) -> Alert:
    """Build the normalized alert from one loaded alert and its notification."""
    return Alert(
        source=source,
        status=entry["status"],
        labels=entry["labels"],
        annotations=entry["annotations"],
        starts_at=entry["starts_at"],
        ends_at=entry["ends_at"],
        fingerprint=entry["fingerprint"] or None,
        group_key=data["group_key"] or None,
        links=links,
        details=details,
        receiver=unquote_receiver(data["receiver"]),
        external_url=data["external_url"] or None,
    )


def to_alert(data: dict, entry: dict) -> Alert:
    """Map one alert of a loaded Alertmanager notification."""
    links = http_links(
        (entry["generator_url"], "Source"),
        (entry["annotations"].get("runbook_url"), "Runbook"),
    )
    # truncatedAlerts > 0 means max_alerts dropped alerts from this notification: worth telling the responder.
    details = {"truncatedAlerts": data["truncated_alerts"]} if data["truncated_alerts"] else {}
    return base_alert(NAME, data, entry, links, details)


def to_alerts(payload, settings: dict | None = None) -> list[Alert]:
    """Load an Alertmanager webhook payload and map each of its alerts; settings are not used."""
    data = plain_notification(payload)
    if data is None:
        data = SCHEMA.load(payload)
    return [to_alert(data, entry) for entry in data["alerts"]]
