"""Routes from config.py: loading and checking them, and choosing the routes an alert goes to."""
import os
from dataclasses import dataclass, field
from functools import cached_property

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from relay.intake.alert import ROUTING_KEY_LABEL, Alert, datasource_state
from relay.intake.matchers import Matcher, MatcherError, matches_all, parse_matchers
from relay.intake.render import TemplateConfigError, compile_template
from relay.pagerduty.event import ROUTING_KEY_LENGTH, SEVERITIES
from relay.timeutil import parse_seconds

DEDUP_ALERT = "alert"  # one PagerDuty alert per alert (default)
DEDUP_GROUP = "group"  # one per notification group: sha256(groupKey), as Alertmanager's and Grafana's own
TEMPLATED_FIELDS = ("summary", "source", "component", "group", "class", "client", "client_url")

# The built-in severity vocabulary, the one table of it: the words senders put in a severity or priority label, by
# the PagerDuty severity each becomes (matched trimmed and case-insensitive). P1-P5 follow Opsgenie's and
# PagerDuty's incident priorities; PagerDuty's dynamic notifications page at high urgency for critical and error,
# so the words that mean "wake someone" map there and the rest to warning and info.
SEVERITY_WORDS = {
    "critical": ("critical", "crit", "p1", "sev1", "sev-1", "page", "fatal", "emergency", "emerg", "disaster"),
    "error": ("error", "err", "p2", "sev2", "sev-2", "high", "severe", "major"),
    "warning": ("warning", "warn", "p3", "sev3", "sev-3", "medium", "moderate", "average", "minor"),
    "info": ("info", "information", "informational", "p4", "p5", "sev4", "sev-4", "sev5", "sev-5", "low", "none",
             "notice", "debug"),
}
BUILTIN_SEVERITIES = {word: severity for severity, words in SEVERITY_WORDS.items() for word in words}
PAGERDUTY_SEVERITIES = {severity: severity for severity in SEVERITIES}  # pass through on every route

PROXY = "proxy"  # the route of a drop-in event no route takes: to the routing key its sender named

TESTS_SEND = "send"  # a sender's test notification pages at info and is resolved after test_resolve_after_seconds
TESTS_DROP = "drop"  # it is not sent at all
TEST_RESOLVE_AFTER_SECONDS = 300

# What the reconciler (relay/delivery/reconcile.py) does with an open alert its source still fires but silences or
# inhibits ("muted"), or no longer has ("gone").
RECONCILE_RESOLVE = "resolve"
RECONCILE_ACKNOWLEDGE = "acknowledge"
RECONCILE_KEEP = "keep"
RECONCILE_POLICIES = (RECONCILE_RESOLVE, RECONCILE_ACKNOWLEDGE, RECONCILE_KEEP)


class ConfigError(ValueError):
    """A route that cannot work; the message names the route and the field."""


class LabelNames(fields.Field):
    """A label name or a list of them, loaded as a tuple of names tried in order."""

    default_error_messages = {"invalid": "Must be a label name or a list of label names."}

    def _deserialize(self, value, attr, data, **kwargs):
        """Return the names as a non-empty tuple of non-empty strings."""
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise self.make_error("invalid")
        return tuple(names)


class Duration(fields.Field):
    """A duration as people write it (30s, 5m, 1h) or a number of seconds, loaded as seconds above zero."""

    def _deserialize(self, value, attr, data, **kwargs):
        """Return the duration in seconds; refuse anything else, and zero."""
        try:
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise ValueError
            seconds = parse_seconds(str(value))
        except ValueError:
            raise ValidationError(f"{value!r} is not a duration such as 30s, 5m or 1h") from None
        if seconds <= 0:
            raise ValidationError("must be longer than 0s")
        return seconds


@dataclass(frozen=True)
class Storm:
    """A route's storm valve: past max_triggers new alerts within per_seconds, further new alerts are held and
    one summary incident stands for them, counting them by alertname and by the count_by label."""

    max_triggers: int
    per_seconds: float
    count_by: str | None = None


