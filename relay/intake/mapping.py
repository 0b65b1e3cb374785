"""From normalized alerts to PagerDuty events: routes, templates, severity, dedup keys."""
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone

from marshmallow import ValidationError

from relay.intake.alert import ROUTING_KEY_LABEL, TRUNCATED, Alert, Link, is_http_url
from relay.intake.render import DEFAULTS, alert_context, render, render_macros
from relay.intake.routing import DEDUP_GROUP, TEMPLATED_FIELDS, TESTS_DROP, Route, Routing
from relay.intake.sources import client_name, is_test_notification
from relay.masking import redact, redact_value
from relay.pagerduty.event import DEDUP_KEY_MAX, SUMMARY_MAX, load_event, parse_iso8601, truncate, url_too_long

log = logging.getLogger(__name__)

OPTIONAL_PAYLOAD_FIELDS = ("component", "group", "class")
REQUIRED_TEXTS = ("summary", "source")  # a trigger without them is refused, so an empty render is no answer
ROUTING_KEY = re.compile(r"\S{1,255}")  # what PagerDuty and incident_log.routing_key can take
UNROUTED_KEY = "unrouted"  # stands in for the missing key while an unrouted event is validated
# Labels a default summary already names (the rule, a failed query's datasource) or that say nothing of which
# alert it is.
NOT_DISTINGUISHING = frozenset({"alertname", "rulename", "datasource_uid", "severity", "priority"})
DISTINGUISHING_MAX = 3  # labels named in a summary to tell alerts apart; more would bury the rule's text
TEST_SEVERITY = "info"


@dataclass
class Planned:
    """One event to store (and send), or an alert no route takes (route None, with the reason)."""

    alert: Alert
    route: str | None
    event: dict
    problem: str | None = None
    secret: str | None = None  # the key a routing key template rendered: masked in every event of the alert
    summary: str | None = None  # the alert's summary for the log, when the event carries none (a resolve)
    delay_seconds: int = 0  # how long the event waits before it may be sent (a test notification's resolve)

    @property
    def routed(self) -> bool:
        """Tell whether the event has a routing key to be delivered with."""
        return self.problem is None


def sha256_hex(text: str) -> str:
    """Return the lowercase hex SHA-256 of text."""
    return hashlib.sha256(text.encode()).hexdigest()


_IDENTITY_JSON = json.JSONEncoder(ensure_ascii=False)  # json.dumps(…, ensure_ascii=False), made once


def alert_dedup_key(route: Route, alert: Alert) -> str:
    """A key stable for every repeat of the alert and its resolve, distinct per route and source: from its labels
    (less those its source derived from other fields), or from its identity when it has no labels of its own."""
    if alert.identity is None:
        labels = sorted((name, value) for name, value in alert.labels.items() if name not in alert.derived_labels)
        return sha256_hex(_IDENTITY_JSON.encode([route.name, alert.source, labels]))
    # Four parts where a labelled alert's have three: no label set can give this key.
    return sha256_hex(_IDENTITY_JSON.encode([route.name, alert.source, [], alert.identity]))


def dedup_key_for(route: Route, alert: Alert, context: dict) -> str:
    """Choose the event's dedup key by the route's strategy."""
    if route.dedup == DEDUP_GROUP and alert.group_key:
        # Alertmanager notify/pagerduty/pagerduty.go: hashKey(groupKey), so migrating keeps open incidents.
        return sha256_hex(alert.group_key)
    if route.dedup_template is not None:
        rendered = render(route.dedup_template, context)
        if rendered:
            return rendered if len(rendered) <= DEDUP_KEY_MAX else sha256_hex(rendered)
    if alert.dedup_key:
        return alert.dedup_key if len(alert.dedup_key) <= DEDUP_KEY_MAX else sha256_hex(alert.dedup_key)
    return alert_dedup_key(route, alert)


def _texts(route: Route | None, alert: Alert, context: dict) -> dict:
    """Render the route's templated fields, each falling back to the default template when it fails."""
    texts = {name: text or "" for name, text in render_macros(DEFAULTS, context).items()}
    for name in TEMPLATED_FIELDS:
        custom = route.templates.get(name) if route else None
        text = render(custom, context) if custom else None
        if name in REQUIRED_TEXTS and not text:
            text = None  # "{{ annotations.title }}" without that annotation: the default says more than "Alert"
        if text is not None:
            texts[name] = text
    return texts


