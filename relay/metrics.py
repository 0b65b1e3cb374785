"""Prometheus metrics: what the relay received, stored and delivered, and the state of its outbox.

Counters and histograms are kept per process. Under gunicorn, prometheus_client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR, set by gunicorn.conf.py before a worker imports this module) keeps them in
per-process files, and a scrape landing on any worker sums every worker's, dead ones included. The outbox
gauges are not per-process state: they are read from the store at scrape time, with one query.
"""
import functools
import logging
import os

from flask import Blueprint, Response, request
from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import func, select, text

from relay.store import models, states
from relay.store.models import IncidentLog, db, utcnow

log = logging.getLogger(__name__)
bp = Blueprint("metrics", __name__)

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
PD_DURATION = Histogram("relay_pagerduty_request_duration_seconds",
                        "How long each request to PagerDuty took, answered or not.",
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))

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


def outbox_backlog(conn) -> tuple[dict[str, int], object]:
    """Count open rows (pending, retrying) by status and find the oldest one's created_at, in one query."""
    rows = conn.execute(select(IncidentLog.status, func.count(), func.min(IncidentLog.created_at))
                        .where(text(f"incident_log.{states.OPEN_SQL}"))  # verbatim: the partial index serves it
                        .group_by(IncidentLog.status)).all()
    counts = {status: 0 for status in states.OPEN}
    oldest = None
    for status, count, created_at in rows:
        counts[status] = count
        created_at = models.as_utc(created_at)
        oldest = created_at if oldest is None or created_at < oldest else oldest
    return counts, oldest


def open_rows_by_answer(conn) -> dict[int, int]:
    """Count open rows by the HTTP status of their last answer (rows never answered left out), in one query."""
    rows = conn.execute(select(IncidentLog.http_status, func.count())
                        .where(text(f"incident_log.{states.OPEN_SQL}"), IncidentLog.http_status.is_not(None))
                        .group_by(IncidentLog.http_status)).all()
    return {http_status: count for http_status, count in rows}


class OutboxCollector:
    """Outbox gauges read from the store when scraped, so every worker reports the same truth."""

    def collect(self):
        """Yield the backlog by status, the oldest open row's age, and whether the store answered."""
        up = GaugeMetricFamily("relay_store_up", "1 when the scrape could read the outbox from the store.")
        try:
            with db.engine.connect() as conn:
                counts, oldest = outbox_backlog(conn)
        except Exception as exc:  # noqa: BLE001 - a store that is down is a value, not a failed scrape
            log.warning("metrics: cannot read the outbox: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        backlog = GaugeMetricFamily("relay_outbox_backlog", "Rows waiting to be delivered, by status.",
                                    labels=["status"])
        for status, count in counts.items():
            backlog.add_metric([status], count)
        yield backlog
        age = (utcnow() - oldest).total_seconds() if oldest else 0.0
        yield GaugeMetricFamily("relay_outbox_oldest_pending_age_seconds",
                                "Age of the oldest row still waiting to be delivered (0 when none waits).",
                                value=max(0.0, age))


class _Scrape:
    """The collectors one scrape reads, in order."""

    def __init__(self, *collectors):
        self.collectors = collectors

    def collect(self):
        """Yield every collector's metric families."""
        for collector in self.collectors:
            yield from collector.collect()


@bp.get("/metrics")
def scrape():
    """Expose the metrics in Prometheus text format (or OpenMetrics, if asked for)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        counters = MultiProcessCollector(None)  # every worker's files, summed
    else:
        counters = REGISTRY  # one process: the flask CLI, tests
    encode, content_type = choose_encoder(request.headers.get("Accept"))
    return Response(encode(_Scrape(counters, OutboxCollector())), content_type=content_type)
