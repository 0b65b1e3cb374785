"""Start-up checks of config.py's routes and source settings; a bad one stops the relay, named."""
import os

from marshmallow import ValidationError

from relay.intake.routing import RECONCILE_KEEP, RECONCILE_RESOLVE, ConfigError, Routing, load_routing, problem_text
from relay.intake.sources import SOURCES, settings_key
from relay.masking import mask
from relay.startup.process import warn
from relay.startup.settings import change_events_url, events_url_problem
from relay.timeutil import duration_text


def load_source_settings(config) -> dict:
    """Load each source's settings from config through its settings schema, once, for every webhook to use."""
    loaded = {}
    for name, source in SOURCES.items():
        if source.SETTINGS_SCHEMA is None:
            continue
        key = settings_key(source)
        try:
            loaded[name] = source.SETTINGS_SCHEMA.load(config.get(key) or {})
        except ValidationError as exc:
            raise ConfigError(f"{key}: {problem_text(exc.messages)}") from None
    return loaded


def check_lease(config) -> None:
    """Refuse a claim lease that a single send could outlast: another worker would send the row again."""
    longest_send = config["PAGERDUTY_CONNECT_TIMEOUT"] + config["PAGERDUTY_READ_TIMEOUT"]
    if config["RELAY_CLAIM_LEASE_SECONDS"] <= longest_send:
        raise ConfigError(f"RELAY_CLAIM_LEASE_SECONDS ({config['RELAY_CLAIM_LEASE_SECONDS']}) must exceed "
                          f"PAGERDUTY_CONNECT_TIMEOUT + PAGERDUTY_READ_TIMEOUT ({longest_send})")


def check_nice(config) -> None:
    """Refuse a priority change the worker could not make: raising priority needs root, 19 is the lowest."""
    if not 0 <= config["RELAY_DELIVERY_NICE"] <= 19:
        raise ConfigError(f"RELAY_DELIVERY_NICE ({config['RELAY_DELIVERY_NICE']}) must be between 0 and 19")


def check_duties(config) -> None:
    """Refuse duty settings that cannot work: a heartbeat turn of 0 s would spin, a 0 s timeout makes every request
    to a source fail, and a cap of 0 resolves would keep a reconciler that never resolves (0 s between its checks
    is how to turn it off)."""
    for name, least, expected in (("RELAY_HEARTBEAT_CHECK_SECONDS", 0, "more than 0"),
                                  ("RELAY_RECONCILE_TIMEOUT_SECONDS", 0, "more than 0"),
                                  ("RELAY_RECONCILE_MAX_RESOLVES", 0, "at least 1 (RELAY_RECONCILE_INTERVAL_SECONDS=0 "
                                                                      "turns the reconciler off)")):
        if name in config and config[name] <= least:
            raise ConfigError(f"{name} ({config[name]:g}) must be {expected}")


def check_events_url(config) -> None:
    """Refuse an Events API URL without scheme, host or path: PagerDuty would answer every event 404. Derive the
    change events URL from it when none is set."""
    problem = events_url_problem("PAGERDUTY_EVENTS_URL", config["PAGERDUTY_EVENTS_URL"])
    if problem:
        raise ConfigError(problem)
    if not config.get("PAGERDUTY_CHANGE_EVENTS_URL"):
        config["PAGERDUTY_CHANGE_EVENTS_URL"] = change_events_url(config["PAGERDUTY_EVENTS_URL"])
    problem = events_url_problem("PAGERDUTY_CHANGE_EVENTS_URL", config["PAGERDUTY_CHANGE_EVENTS_URL"])
    if problem:
        raise ConfigError(problem)


def load(config, environ=os.environ) -> tuple[Routing, dict]:
    """Load and check the routing, source and delivery settings; raise ConfigError on the first problem."""
    check_events_url(config)
    check_lease(config)
    check_nice(config)
    check_duties(config)
    routing = load_routing(config.get("ROUTES") or [], config.get("DEFAULT_ROUTE"), environ)
    return routing, load_source_settings(config)


def describe(routing: Routing) -> list[str]:
    """One line per route, for people checking their configuration."""
    lines = []
    for route in [*routing.routes, routing.default]:
        if route is None:
            continue
        key = "templated" if route.routing_key_template else mask(route.routing_key)
        matchers = ", ".join(map(str, route.matchers)) or "(everything)"
        storm = route.storm and (f", storm valve {route.storm.max_triggers} new alerts per "
                                 f"{duration_text(route.storm.per_seconds)}")
        heartbeat = route.heartbeat and f", heartbeat within {duration_text(route.heartbeat.within)}"
        reconcile = f", reconciler: muted → {route.on_muted}, gone → {route.on_gone}" if (
            route.on_muted, route.on_gone) != (RECONCILE_KEEP, RECONCILE_RESOLVE) else ""
        lines.append(f"{route.name}: {matchers} → key {key}, dedup {route.dedup}"
                     f"{', continue' if route.continue_ else ''}{storm or ''}{heartbeat or ''}{reconcile}")
    return lines


def init_app(app):
    """Load the routing into the app; keep a warning for start-up when unmatched alerts have nowhere to go."""
    routing, settings = load(app.config)
    app.extensions["relay.intake.routing"] = routing
    app.extensions["relay.source_settings"] = settings
    if routing.default is None:
        warn(app, "no default route (PAGERDUTY_ROUTING_KEY is not set): alerts matching no route "
                    "are logged as unrouted and not sent")