class StormSchema(Schema):
    """A route's `storm` option."""

    class Meta:
        unknown = RAISE

    max_triggers = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
    per = Duration(load_default=60.0)  # seconds: a default is not deserialized
    count_by = fields.String(validate=validate.Length(min=1, max=255))


class HeartbeatOptionSchema(Schema):
    """A route's `heartbeat` option: {"within": "5m", "per": ["cluster"], "severity": "critical"}."""

    class Meta:
        unknown = RAISE

    within = Duration(required=True)
    per = fields.List(fields.String(validate=validate.Length(min=1)), load_default=list)
    severity = fields.String(load_default="critical", validate=validate.OneOf(SEVERITIES))


class RouteSchema(Schema):
    """One route as written in config.py."""

    class Meta:
        unknown = RAISE  # a misspelt option must fail at start-up, not route silently elsewhere

    name = fields.String(required=True, validate=validate.Length(min=1, max=128))
    matchers = fields.List(fields.String(), load_default=list)
    routing_key = fields.String(validate=validate.Length(min=1))
    routing_key_env = fields.String(validate=validate.Length(min=1))
    routing_key_template = fields.String(validate=validate.Length(min=1))
    severity_label = LabelNames(load_default=("severity", "priority"))
    severity_map = fields.Dict(keys=fields.String(), values=fields.String(validate=validate.OneOf(SEVERITIES)),
                               load_default=dict)
    builtin_severities = fields.Boolean(load_default=True)
    default_severity = fields.String(load_default="error", validate=validate.OneOf(SEVERITIES))
    no_data_severity = fields.String(load_default="warning", allow_none=True, validate=validate.OneOf(SEVERITIES))
    dedup = fields.String(load_default=DEDUP_ALERT, validate=validate.Length(min=1))
    templates = fields.Dict(keys=fields.String(validate=validate.OneOf(TEMPLATED_FIELDS)),
                            values=fields.String(), load_default=dict)
    custom_details = fields.Dict(keys=fields.String(), values=fields.String(), allow_none=True, load_default=None)
    continue_ = fields.Boolean(data_key="continue", load_default=False)
    test_notifications = fields.String(load_default=TESTS_SEND, validate=validate.OneOf([TESTS_SEND, TESTS_DROP]))
    test_resolve_after_seconds = fields.Integer(load_default=TEST_RESOLVE_AFTER_SECONDS, strict=True,
                                                validate=validate.Range(min=0, max=86400))
    send_flapping = fields.Boolean(load_default=False)
    storm = fields.Nested(StormSchema, allow_none=True, load_default=None)
    on_muted = fields.String(load_default=RECONCILE_KEEP, validate=validate.OneOf(RECONCILE_POLICIES))
    on_gone = fields.String(load_default=RECONCILE_RESOLVE, validate=validate.OneOf(RECONCILE_POLICIES))
    heartbeat = fields.Nested(HeartbeatOptionSchema, load_default=None)

    @validates_schema
    def one_routing_key(self, data, **kwargs):
        """Require exactly one way of finding the routing key."""
        given = [k for k in ("routing_key", "routing_key_env", "routing_key_template") if k in data]
        if len(given) != 1:
            raise ValidationError("give exactly one of routing_key, routing_key_env, routing_key_template",
                                  "routing_key")


route_schema = RouteSchema()


@dataclass(frozen=True)
class Watchdog:
    """A route's heartbeat option: its alerts are heartbeats, one per sender (or per label set) within `within`
    seconds, and only their absence pages (relay/delivery/heartbeats.py)."""

    within: float
    per: tuple[str, ...] = ()  # label names that tell heartbeats apart; none: one per sender (its externalURL)
    severity: str = "critical"


