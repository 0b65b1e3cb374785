"""The outbound PagerDuty Events API v2 event: its schema, and trimming to PagerDuty's limits.

Limits cite PagerDuty/developer-docs docs/events-API-v2/02-Trigger-Events.md and 01-Overview.md.
An event is trimmed to fit, never refused for being long: a truncated page beats a lost one.
"""
import copy
import functools
import json

import orjson
from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, pre_load, validate

from relay.timeutil import parse_iso8601

ACTIONS = ("trigger", "acknowledge", "resolve")
SEVERITIES = ("critical", "error", "warning", "info")
SUMMARY_MAX = 1024  # payload.summary: 1024 characters
DEDUP_KEY_MAX = 255  # dedup_key: 255 characters
EVENT_MAX_BYTES = 512 * 1024  # the whole event: under 512 KB
ELLIPSIS = "…"
TRIM_MARGIN = 64  # bytes kept free below the limit, for the ellipsis and JSON quoting
FIELD_MAX = 1024  # source, component, group, class: no documented limit; bounded so the event fits
TEXT_LIMITS = {"summary": SUMMARY_MAX, "source": FIELD_MAX, "component": FIELD_MAX, "group": FIELD_MAX,
               "class": FIELD_MAX}  # payload texts trimmed to these lengths rather than refused
TRIM_NOTE = "custom_details trimmed by relay: the event exceeded PagerDuty's 512 KB limit"


def truncate(text: str, limit: int) -> str:
    """Cut text to at most limit characters, marking the cut with an ellipsis."""
    if len(text) <= limit:
        return text
    return text[: limit - 1] + ELLIPSIS


def _iso8601(value):
    if parse_iso8601(value) is None:
        raise ValidationError("not an ISO 8601 timestamp")


def _string_keys(details):
    if not all(isinstance(key, str) for key in details):
        raise ValidationError("keys must be strings")


class RememberedUrl(fields.Url):
    """A URL field whose check remembers the URLs that passed it."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # Alerts repeat a rule's few links, and the check is a costly regular expression.
        self.validators[0] = functools.lru_cache(maxsize=1024)(self.validators[0])


class ImageSchema(Schema):
    """An image on the alert; PagerDuty shows https images only."""

    class Meta:
        unknown = EXCLUDE

    src = RememberedUrl(required=True, schemes={"https"}, require_tld=False)
    href = RememberedUrl(schemes={"http", "https"}, require_tld=False)
    alt = fields.Str()


class LinkSchema(Schema):
    """A link on the alert."""

    class Meta:
        unknown = EXCLUDE

    href = RememberedUrl(required=True, schemes={"http", "https"}, require_tld=False)
    text = fields.Str()


class PayloadSchema(Schema):
    """The trigger payload."""

    class Meta:
        unknown = EXCLUDE

    summary = fields.Str(required=True, validate=validate.Length(min=1))
    source = fields.Str(required=True, validate=validate.Length(min=1))
    severity = fields.Str(required=True, validate=validate.OneOf(SEVERITIES))
    timestamp = fields.Str(validate=_iso8601)
    component = fields.Str()
    group = fields.Str()
    class_ = fields.Str(data_key="class", attribute="class")
    custom_details = fields.Dict(validate=_string_keys)  # one check, where keys=Str() is a field per key

    @pre_load
    def truncate_texts(self, data, **kwargs):
        """Trim an over-long summary or text field instead of refusing it."""
        if not isinstance(data, dict):
            return data
        return {k: truncate(v, TEXT_LIMITS[k]) if k in TEXT_LIMITS and isinstance(v, str) else v
                for k, v in data.items()}


class EventSchema(Schema):
    """An Events API v2 event, validated and trimmed to what PagerDuty accepts."""

    class Meta:
        unknown = EXCLUDE

    routing_key = fields.Str(required=True, validate=validate.Length(min=1))
    event_action = fields.Str(required=True, validate=validate.OneOf(ACTIONS))
    dedup_key = fields.Str(validate=validate.Length(min=1, max=DEDUP_KEY_MAX))
    payload = fields.Nested(PayloadSchema)
    images = fields.List(fields.Nested(ImageSchema))
    links = fields.List(fields.Nested(LinkSchema))
    client = fields.Str()
    client_url = RememberedUrl(schemes={"http", "https"}, require_tld=False)

    @pre_load
    def keep_https_images(self, data, **kwargs):
        """Drop images PagerDuty would refuse (non-https) rather than the whole event."""
        if isinstance(data, dict) and isinstance(data.get("images"), list):
            images = [i for i in data["images"] if _is_https_image(i)]
            data = {**data, "images": images}
        return data

    @post_load
    def check_action_fields(self, data, **kwargs):
        """Require a payload on triggers and a dedup key on follow-ups."""
        if data["event_action"] == "trigger" and "payload" not in data:
            raise ValidationError("a trigger needs a payload", "payload")
        if data["event_action"] != "trigger" and not data.get("dedup_key"):
            raise ValidationError(f"{data['event_action']} needs a dedup_key", "dedup_key")
        if data["event_action"] != "trigger":
            data.pop("payload", None)  # PagerDuty reads payload on triggers only
        return fit_size(data)


def _is_https_image(image):
    return isinstance(image, dict) and str(image.get("src", "")).startswith("https://")


def encode(event) -> bytes:
    """Serialize an event exactly as it is sent: compact UTF-8 JSON (ASCII escapes would bloat non-Latin text),
    by orjson; the json module's same compact form for what orjson refuses (integers past 64 bits)."""
    try:
        return orjson.dumps(event, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()


def event_size(event) -> int:
    """Return the size in bytes of the event as sent."""
    return len(encode(event))


def _json_size(text: str) -> int:
    return len(encode(text))


def shorten(text: str, excess: int) -> str:
    """Cut text so its JSON form shrinks by at least `excess` bytes, marking the cut (escapes counted)."""
    target = _json_size(text) - excess
    low, high = 0, len(text)  # find the longest prefix that still fits, by bisection
    while low < high:
        middle = (low + high + 1) // 2
        if _json_size(text[:middle] + ELLIPSIS) <= target:
            low = middle
        else:
            high = middle - 1
    return text[:low] + ELLIPSIS


def _string_leaves(value, path=()):
    """Yield the path of every string inside nested objects and arrays."""
    if isinstance(value, str):
        yield path
    elif isinstance(value, (dict, list)):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            yield from _string_leaves(item, (*path, key))


def _at(value, path):
    for key in path:
        value = value[key]
    return value


def fit_size(event, limit=EVENT_MAX_BYTES):
    """Cut the longest strings in custom_details, wherever they nest, until the event is under the limit."""
    payload = event.get("payload") or {}
    if not payload.get("custom_details") or event_size(event) < limit:
        return event
    details = {**copy.deepcopy(payload["custom_details"]), "relay_note": TRIM_NOTE}
    event = {**event, "payload": {**payload, "custom_details": details}}
    for path in sorted(_string_leaves(details), key=lambda p: len(_at(details, p)), reverse=True):
        excess = event_size(event) - limit + TRIM_MARGIN
        if excess <= 0:
            break
        _at(details, path[:-1])[path[-1]] = shorten(_at(details, path), excess)
    if event_size(event) >= limit:  # what is left is not text (huge arrays of numbers), or other fields
        event["payload"]["custom_details"] = {"relay_note": TRIM_NOTE}
    return event


event_schema = EventSchema()


def load_event(data) -> dict:
    """Validate and trim an event; raise ValidationError naming each bad field."""
    return event_schema.load(data)
