"""Generic JSON webhooks: any object or array of objects, read through configurable dotted paths."""
import json

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, pre_load, validate, validates_schema

from relay.intake.alert import FIRING, RESOLVED, Alert

NAME = "generic"
CLIENT = "relay"  # any JSON sender: the event names the relay, the one client known
METHODS = ("POST", "PUT")  # any tool: some offer PUT, a few only PUT

# Each path setting is a dotted path ("a.b.0.c") or a list of them, tried in order; None turns it off.
DEFAULT_SETTINGS = {
    "summary": ["summary", "title", "message"],
    "status": ["status", "state"],
    "severity": ["severity", "level"],
    "dedup_key": ["dedup_key", "fingerprint"],
    "labels": "labels",
    "details": None,  # None: every field the other paths did not take
    "firing_values": [
        "firing", "alerting", "alert", "triggered", "trigger", "open", "problem", "active", "down",
        "critical", "error", "warning",
    ],
    "resolved_values": ["resolved", "resolve", "ok", "closed", "close", "recovered", "normal", "up", "inactive"],
}
PATH_SETTINGS = ("summary", "status", "severity", "dedup_key", "labels", "details")


class Paths(fields.Field):
    """A dotted path or a list of them, loaded as a list (None loads as [])."""

    default_error_messages = {"invalid": "Must be a dotted path or a list of dotted paths."}

    def _deserialize(self, value, attr, data, **kwargs):
        """Return the paths as a list of non-empty strings."""
        paths = [value] if isinstance(value, str) else value
        if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
            raise self.make_error("invalid")
        return paths


class SettingsSchema(Schema):
    """The generic source's settings, as given in config (GENERIC_WEBHOOK, merged over DEFAULT_SETTINGS)."""

    class Meta:
        unknown = RAISE  # a misspelt setting must fail at startup, not silently do nothing

    summary = Paths(allow_none=True)
    status = Paths(allow_none=True)
    severity = Paths(allow_none=True)
    dedup_key = Paths(allow_none=True)
    labels = Paths(allow_none=True)
    details = Paths(allow_none=True)
    firing_values = fields.List(fields.String(), validate=validate.Length(min=1))
    resolved_values = fields.List(fields.String(), validate=validate.Length(min=1))

    @pre_load
    def merge_defaults(self, data, **kwargs):
        """Fill what config leaves out from DEFAULT_SETTINGS."""
        return {**DEFAULT_SETTINGS, **data} if isinstance(data, dict) else data

    @validates_schema
    def check_values_disjoint(self, data: dict, **kwargs) -> None:
        """Refuse a status word listed as both firing and resolved."""
        both = {v.lower() for v in data["firing_values"]} & {v.lower() for v in data["resolved_values"]}
        if both:
            raise ValidationError(f"Listed as firing and resolved: {', '.join(sorted(both))}.", "resolved_values")

    @post_load
    def normalize(self, data: dict, **kwargs) -> dict:
        """Turn disabled paths into [] and status words into lower-case sets."""
        for key in PATH_SETTINGS:
            data[key] = data[key] or []
        data["firing_values"] = {v.strip().lower() for v in data["firing_values"]}
        data["resolved_values"] = {v.strip().lower() for v in data["resolved_values"]}
        return data


