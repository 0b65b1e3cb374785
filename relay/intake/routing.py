"""Routes from config.py: loading and checking them, and choosing the routes an alert goes to."""
import os
from dataclasses import dataclass, field

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from relay.intake.alert import Alert
from relay.intake.matchers import Matcher, MatcherError, matches_all, parse_matchers
from relay.intake.render import TemplateConfigError, compile_macros, compile_template
from relay.pagerduty.event import ROUTING_KEY_LENGTH, SEVERITIES

DEDUP_ALERT = "alert"  # one PagerDuty alert per alert (default)
DEDUP_GROUP = "group"  # one per notification group: sha256(groupKey), as Alertmanager's and Grafana's own
TEMPLATED_FIELDS = ("summary", "source", "component", "group", "class", "client", "client_url")

# What a route renders when it sets nothing itself: enough for a person on call at 3 a.m.
DEFAULT_TEMPLATES = {
    "summary": (
        "{% set text = annotations.summary or annotations.description or annotations.message %}"
        '{{ [labels.alertname, text] | select | join(": ") or "Alert" }}'  # generic alerts have no alertname
        "{% set where = labels.instance or labels.pod or labels.host or labels.service or labels.job %}"
        "{% if where %} ({{ where }}){% endif %}"
    ),
    "source": "{{ labels.instance or labels.host or labels.pod or labels.service or labels.job"
              " or external_url or source }}",
    "component": "{{ labels.job or labels.service }}",
    "group": "{{ labels.cluster or labels.namespace or labels.env }}",
    "class": "{{ labels.alertname }}",
    "client": "{{ client }}",
    "client_url": "{{ external_url }}",
}
# The default templates as the macros of one template: one module per alert renders them all.
DEFAULTS = compile_macros(DEFAULT_TEMPLATES)


class ConfigError(ValueError):
    """A route that cannot work; the message names the route and the field."""


class RouteSchema(Schema):
    """One route as written in config.py."""

    class Meta:
        unknown = RAISE  # a misspelt option must fail at start-up, not route silently elsewhere

    name = fields.String(required=True, validate=validate.Length(min=1, max=128))
    matchers = fields.List(fields.String(), load_default=list)
    routing_key = fields.String(validate=validate.Length(min=1))
    routing_key_env = fields.String(validate=validate.Length(min=1))
    routing_key_template = fields.String(validate=validate.Length(min=1))
    severity_label = fields.String(load_default="severity")
    severity_map = fields.Dict(keys=fields.String(), values=fields.String(validate=validate.OneOf(SEVERITIES)),
                               load_default=dict)
    default_severity = fields.String(load_default="error", validate=validate.OneOf(SEVERITIES))
    dedup = fields.String(load_default=DEDUP_ALERT, validate=validate.Length(min=1))
    templates = fields.Dict(keys=fields.String(validate=validate.OneOf(TEMPLATED_FIELDS)),
                            values=fields.String(), load_default=dict)
    custom_details = fields.Dict(keys=fields.String(), values=fields.String(), allow_none=True, load_default=None)
    continue_ = fields.Boolean(data_key="continue", load_default=False)

    @validates_schema
    def one_routing_key(self, data, **kwargs):
        """Require exactly one way of finding the routing key."""
        given = [k for k in ("routing_key", "routing_key_env", "routing_key_template") if k in data]
        if len(given) != 1:
            raise ValidationError("give exactly one of routing_key, routing_key_env, routing_key_template",
                                  "routing_key")


route_schema = RouteSchema()


@dataclass
class Route:
    """A checked, compiled route."""

    name: str
    matchers: list[Matcher]
    routing_key: str | None  # fixed key (literal or from the environment), or None when templated
    routing_key_template: object | None
    severity_label: str
    severity_map: dict[str, str]
    default_severity: str
    dedup: str  # DEDUP_ALERT, DEDUP_GROUP, or "template"
    dedup_template: object | None
    templates: dict = field(default_factory=dict)  # field → compiled template
    custom_details: dict | None = None  # detail name → compiled template, None for the default details
    continue_: bool = False

    def matches(self, alert: Alert) -> bool:
        """Tell whether every matcher of the route holds for the alert's labels."""
        return matches_all(self.matchers, alert.labels)

    def severity(self, alert: Alert) -> str:
        """Map the alert's severity label onto a PagerDuty severity, falling back to the default."""
        raw = (alert.labels.get(self.severity_label) or "").strip().lower()
        mapped = self.severity_map.get(raw, raw)
        return mapped if mapped in SEVERITIES else self.default_severity


