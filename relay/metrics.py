"""Prometheus counters: what the relay received, stored and delivered, counted where it happens in every wing.

Counters and histograms are kept per process. Under gunicorn, prometheus_client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR, set by gunicorn.conf.py before a worker imports this module) keeps them in
per-process files, and a scrape (relay/web/scrape.py) landing on any worker sums every worker's, dead ones
included.
"""
import functools

from prometheus_client import Counter, Histogram

from relay.store import states
from relay.store.models import utcnow

UNROUTED_ROUTE = "unrouted"  # route label of events no route took
DIRECT_ROUTE = "direct"  # route label of the create-incident job's events: the caller names the key

WEBHOOKS = Counter("relay_webhooks_received_total", "Webhooks received, by source and outcome.",
                   ["source", "outcome"])
WEBHOOK_DURATION = Histogram("relay_webhook_duration_seconds",
                             "How long the relay took to answer a webhook, from the start of its handling, by source.",
                             ["source"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
EVENTS = Counter("relay_events_stored_total",
                 "Events stored in incident_log, by source, route (unrouted: matched none) and event action.",
                 ["source", "route", "action"])
NOT_SENT = Counter("relay_events_not_sent_total",
                   "Events stored never to be sent, by source, route and reason (the row's state: stale, superseded, "
                   "held); older rows a webhook's event superseded count under its source and route.",
                   ["source", "route", "reason"])
TRUNCATED = Counter("relay_alerts_truncated_total",
                    "Alerts a sender left out of its notifications (truncatedAlerts: its max_alerts), by source.",
                    ["source"])
DELIVERIES = Counter("relay_deliveries_total",
                     "Delivery attempts, by outcome (delivered, retry, failed) and PagerDuty's HTTP status "
                     "(none: no answer, e.g. a timeout).", ["outcome", "http_status"])
RETRIES = Counter("relay_retries_scheduled_total", "Rows put back in the outbox for a later attempt.")
GIVEN_UP = Counter("relay_rows_given_up_total",
                   "Rows given up (dead): still failing RELAY_GIVE_UP_AFTER_SECONDS after they were accepted.")
LATENCY = Histogram("relay_delivery_latency_seconds", "From a row's acceptance to PagerDuty's 202.",
                    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600,
                             86400))
MISDIRECTED = Counter("relay_pagerduty_misdirected_total",
                      "Answers that are not the Events API's (3xx, 401, 403, 404, 407, a 2xx without PagerDuty's "
                      "acceptance): the events URL is wrong or a proxy is in the way. Retried.", ["http_status"])
HELD = Counter("relay_storm_held_total",
               "Events held by a route's storm valve (new alerts past max_triggers, and their repeats and resolves): "
               "kept in the log, never sent.", ["route"])
PD_DURATION = Histogram("relay_pagerduty_request_duration_seconds",
                        "How long each request to PagerDuty took, answered or not.",
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
RECONCILE_ERRORS = Counter("relay_reconcile_errors_total",
                           "Reconciler checks that could not read a source's alerts (nothing was resolved), by source.",
                           ["source"])
RECONCILED = Counter("relay_reconciled_events_total",
                     "Events the reconciler stored (resolve, acknowledge, trigger again), by event action.", ["action"])

# Webhook answers by HTTP status; any other 4xx is "rejected", 5xx "error".
WEBHOOK_OUTCOMES = {400: "invalid", 401: "unauthorized", 403: "forbidden", 404: "unknown_source",
                    413: "too_large", 415: "invalid"}


def webhook_outcome(http_status: int) -> str:
    """Name the outcome of a webhook from the status it was answered with."""
    if 200 <= http_status < 300:
        return "accepted"
    if http_status >= 500:
        return "error"
    return WEBHOOK_OUTCOMES.get(http_status, "rejected")


def webhook(source: str, http_status: int, seconds: float) -> str:
    """Count one webhook and how long it took to answer; return its outcome."""
    outcome = webhook_outcome(http_status)
    _child(WEBHOOKS, source, outcome).inc()
    _child(WEBHOOK_DURATION, source).observe(seconds)
    return outcome


@functools.lru_cache(maxsize=1024)
def _child(metric, *labels):
    """A metric's child for these label values, looked up once: labels() checks and locks on every call, and
    every webhook counts several (the values are few: sources, outcomes, routes, actions)."""
    return metric.labels(*labels)


def events_stored(source: str, planned) -> None:
    """Count the events of a webhook once their rows are committed."""
    for item in planned:
        _child(EVENTS, source, item.route if item.routed else UNROUTED_ROUTE, item.event["event_action"]).inc()


def events_held(routes) -> None:
    """Count the events a webhook stored held, by route, once their rows are committed."""
    for route in routes:
        _child(HELD, route).inc()


def events_not_sent(source: str, rows: list[dict], superseded: list[list[int]]) -> None:
    """Count the rows a webhook stored never to be sent, and the older rows each of them superseded, once they are
    committed."""
    for row, older in zip(rows, superseded):
        if row["status"] in states.NOT_SENT:
            _child(NOT_SENT, source, row["route"], row["status"]).inc()
        if older:
            _child(NOT_SENT, source, row["route"], states.SUPERSEDED).inc(len(older))


def alerts_truncated(source: str, count: int) -> None:
    """Count the alerts a sender left out of one notification."""
    _child(TRUNCATED, source).inc(count)


def event_stored(source: str, action: str, route: str = DIRECT_ROUTE) -> None:
    """Count one event the create-incident job stored."""
    EVENTS.labels(source, route, action).inc()


def delivered(results, moves, now=None) -> None:
    """Count the outcomes of finished attempts, as (claimed, delivery) pairs, once they are recorded, with where
    the store moved each row (states.Transition, in the same order)."""
    now = now or utcnow()
    for (claimed, delivery), moved in zip(results, moves):
        DELIVERIES.labels(delivery.outcome, str(delivery.http_status or "none")).inc()
        PD_DURATION.observe(delivery.duration_ms / 1000)
        if delivery.misdirected:
            MISDIRECTED.labels(str(delivery.http_status)).inc()
        if moved.status == states.DELIVERED:
            LATENCY.observe(max(0.0, (now - claimed.created_at).total_seconds()))
        elif moved.status == states.RETRYING:
            RETRIES.inc()
        elif moved.status == states.DEAD:
            GIVEN_UP.inc()


def reconcile_error(source: str) -> None:
    """Count one check that could not read a source's alerts."""
    RECONCILE_ERRORS.labels(source).inc()


def reconciled(action: str) -> None:
    """Count one event the reconciler stored."""
    RECONCILED.labels(action).inc()
