"""The outbound PagerDuty Events API v2 event: its schema, and fitting every field to PagerDuty's limits.

Limits cite PagerDuty/developer-docs docs/events-API-v2/02-Trigger-Events.md and 01-Overview.md.
An event is fitted, never refused for being long: a truncated page beats a lost one. Texts are cut with an
ellipsis; a URL is never cut (a cut URL is a broken link): an over-long one is dropped, and custom_details says so.
An event its sender made itself (the drop-in endpoint) is first held to PagerDuty's own rules (refusals): what
PagerDuty would refuse is refused, in PagerDuty's words, before it is stored.
"""
import copy
import functools
import json

import orjson
from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, pre_load, validate, validates_schema

from relay.timeutil import parse_iso8601

ACTIONS = ("trigger", "acknowledge", "resolve")
SEVERITIES = ("critical", "error", "warning", "info")
ROUTING_KEY_LENGTH = 32  # an integration key, as PagerDuty issues them (Events API v2: 32 characters)
SUMMARY_MAX = 1024  # payload.summary: 1024 characters
DEDUP_KEY_MAX = 255  # dedup_key: 255 characters
# The whole event: "under 512 KB" (01-Overview.md), read the safe way, as Alertmanager's notifier does
# (notify/pagerduty/pagerduty.go maxEventSize = 512000): at most this many bytes of compact JSON.
EVENT_MAX_BYTES = 512_000
# What a sender's own event may weigh before the drop-in endpoint refuses it as PagerDuty would: "512 KB" read the
# generous way (KiB). Between the two the event is fitted to EVENT_MAX_BYTES, not refused.
EVENT_REFUSED_BYTES = 512 * 1024
ELLIPSIS = "…"
TRIM_MARGIN = 64  # bytes kept free below the limit, for the ellipsis and JSON quoting
# source, component, group, class, client, links[].text, images[].alt: no documented limit; bounded so the
# event fits.
FIELD_MAX = 1024
# links[].href, images[].src and href, client_url: no documented limit. RFC 9110 section 4.1 asks every HTTP
# recipient to support URIs of at least 8,000 octets: a longer one may not open anywhere, so it is dropped.
URL_MAX = 8000
TEXT_LIMITS = {"summary": SUMMARY_MAX, "source": FIELD_MAX, "component": FIELD_MAX, "group": FIELD_MAX,
               "class": FIELD_MAX}  # payload texts trimmed to these lengths rather than refused
TRIM_NOTE = "custom_details trimmed by relay: the event exceeded PagerDuty's 512 KB limit"
LINKS_NOTE = "links and images dropped by relay: the event still exceeded PagerDuty's 512 KB limit"
DROPPED_KEY = "relay_dropped"  # custom_details entry listing what fit_fields dropped


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
    def fit_fields(self, data, **kwargs):
        """Drop the images PagerDuty would refuse (non-https) and the URLs over URL_MAX rather than the whole
        event, cut the texts over FIELD_MAX, and say in custom_details which URLs were dropped."""
        if not isinstance(data, dict):
            return data
        data, dropped = {**data}, []
        if isinstance(data.get("images"), list):
            data["images"] = _fitted_images(data["images"], dropped)
        if isinstance(data.get("links"), list):
            data["links"] = _fitted_links(data["links"], dropped)
        if url_too_long(data.get("client_url")):
            dropped.append(_dropped("client_url", data.pop("client_url")))
        if isinstance(data.get("client"), str):
            data["client"] = truncate(data["client"], FIELD_MAX)
        return _with_dropped(data, dropped) if dropped else data

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def check_action_fields(self, data, original, **kwargs):
        """Require a payload on triggers and a dedup key on follow-ups, whatever else is wrong (PagerDuty names
        every problem at once)."""
        action = original.get("event_action") if isinstance(original, dict) else None
        if action == "trigger" and original.get("payload") is None:
            raise ValidationError("Is required for trigger events.", "payload")
        if action in ACTIONS and action != "trigger" and not original.get("dedup_key"):
            raise ValidationError(f"Is required for {action} events.", "dedup_key")

    @post_load
    def trigger_fields(self, data, **kwargs):
        """Keep the payload on triggers only, and fit the event to PagerDuty's size."""
        if data["event_action"] != "trigger":
            data.pop("payload", None)  # PagerDuty reads payload on triggers only
        return fit_size(data)


def _is_https_image(image):
    return isinstance(image, dict) and str(image.get("src", "")).startswith("https://")


def url_too_long(url) -> bool:
    """Tell whether url is a string over URL_MAX, which the schema drops rather than sends."""
    return isinstance(url, str) and len(url) > URL_MAX


