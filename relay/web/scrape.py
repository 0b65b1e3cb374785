"""GET /metrics: every process's counters (relay/metrics.py), summed, and the outbox's gauges read from the store.

The outbox gauges are not per-process state: they are read from the store at scrape time, with one query, so
every worker reports the same truth.
"""
import logging
import os

from flask import Blueprint, Response, current_app, request
from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from relay.delivery import heartbeats
from relay.pagerduty.client import safe_url
from relay.store import endpoints, failures, storm
from relay.store.backlog import outbox_backlog
from relay.store.models import db, utcnow

log = logging.getLogger(__name__)
bp = Blueprint("metrics", __name__)


class OutboxCollector:
    """Outbox gauges read from the store when scraped, so every worker reports the same truth."""

    def collect(self):
        """Yield the backlog by status, the oldest open row's age, and whether the store answered."""
        up = GaugeMetricFamily("relay_store_up", "1 when the scrape could read the outbox from the store.")
        try:
            with db.engine.connect() as conn:
                counts, oldest = outbox_backlog(conn)
                known = endpoints.overview(conn, current_app.config["PAGERDUTY_EVENTS_URL"])
                storms = storm.routes(conn)
        except Exception as exc:  # noqa: BLE001 - a store that is down is a value, not a failed scrape
            problem = failures.describe(exc, db.engine.url)
            if problem:
                log.warning("metrics: cannot read the outbox: %s", problem)
            else:
                log.exception("metrics: cannot read the outbox")
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
        yield from _endpoint_gauges(known)
        yield _storm_gauge(current_app.extensions["relay.intake.routing"].storms(), storms)


def _storm_gauge(valved, storming):
    """Whether each route with a storm valve is in a storm now (its new alerts held, its summary incident open)."""
    active = GaugeMetricFamily("relay_storm_active", "1 while the route's storm valve holds its new alerts.",
                               labels=["route"])
    for route in sorted({*valved, *storming}):
        active.add_metric([route], 1 if route in storming else 0)
    return active


def _endpoint_gauges(known):
    """Each PagerDuty endpoint's state: up or down (probed), time since its last answer, events waiting on it."""
    up = GaugeMetricFamily("relay_pagerduty_endpoint_up",
                           "1 while the Events API URL answers, 0 while it is down and probed one event at a time.",
                           labels=["events_url"])
    since = GaugeMetricFamily("relay_pagerduty_seconds_since_last_answer",
                              "Seconds since the Events API URL last answered (accepted, refused or rate limited).",
                              labels=["events_url"])
    waiting = GaugeMetricFamily("relay_pagerduty_endpoint_waiting", "Open rows to be sent to the Events API URL.",
                                labels=["events_url"])
    now = utcnow()
    for endpoint in known:
        label = [safe_url(endpoint.events_url)]
        up.add_metric(label, 1 if endpoint.up else 0)
        if endpoint.last_success_at is not None:
            since.add_metric(label, max(0.0, (now - endpoint.last_success_at).total_seconds()))
        waiting.add_metric(label, endpoint.waiting)
    yield from (up, since, waiting)


class HeartbeatCollector:
    """Each heartbeat's last arrival and whether it is up, read from the store when scraped."""

    def collect(self):
        """Yield relay_heartbeat_last_seen_timestamp_seconds and relay_heartbeat_up per heartbeat."""
        try:
            with db.engine.connect() as conn:
                known = heartbeats.overview(conn)
        except Exception:  # noqa: BLE001 - the outbox gauges already said the store is down (relay_store_up)
            return
        seen = GaugeMetricFamily("relay_heartbeat_last_seen_timestamp_seconds",
                                 "Unix time of the heartbeat's last arrival (absent until it first arrives).",
                                 labels=["heartbeat"])
        up = GaugeMetricFamily("relay_heartbeat_up", "1 unless the heartbeat is down (its incident triggered).",
                               labels=["heartbeat"])
        for beat in known:
            if beat["last_seen"] is not None:
                seen.add_metric([beat["name"]], beat["last_seen"].timestamp())
            up.add_metric([beat["name"]], 1 if beat["up"] else 0)
        yield from (seen, up)


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
    return Response(encode(_Scrape(counters, OutboxCollector(), HeartbeatCollector())), content_type=content_type)