SETTINGS_SCHEMA = SettingsSchema()
DEFAULTS = SETTINGS_SCHEMA.load({})
# Any object, or an array of objects: the paths above decide what is read.
BODY_SCHEMA = {"oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}}]}


def json_type(value) -> str:
    """Name the JSON type of value, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def text(value) -> str:
    """Render a JSON value as label text: strings as is, true/false, numbers, compact JSON otherwise."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    return str(value)


def resolve(item, path: str):
    """Follow a dotted path through objects and array indexes; None when it leads nowhere."""
    node = item
    for part in path.split("."):
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def find(item: dict, paths: list[str]) -> tuple[str | None, object]:
    """Return the first path that leads to a non-null value, and the value."""
    for path in paths:
        value = resolve(item, path)
        if value is not None:
            return path, value
    return None, None


def status_of(raw, settings: dict) -> str:
    """Map a status word onto FIRING or RESOLVED; a missing status means firing."""
    if raw is None:
        return FIRING
    word = text(raw).strip().lower()
    if word in settings["firing_values"]:
        return FIRING
    if word in settings["resolved_values"]:
        return RESOLVED
    raise ValidationError(
        f"Unknown status {text(raw)!r}: expected one of {', '.join(sorted(settings['firing_values']))}"
        f" (firing) or {', '.join(sorted(settings['resolved_values']))} (resolved)."
    )


def labels_of(raw) -> dict[str, str]:
    """Flatten a labels object into names to strings, dropping nulls."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValidationError(f"Labels must be an object of names to values, not {json_type(raw)}.")
    return {str(name): text(value) for name, value in raw.items() if value is not None}


def to_alert(item, settings: dict) -> Alert:
    """Map one JSON object onto an alert; every error names the path it comes from."""
    if not isinstance(item, dict):
        raise ValidationError(f"Must be a JSON object, not {json_type(item)}.")
    errors, taken = {}, set()

    def take(key: str):
        """Find the value for a path setting and remember which top-level field it consumed."""
        path, value = find(item, settings[key])
        if path is not None and "." not in path:
            taken.add(path)
        return path, value

    status_path, raw_status = take("status")
    try:
        status = status_of(raw_status, settings)
    except ValidationError as err:
        errors[status_path] = err.messages
    labels_path, raw_labels = take("labels")
    try:
        labels = labels_of(raw_labels)
    except ValidationError as err:
        errors[labels_path] = err.messages
    if errors:
        raise ValidationError(errors)

    _, summary = take("summary")
    _, severity = take("severity")
    _, dedup_key = take("dedup_key")
    details_path, details = take("details")
    sender_key = text(dedup_key) if dedup_key not in (None, "") else None
    # Without labels of its own an alert is told apart by its summary; not by its severity, which a resolve seldom
    # repeats.
    identity = None if labels or summary is None else text(summary).strip() or None
    if not (labels or sender_key or identity):
        raise ValidationError(unidentified(settings))
    derived = ()
    if severity is not None and "severity" not in labels:
        labels["severity"], derived = text(severity), ("severity",)
    if details_path is None:
        details = {key: value for key, value in item.items() if key not in taken}
    elif not isinstance(details, dict):
        details = {details_path: details}
    return Alert(
        source=NAME,
        status=status,
        labels=labels,
        annotations={"summary": text(summary)} if summary is not None else {},
        fingerprint=sender_key,  # the sender's own id for the alert is its stable identity too
        dedup_key=sender_key,
        details=details,
        identity=identity,
        derived_labels=derived,
    )


def unidentified(settings: dict) -> str:
    """Say that nothing tells an alert apart, and where the settings had it looked."""
    looked = [f"{what} (at {', '.join(settings[key]) or 'no path: GENERIC_WEBHOOK turns it off'})"
              for what, key in (("labels", "labels"), ("a dedup key", "dedup_key"), ("a summary", "summary"))]
    return (f"Nothing tells this alert apart from others: send {looked[0]}, {looked[1]} or {looked[2]}; "
            "GENERIC_WEBHOOK sets where these are read.")


def alert_count(payload) -> int:
    """Count the alerts of a payload not yet loaded: one per object."""
    return len(payload) if isinstance(payload, list) else 1


def looks_like(payload, settings: dict | None = None) -> bool:
    """Tell whether a payload looks meant for this source: its first object is no notification of alerts and
    maps onto an alert by settings (DEFAULTS when None)."""
    item = payload[0] if isinstance(payload, list) and payload else payload
    if not isinstance(item, dict) or "alerts" in item:
        return False
    try:
        to_alert(item, settings or DEFAULTS)
    except ValidationError:
        return False
    return True


def to_alerts(payload, settings: dict | None = None) -> list[Alert]:
    """Map a JSON object, or an array of objects, onto one alert each, by settings SETTINGS_SCHEMA loaded
    (DEFAULTS when None)."""
    conf = settings or DEFAULTS
    if isinstance(payload, dict):
        return [to_alert(payload, conf)]
    if not isinstance(payload, list):
        raise ValidationError(
            {"_schema": [f"Payload must be a JSON object or an array of objects, not {json_type(payload)}."]}
        )
    alerts, errors = [], {}
    for index, item in enumerate(payload):
        try:
            alerts.append(to_alert(item, conf))
        except ValidationError as err:
            errors[index] = err.messages
    if errors:
        raise ValidationError(errors)
    return alerts