def resolve_summary(route: Route, context: dict) -> str:
    """The summary the alert's trigger carries, for the log's row of its resolve (the event itself carries none)."""
    custom = route.templates.get("summary")
    text = render(custom, context) if custom else None
    return truncate(text or render_macros(DEFAULTS, context, ("summary",))["summary"] or "Alert", SUMMARY_MAX)


def _custom_details(route: Route | None, alert: Alert, context: dict) -> dict:
    if route and route.custom_details is not None:
        return {name: render(template, context) or "" for name, template in route.custom_details.items()}
    details = {"labels": alert.labels, "annotations": alert.annotations}
    if alert.route_labels:
        details["route_labels"] = alert.route_labels
    if alert.starts_at:
        details["firing_since"] = alert.starts_at
    if alert.ends_at:
        details["resolved_at"] = alert.ends_at
    return {**details, **alert.details}


def _summary(text: str, alert: Alert, test: bool) -> str:
    """The summary as rendered, marked when it is a test and noting the alerts the sender left out, within
    PagerDuty's limit."""
    if test and "test" not in text.lower():
        text = f"[test] {text}"
    truncated = alert.details.get(TRUNCATED)
    if not truncated:
        return text
    note = f" (+{truncated} more not sent by {client_name(alert.source)}: raise max_alerts)"
    if len(text) + len(note) > SUMMARY_MAX:
        text = text[:SUMMARY_MAX - len(note) - 1] + "…"
    return text + note


def trigger_event(alert: Alert, route: Route | None, routing_key: str, dedup_key: str | None,
                  context: dict, test: bool = False) -> dict:
    """Build the trigger for a firing alert (not yet validated); a sender's test notification pages at info."""
    texts = _texts(route, alert, context)
    severity = TEST_SEVERITY if test else route.severity(alert) if route else "error"
    payload = {
        "summary": _summary(texts["summary"] or "Alert", alert, test),
        "source": texts["source"] or alert.source,
        "severity": severity,
        "custom_details": _custom_details(route, alert, context),
    }
    payload.update({f: texts[f] for f in OPTIONAL_PAYLOAD_FIELDS if texts[f]})
    started = parse_iso8601(alert.starts_at)
    if started:
        payload["timestamp"] = started.isoformat()
    event = {"routing_key": routing_key, "event_action": "trigger", "payload": payload,
             "links": alert.link_dicts()}
    if dedup_key:
        event["dedup_key"] = dedup_key
    if alert.image_url and alert.image_url.startswith("https://"):
        event["images"] = [{"src": alert.image_url, "alt": texts["summary"][:200]}]
    if texts["client"]:
        event["client"] = texts["client"]
    if is_http_url(texts["client_url"]):
        event["client_url"] = texts["client_url"]
    return event


def _validated(event: dict) -> dict:
    """Validate an event, dropping the links PagerDuty would refuse; if another optional extra breaks it, send
    the page without the extras."""
    try:
        return load_event(event)
    except ValidationError as exc:
        bad_links = _bad_links(event, exc.messages)
        if bad_links:
            return _validated({**event, "links": [link for index, link in enumerate(event["links"])
                                                  if index not in bad_links]})
        log.warning("event extras invalid, sending without them: %s", sorted(exc.messages))
        bare = {k: event[k] for k in ("routing_key", "event_action", "dedup_key") if k in event}
        if "payload" in event:
            bare["payload"] = {k: event["payload"][k] for k in ("summary", "source", "severity", "custom_details")}
        return load_event(bare)


def _bad_links(event: dict, messages) -> set:
    """The indexes in event["links"] of the refused links, when nothing but links was refused (the schema counts
    them after dropping the links with over-long URLs)."""
    if isinstance(messages, dict) and list(messages) == ["links"] and isinstance(messages["links"], dict):
        checked = [index for index, link in enumerate(event["links"]) if not url_too_long(link.get("href"))]
        return {checked[index] for index in messages["links"]}
    return set()


def _without_keys(event: dict, secrets: list[str]) -> dict:
    """Keep templated routing keys out of an event's body: taken from a label, they would show in custom_details;
    the event's own key stays in its field."""
    body = {k: v for k, v in event.items() if k != "routing_key"}
    return {"routing_key": event["routing_key"], **redact_value(body, *secrets)}