def _dropped(where: str, url: str) -> str:
    """Say what was dropped, without the URL itself: it is the part that was too long."""
    return f"{where}: a URL of {len(url)} characters, over the {URL_MAX} sent to PagerDuty"


def _cut_text(item: dict, name: str) -> dict:
    if isinstance(item.get(name), str) and len(item[name]) > FIELD_MAX:
        return {**item, name: truncate(item[name], FIELD_MAX)}
    return item


def _fitted_images(images: list, dropped: list) -> list:
    """Keep the https images whose src fits; drop an over-long href alone, cut an over-long alt."""
    kept = []
    for index, image in enumerate(images):
        if not _is_https_image(image):
            continue
        if url_too_long(image["src"]):
            dropped.append(_dropped(f"images[{index}].src", image["src"]))
            continue
        if url_too_long(image.get("href")):
            dropped.append(_dropped(f"images[{index}].href", image["href"]))
            image = {k: v for k, v in image.items() if k != "href"}
        kept.append(_cut_text(image, "alt"))
    return kept


def _fitted_links(links: list, dropped: list) -> list:
    """Drop the links whose href is over-long, cut an over-long text; anything else is left to validation."""
    kept = []
    for index, link in enumerate(links):
        if isinstance(link, dict) and url_too_long(link.get("href")):
            text = link.get("text")
            named = f" ({truncate(text, 80)})" if isinstance(text, str) and text else ""
            dropped.append(_dropped(f"links[{index}]{named}", link["href"]))
            continue
        kept.append(_cut_text(link, "text") if isinstance(link, dict) else link)
    return kept


def _with_dropped(data: dict, dropped: list) -> dict:
    """Note what was dropped in the trigger's custom_details, where the responder reads it."""
    payload = data.get("payload")
    if not isinstance(payload, dict) or not isinstance(payload.get("custom_details", {}), dict):
        return data
    details = {**payload.get("custom_details", {}), DROPPED_KEY: dropped}
    return {**data, "payload": {**payload, "custom_details": details}}


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


def _string_leaves(value):
    """Yield (container, key, text) for every string inside nested objects and arrays."""
    stack = [value]
    while stack:
        container = stack.pop()
        for key, item in container.items() if isinstance(container, dict) else enumerate(container):
            if isinstance(item, str):
                yield container, key, item
            elif isinstance(item, (dict, list)):
                stack.append(item)


def cut_longest(details: dict, excess: int) -> None:
    """Shorten the longest strings in details, in place, until their JSON is `excess` bytes smaller or none is
    left to cut. Each string is measured once and the whole never again, so the cost grows with the size of
    details, not with its size times its number of strings."""
    for container, key, text in sorted(_string_leaves(details), key=lambda leaf: len(leaf[2]), reverse=True):
        if excess <= 0:
            return
        cut = shorten(text, excess)
        saved = _json_size(text) - _json_size(cut)
        if saved > 0:  # "…" is longer than a string of one or two characters
            container[key] = cut
            excess -= saved


def fit_size(event, limit=EVENT_MAX_BYTES):
    """Bring the event within limit bytes: cut the longest strings in custom_details, wherever they nest; if that
    is not enough, put a note in place of custom_details; if still not, drop links and images."""
    if event_size(event) <= limit:
        return event
    payload = event.get("payload")
    if payload and payload.get("custom_details"):
        details = copy.deepcopy(payload["custom_details"])
        event = {**event, "payload": {**payload, "custom_details": {**details, "relay_note": TRIM_NOTE}}}
        cut_longest(details, event_size(event) - limit + TRIM_MARGIN)  # details, not the note: it stays whole
        event["payload"]["custom_details"] = {**details, "relay_note": TRIM_NOTE}
        if event_size(event) > limit:  # what is left is not text (huge arrays of numbers, long names)
            event["payload"]["custom_details"] = {"relay_note": TRIM_NOTE}
    if event_size(event) > limit:  # only links and images are left unbounded in number
        event = {k: v for k, v in event.items() if k not in ("links", "images")}
        if "payload" in event:
            event["payload"] = {**event["payload"], "custom_details": {"relay_note": TRIM_NOTE,
                                                                       DROPPED_KEY: [LINKS_NOTE]}}
    return event


event_schema = EventSchema()


def load_event(data) -> dict:
    """Validate and trim an event; raise ValidationError naming each bad field."""
    return event_schema.load(data)