@dataclass
class Route:
    """A checked, compiled route."""

    name: str
    matchers: list[Matcher]
    routing_key: str | None  # fixed key (literal or from the environment), or None when templated
    routing_key_template: object | None
    severity_labels: tuple[str, ...]  # read in order: the first the alert has gives its severity word
    severity_map: dict[str, str]
    default_severity: str
    dedup: str  # DEDUP_ALERT, DEDUP_GROUP, or "template"
    dedup_template: object | None
    templates: dict = field(default_factory=dict)  # field → compiled template
    custom_details: dict | None = None  # detail name → compiled template, None for the default details
    continue_: bool = False
    send_flapping: bool = False  # send a trigger and its resolve that are both still unsent, instead of neither
    builtin_severities: bool = True
    no_data_severity: str | None = "warning"  # for Grafana's DatasourceNoData/DatasourceError; None: as others
    test_notifications: str = TESTS_SEND
    test_resolve_after_seconds: int = TEST_RESOLVE_AFTER_SECONDS
    storm: Storm | None = None  # the storm valve; None: off
    on_muted: str = RECONCILE_KEEP  # the reconciler's policy for an open alert its source silences or inhibits
    on_gone: str = RECONCILE_RESOLVE  # … and for one its source no longer has (absent two checks in a row)
    heartbeat: "Watchdog | None" = None  # its alerts are heartbeats, not incidents
    severities: dict[str, str] = field(init=False, repr=False)  # every word the route knows → PagerDuty severity

    def __post_init__(self):
        """Merge the words the route understands once: the route's own map over the built-in vocabulary."""
        builtin = BUILTIN_SEVERITIES if self.builtin_severities else PAGERDUTY_SEVERITIES
        self.severities = {**builtin, **self.severity_map}

    def matches(self, alert: Alert) -> bool:
        """Tell whether every matcher of the route holds for the alert's labels (and route labels)."""
        return matches_all(self.matchers, alert.labels, alert.route_labels)

    def severity(self, alert: Alert) -> str:
        """Map the alert's severity word onto a PagerDuty severity, falling back to the default; Grafana's
        no-data and query-error alerts take no_data_severity."""
        labels = alert.labels
        if self.no_data_severity and datasource_state(labels):
            return self.no_data_severity
        word = next((value for name in self.severity_labels if (value := labels.get(name))), "")
        return self.severities.get(word.strip().lower(), self.default_severity)


@dataclass
class Routing:
    """All routes in order, and the default route for alerts that match none."""

    routes: list[Route]
    default: Route | None
    proxy: Route = field(default_factory=lambda: proxy_route())

    def routes_for(self, alert: Alert) -> list[Route]:
        """Return the routes the alert goes to: matches in order until one without continue; else the default
        route, or for a drop-in event the proxy (the key it names)."""
        chosen = []
        for route in self.routes:
            if route.matches(alert):
                chosen.append(route)
                if not route.continue_:
                    break
        fallback = self.proxy if alert.event is not None else self.default
        if not chosen and fallback:
            chosen.append(fallback)
        return chosen

    def named(self, route_name: str | None) -> Route | None:
        """The route of that name (the default included), or None when the configuration no longer has it."""
        return next((route for route in [*self.routes, self.default] if route and route.name == route_name), None)

    def sends_flapping(self, route_name: str | None) -> bool:
        """Tell whether the named route sends a trigger and its resolve that were both still unsent."""
        return route_name in self._flapping

    def storms(self) -> dict[str, Storm]:
        """The storm valve of each route that has one, by route name."""
        return self._storms

    def heartbeat_of(self, route_name: str | None) -> "Watchdog | None":
        """The named route's heartbeat option, None when its alerts are incidents."""
        return self._heartbeats.get(route_name)

    @property
    def has_heartbeats(self) -> bool:
        """Tell whether any route's alerts are heartbeats."""
        return bool(self._heartbeats)

    # Per configuration, not per request: read once, on the first webhook (the routes never change after loading).
    @cached_property
    def _flapping(self) -> set[str]:
        return {route.name for route in self._all if route.send_flapping}

    @cached_property
    def _storms(self) -> dict[str, Storm]:
        return {route.name: route.storm for route in self._all if route.storm}

    @cached_property
    def _heartbeats(self) -> dict[str, "Watchdog"]:
        found = {}
        for route in self._all:  # the first route of a name, as before
            if route.heartbeat and route.name not in found:
                found[route.name] = route.heartbeat
        return found

    @property
    def _all(self) -> list[Route]:
        return [route for route in [*self.routes, self.default] if route]