def _masked_alert(alert: Alert, secrets: list[str]) -> Alert:
    """A copy of the alert, as it is stored and shown, with the templated routing keys masked."""
    fields = {name: redact_value(value, *secrets) for name, value in vars(alert).items() if name != "links"}
    links = [Link(redact(link.href, *secrets), redact(link.text, *secrets)) for link in alert.links]
    return Alert(**fields, links=links)


def _masked(items: list[Planned]) -> list[Planned]:
    """Mask the keys the alert's routing key templates rendered in every event it produced, whichever route
    (a `continue` route sends the same labels, key included, on another route's event)."""
    secrets = {item.secret for item in items if item.secret}
    if items and items[0].alert.event is not None:  # a drop-in event's own key, a label, whatever key it went to
        secrets.add(items[0].alert.labels.get(ROUTING_KEY_LABEL))
    secrets = sorted(filter(None, secrets), key=len, reverse=True)
    if not secrets:
        return items
    alert = _masked_alert(items[0].alert, secrets)
    return [Planned(alert, item.route, _without_keys(item.event, secrets), item.problem, item.secret,
                    redact(item.summary, *secrets)) for item in items]


def event_for(alert: Alert, route: Route, distinguishing: dict | None = None, test: bool = False) -> Planned:
    """Map one alert on one route to its event, naming the labels that tell it apart from the other alerts of its
    notification."""
    context = alert_context(alert, distinguishing)
    routing_key = route.routing_key or render(route.routing_key_template, context)
    if not routing_key:
        return unrouted(alert, f"the routing key template of route {route.name!r} rendered empty",
                        distinguishing=distinguishing)
    if not ROUTING_KEY.fullmatch(routing_key):
        return unrouted(alert, f"the routing key template of route {route.name!r} rendered an invalid routing key",
                        secret=routing_key, distinguishing=distinguishing)
    if test and alert.group_key:
        # Each press of a test button its own incident: one press's held-back resolve must not hold up the next
        # press's trigger (the outbox sends an alert's events in order).
        dedup_key = sha256_hex(alert.group_key)
    else:
        dedup_key = dedup_key_for(route, alert, context)
    if alert.event is not None:
        return Planned(alert, route.name, _validated(dropin_event(alert, route, routing_key, dedup_key)),
                       secret=routing_key if route.routing_key_template else None)
    summary = None
    if alert.firing:
        event = trigger_event(alert, route, routing_key, dedup_key, context, test)
    else:
        event = {"routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup_key}
        summary = resolve_summary(route, context)
    event = _validated(event)
    return Planned(alert, route.name, event, secret=routing_key if route.routing_key_template else None,
                   summary=summary)


def dropin_event(alert: Alert, route: Route, routing_key: str, dedup_key: str) -> dict:
    """The event a drop-in sender made, on the route's routing key and dedup key, with its severity as the route
    maps it (the event's own on the proxy); its texts, details, links and images pass as sent."""
    event = {**alert.event, "routing_key": routing_key, "dedup_key": dedup_key}
    if isinstance(event.get("payload"), dict):
        event["payload"] = {**event["payload"], "severity": route.severity(alert)}
    return event


def unrouted(alert: Alert, problem: str, secret: str | None = None, distinguishing: dict | None = None) -> Planned:
    """Keep an alert no route takes as an event without a key, so it is logged and never dropped."""
    event = trigger_event(alert, None, UNROUTED_KEY, None, alert_context(alert, distinguishing))
    if not alert.firing:
        event = {**event, "event_action": "resolve", "dedup_key": alert.fingerprint or "unrouted"}
    event = _validated(event)
    event["routing_key"] = ""
    return Planned(alert, None, event, problem, secret)


def collapse_groups(planned: list[Planned], routing: Routing) -> list[Planned]:
    """Send one event per group on group-dedup routes: a trigger while any alert fires, else one resolve."""
    group_routes = {r.name for r in [*routing.routes, routing.default] if r and r.dedup == DEDUP_GROUP}
    firing_groups = {(p.route, p.event["dedup_key"]) for p in planned
                     if p.route in group_routes and p.event["event_action"] == "trigger"}
    kept, seen = [], set()
    for item in planned:
        group = (item.route, item.event.get("dedup_key"))
        if item.route not in group_routes:
            kept.append(item)
        elif group not in seen and (group not in firing_groups or item.event["event_action"] == "trigger"):
            seen.add(group)
            kept.append(item)
    return kept


def state_since(event_action: str, starts_at: str | None, ends_at: str | None) -> datetime | None:
    """When the state an event reports began: a trigger's startsAt, a resolve's endsAt; None when unknown."""
    moment = parse_iso8601(starts_at if event_action == "trigger" else ends_at if event_action == "resolve" else None)
    if moment is None or moment.year == 1:  # Go's zero time.Time: no time at all
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def same_alert(alert: Alert, stored: dict) -> bool:
    """Tell whether a stored row's alert is this alert: the same fingerprint, or without one the same labels."""
    if alert.fingerprint and stored.get("fingerprint"):
        return alert.fingerprint == stored["fingerprint"]
    return alert.labels == stored.get("labels")


def older_state(alert: Alert, event_action: str, last_action: str, last_alert: dict | None) -> str | None:
    """Say how an alert's event reports an older state than the last event kept for its dedup key, or None.

    Only events of one alert are compared: alerts sharing a dedup key (a group, a templated key) each keep their
    own times, and a state whose time is unknown is never called older.
    """
    if not last_alert or not same_alert(alert, last_alert):
        return None
    since = state_since(event_action, alert.starts_at, alert.ends_at)
    last_since = state_since(last_action, last_alert.get("starts_at"), last_alert.get("ends_at"))
    if since is None or last_since is None or since >= last_since:
        return None
    return (f"{_state_text(event_action, alert.starts_at, alert.ends_at)} is older than "
            f"{_state_text(last_action, last_alert.get('starts_at'), last_alert.get('ends_at'))}")


def _state_text(event_action: str, starts_at: str | None, ends_at: str | None) -> str:
    return f"firing since {starts_at}" if event_action == "trigger" else f"resolved at {ends_at}"


def differing_labels(alerts: list[Alert]) -> tuple[str, ...]:
    """Name the labels whose values differ between the alerts of one notification (missing counts as a value),
    leaving out those a summary names already."""
    if len(alerts) < 2:
        return ()
    first = alerts[0].labels
    names = set(first).union(*(alert.labels.keys() for alert in alerts[1:])) - NOT_DISTINGUISHING
    return tuple(sorted(name for name in names
                        if not name.startswith("__") and any(alert.labels.get(name) != first.get(name)
                                                             for alert in alerts)))


def distinguishing(alert: Alert, names: tuple[str, ...]) -> dict:
    """The alert's values of the differing labels it has, at most DISTINGUISHING_MAX of them."""
    found = {}
    for name in names:
        if name in alert.labels:
            found[name] = alert.labels[name]
            if len(found) == DISTINGUISHING_MAX:
                break
    return found


def test_resolve(trigger: Planned, route: Route) -> Planned:
    """The resolve that closes a test notification's incident, held back for the route's
    test_resolve_after_seconds; stored after its trigger, it is sent after it (the outbox keeps an alert's order)."""
    event = _validated({"routing_key": trigger.event["routing_key"], "event_action": "resolve",
                        "dedup_key": trigger.event["dedup_key"]})
    return Planned(trigger.alert, trigger.route, event, secret=trigger.secret,
                   delay_seconds=route.test_resolve_after_seconds)


def plan(alerts: list[Alert], routing: Routing) -> list[Planned]:
    """Map every alert of a notification to its events, in order; a test notification's resolves come last."""
    planned, test_resolves = [], []
    names = differing_labels(alerts)
    for alert in alerts:
        labels = distinguishing(alert, names) if names else None
        routes = routing.routes_for(alert)
        if not routes:
            planned.append(unrouted(alert, "no route matches and there is no default route", distinguishing=labels))
        test = is_test_notification(alert)
        if test:
            _log_dropped_tests(alert, [route for route in routes if route.test_notifications == TESTS_DROP])
            routes = [route for route in routes if route.test_notifications != TESTS_DROP]
        items = _masked([event_for(alert, route, labels, test) for route in routes])
        planned.extend(items)
        if test and alert.firing:
            test_resolves.extend(test_resolve(item, route) for item, route in zip(items, routes) if item.routed)
    return collapse_groups(planned, routing) + test_resolves


def _log_dropped_tests(alert: Alert, routes: list[Route]) -> None:
    for route in routes:
        log.info("test notification not sent: route %r drops them (test_notifications)", route.name,
                 extra={"source": alert.source, "route": route.name})