# What PagerDuty refuses of an event sent to it as is (the drop-in endpoint answers with it), in PagerDuty's own
# 400 shape: one "'<field>' <problem>" text per problem (01-Overview.md, api-schema openapiv3.json).
MISSING = "is missing or blank"
_PAGERDUTY_TEXTS = {
    "Missing data for required field.": MISSING, "Shorter than minimum length 1.": MISSING,
    "Field may not be null.": MISSING, "Not a valid string.": "must be a string",
    "Invalid input type.": "must be an object", "Not a valid mapping type.": "must be an object",
    "Not a valid list.": "must be an array", "Not a valid URL.": "must be an http(s) URL",
}
FOLLOW_UPS = ("acknowledge", "resolve")
TRIGGER_ONLY = ("payload", "images", "links")  # what PagerDuty ignores on a follow-up (Alertmanager sends a payload)
BLANK_CHECKED = (("routing_key",), ("dedup_key",), ("payload", "summary"), ("payload", "source"))


class ChangePayloadSchema(Schema):
    """A change event's payload (03-Change-Events.md): a summary, and optionally where and when."""

    class Meta:
        unknown = EXCLUDE

    summary = fields.Str(required=True, validate=validate.Length(min=1))
    source = fields.Str()
    timestamp = fields.Str(validate=_iso8601)
    custom_details = fields.Dict(validate=_string_keys)


class ChangeEventSchema(Schema):
    """A change event (a deploy, a configuration change): never opens an incident, has no dedup key."""

    class Meta:
        unknown = EXCLUDE

    routing_key = fields.Str(required=True, validate=validate.Length(min=1))
    payload = fields.Nested(ChangePayloadSchema, required=True)
    links = fields.List(fields.Nested(LinkSchema))


change_event_schema = ChangeEventSchema()


def refusals(event, schema: Schema = event_schema) -> list[str]:
    """Say what PagerDuty would refuse in an event (or, by change_event_schema, a change event) sent as is (empty
    when it would take it): the schema's rules, and the limits the schema fits rather than refuses (key length,
    summary length, https images, 512 KB)."""
    if not isinstance(event, dict):
        return ["Event must be a JSON object"]
    if event.get("event_action") in FOLLOW_UPS:
        event = {name: value for name, value in event.items() if name not in TRIGGER_ONLY}
    try:
        schema.load(event)
        errors = []
    except ValidationError as exc:
        errors = [f"'{path}' {_PAGERDUTY_TEXTS.get(text, text[:1].lower() + text[1:].rstrip('.'))}"
                  for path, text in _flat(exc.messages)]
    return errors + [problem for problem in _over_limits(event) if problem.split("'")[1] not in _paths(errors)]


def _flat(messages, path: str = ""):
    """Yield (field path, message) for marshmallow's nested messages, as PagerDuty names fields: a.b, a[0].b."""
    if isinstance(messages, dict):
        for key, value in messages.items():
            where = path if key == "_schema" else f"{path}[{key}]" if isinstance(key, int) else \
                f"{path}.{key}" if path else str(key)
            yield from _flat(value, where or "event")
    else:
        for text in messages if isinstance(messages, list) else [messages]:
            yield path, str(text)


def _paths(errors: list[str]) -> set[str]:
    return {error.split("'")[1] for error in errors if error.count("'") >= 2}


def _over_limits(event: dict) -> list[str]:
    """The problems PagerDuty refuses that the schema, which fits events, lets through."""
    problems = []
    for path in BLANK_CHECKED:
        value = event.get(path[0])
        value = value.get(path[1]) if len(path) > 1 and isinstance(value, dict) else value if len(path) == 1 else None
        if isinstance(value, str) and not value.strip():
            problems.append(f"'{'.'.join(path)}' {MISSING}")
    key = event.get("routing_key")
    if isinstance(key, str) and key.strip() and len(key) != ROUTING_KEY_LENGTH:
        problems.append(f"'routing_key' must be {ROUTING_KEY_LENGTH} characters long (got {len(key)})")
    if event.get("event_action", "trigger") == "trigger":  # payload and images count on triggers (and changes)
        summary = event.get("payload", {}).get("summary") if isinstance(event.get("payload"), dict) else None
        if isinstance(summary, str) and len(summary) > SUMMARY_MAX:
            problems.append(f"'payload.summary' must be at most {SUMMARY_MAX} characters (got {len(summary)})")
        images = event.get("images") if isinstance(event.get("images"), list) else []
        problems += [f"'images[{index}].src' must be an https URL" for index, image in enumerate(images)
                     if not _is_https_image(image)]
    size = event_size(event)
    if size >= EVENT_REFUSED_BYTES:
        problems.append(f"'event' must be smaller than 512 KB ({EVENT_REFUSED_BYTES} bytes of JSON; got {size})")
    return problems