def proxy_route() -> Route:
    """The route of drop-in events no route takes: to the routing key the sender named, severity as sent."""
    return Route(name=PROXY, matchers=[], routing_key=None,
                 routing_key_template=compile_template(f"{{{{ labels.{ROUTING_KEY_LABEL} }}}}"),
                 severity_labels=("severity",), severity_map={}, default_severity="error", dedup=DEDUP_ALERT,
                 dedup_template=None)


def _problem(name, field_name, message):
    return ConfigError(f"{_label(name)}, field {field_name!r}: {message}")


def _label(name):
    """Name a route in errors: by its name, or by its position ("#2") when it has none."""
    return f"route {name!r}" if not str(name).startswith("#") else f"route {name}"


def fixed_routing_key(spec, environ, owner: str) -> str | None:
    """The key given as `routing_key` or read from the variable `routing_key_env` names (None when neither is
    given), refused with a ConfigError naming owner and field when unset or of a length PagerDuty would refuse (with
    a 400, on the first real page). The error gives the key's length, never the key."""
    if "routing_key" in spec:
        field_name, what, key = "routing_key", "the key", spec["routing_key"]
    elif "routing_key_env" in spec:
        field_name, what = "routing_key_env", f"the key in {spec['routing_key_env']}"
        key = environ.get(spec["routing_key_env"], "")
        if not key:
            raise ConfigError(f"{owner}, field {field_name!r}: environment variable {spec['routing_key_env']} is "
                              "not set")
    else:
        return None
    if len(key) != ROUTING_KEY_LENGTH:
        raise ConfigError(f"{owner}, field {field_name!r}: {what} has {len(key)} characters; a PagerDuty integration "
                          f"(routing) key has {ROUTING_KEY_LENGTH}")
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
        raise _problem(name, field_name, problem_text(messages)) from None
    try:
        matchers = parse_matchers(spec["matchers"])
    except MatcherError as exc:
        raise _problem(name, "matchers", str(exc)) from None
    dedup, dedup_template = _compile_dedup(name, spec["dedup"])
    key_template = spec.get("routing_key_template")
    return Route(
        name=spec["name"],
        matchers=matchers,
        routing_key=fixed_routing_key(spec, environ, _label(spec["name"])),
        routing_key_template=_compile(name, "routing_key_template", key_template) if key_template else None,
        severity_labels=spec["severity_label"],
        severity_map={k.strip().lower(): v for k, v in spec["severity_map"].items()},
        default_severity=spec["default_severity"],
        builtin_severities=spec["builtin_severities"],
        no_data_severity=spec["no_data_severity"],
        dedup=dedup,
        dedup_template=dedup_template,
        templates={f: _compile(name, f"templates.{f}", t) for f, t in spec["templates"].items()},
        custom_details=None if spec["custom_details"] is None else {
            k: _compile(name, f"custom_details.{k}", t) for k, t in spec["custom_details"].items()},
        continue_=spec["continue_"],
        test_notifications=spec["test_notifications"],
        test_resolve_after_seconds=spec["test_resolve_after_seconds"],
        send_flapping=spec["send_flapping"],
        storm=Storm(spec["storm"]["max_triggers"], spec["storm"]["per"], spec["storm"].get("count_by"))
        if spec["storm"] else None,
        on_muted=spec["on_muted"],
        on_gone=spec["on_gone"],
        heartbeat=Watchdog(spec["heartbeat"]["within"], tuple(spec["heartbeat"]["per"]), spec["heartbeat"]["severity"])
        if spec["heartbeat"] else None,
    )


def problem_text(messages) -> str:
    """A marshmallow error's messages as one line of text ("per: Not a valid list."), not a Python repr."""
    return "; ".join(map(str, _flatten(messages)))


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