@dataclass
class Routing:
    """All routes in order, and the default route for alerts that match none."""

    routes: list[Route]
    default: Route | None

    def routes_for(self, alert: Alert) -> list[Route]:
        """Return the routes the alert goes to: matches in order until one without continue."""
        chosen = []
        for route in self.routes:
            if route.matches(alert):
                chosen.append(route)
                if not route.continue_:
                    break
        if not chosen and self.default:
            chosen.append(self.default)
        return chosen


def _problem(name, field_name, message):
    return ConfigError(f"{_label(name)}, field {field_name!r}: {message}")


def _label(name):
    """Name a route in errors: by its name, or by its position ("#2") when it has none."""
    return f"route {name!r}" if not str(name).startswith("#") else f"route {name}"


def _fixed_routing_key(spec, environ):
    if "routing_key" in spec:
        return _checked_key(spec["name"], "routing_key", "the key", spec["routing_key"])
    if "routing_key_env" in spec:
        value = environ.get(spec["routing_key_env"], "")
        if not value:
            raise _problem(spec["name"], "routing_key_env",
                           f"environment variable {spec['routing_key_env']} is not set")
        return _checked_key(spec["name"], "routing_key_env", f"the key in {spec['routing_key_env']}", value)
    return None


def _checked_key(name, field_name, what, key):
    """Refuse a key PagerDuty would refuse (with a 400, on the first real page): it must be ROUTING_KEY_LENGTH long.
    The error gives the key's length, never the key."""
    if len(key) != ROUTING_KEY_LENGTH:
        raise _problem(name, field_name, f"{what} has {len(key)} characters; a PagerDuty integration (routing) key "
                                         f"has {ROUTING_KEY_LENGTH}")
    return key


def _compile(name, field_name, text):
    try:
        return compile_template(text)
    except TemplateConfigError as exc:
        raise _problem(name, field_name, str(exc)) from None


def _compile_dedup(name, dedup):
    if dedup in (DEDUP_ALERT, DEDUP_GROUP):
        return dedup, None
    if "{{" not in dedup and "{%" not in dedup:
        raise _problem(name, "dedup", f"{dedup!r} is not 'alert', 'group' or a template")
    return "template", _compile(name, "dedup", dedup)


def load_route(raw, environ=os.environ, position="#?") -> Route:
    """Check one route from config and compile it; raise ConfigError naming the route and field."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{_label(position)}: must be a dict, not {type(raw).__name__}")
    name = raw.get("name") if isinstance(raw.get("name"), str) and raw.get("name") else position
    try:
        spec = route_schema.load(raw)
    except ValidationError as exc:
        field_name, messages = next(iter(exc.messages.items()))
        raise _problem(name, field_name, "; ".join(map(str, _flatten(messages)))) from None
    try:
        matchers = parse_matchers(spec["matchers"])
    except MatcherError as exc:
        raise _problem(name, "matchers", str(exc)) from None
    dedup, dedup_template = _compile_dedup(name, spec["dedup"])
    key_template = spec.get("routing_key_template")
    return Route(
        name=spec["name"],
        matchers=matchers,
        routing_key=_fixed_routing_key(spec, environ),
        routing_key_template=_compile(name, "routing_key_template", key_template) if key_template else None,
        severity_label=spec["severity_label"],
        severity_map={k.strip().lower(): v for k, v in spec["severity_map"].items()},
        default_severity=spec["default_severity"],
        dedup=dedup,
        dedup_template=dedup_template,
        templates={f: _compile(name, f"templates.{f}", t) for f, t in spec["templates"].items()},
        custom_details=None if spec["custom_details"] is None else {
            k: _compile(name, f"custom_details.{k}", t) for k, t in spec["custom_details"].items()},
        continue_=spec["continue_"],
    )


def _flatten(messages):
    if isinstance(messages, dict):
        return [f"{k}: {m}" for k, v in messages.items() for m in _flatten(v)]
    return messages if isinstance(messages, list) else [messages]


def load_routing(routes, default_route, environ=os.environ) -> Routing:
    """Load ROUTES and DEFAULT_ROUTE from config; raise ConfigError on the first problem."""
    if not isinstance(routes, (list, tuple)):
        raise ConfigError(f"ROUTES must be a list of dicts, not {type(routes).__name__}")
    loaded = [load_route(raw, environ, f"#{index}") for index, raw in enumerate(routes, 1)]
    if default_route and not isinstance(default_route, dict):
        raise ConfigError(f"DEFAULT_ROUTE: must be a dict, not {type(default_route).__name__}")
    default = load_route(default_route, environ, "DEFAULT_ROUTE") if default_route else None
    # The default counts too: route names are part of the per-alert dedup key, so a shared name merges incidents.
    names = [route.name for route in [*loaded, default] if route]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"route names must be unique: {', '.join(duplicates)} used more than once")
    return Routing(loaded, default)
