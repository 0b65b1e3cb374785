"""The storm valve's summary incident, a periodic duty: one PagerDuty incident per route in a storm, standing for
the alerts its valve holds (relay/store/storm.py decides which, at intake).

Triggered on the route's routing keys (those of its held alerts) with the dedup key relay-storm-<route> as the
storm begins, by the webhook that begins it; triggered again with the new counts at most once a minute while it grows;
resolved once a whole window (the valve's `per`) has passed without a held new alert, which also means the route's
rate is back under max_triggers, and triggered with the final counts just before if they changed since (a burst
that Alertmanager sends one group per webhook begins the storm with one held alert and may be over within the
minute). Held alerts are not sent later: the incident's details counted them, the log
keeps each one.
"""
import logging
from datetime import datetime, timedelta

from flask import current_app

from relay.delivery.duties import Duty
from relay.pagerduty.event import load_event
from relay.store import outbox, storm
from relay.timeutil import duration_text, parse_seconds

log = logging.getLogger(__name__)

NAME = "storm-valve"
UPDATE_EVERY = timedelta(minutes=1)  # the summary incident changes at most this often
TOP_ALERTNAMES = 3  # named in the summary
DETAIL_ENTRIES = 50  # counts listed in custom_details per kind; the rest summed under "others"
SOURCE = "storm"  # incident_log.source of the summary incident's rows
FASTEST_TURN, SLOWEST_TURN = 1.0, 10.0  # seconds between turns: a quarter of the shortest window, within these


def duty(config) -> Duty | None:
    """The summary incident's duty, while any route has a storm valve."""
    windows = [route["storm"].get("per") for route in [*(config.get("ROUTES") or []), config.get("DEFAULT_ROUTE")]
               if isinstance(route, dict) and isinstance(route.get("storm"), dict)]
    if not windows:
        return None
    shortest = min(parse_seconds(per) if isinstance(per, str) else 60.0 for per in windows)
    return Duty(NAME, max(FASTEST_TURN, min(SLOWEST_TURN, shortest / 4)), run)


def run(engine, now: datetime, wake) -> None:
    """Trigger, update or resolve each storm's summary incident, and forget counts past their window."""
    storms = current_app.extensions["relay.intake.routing"].storms()
    stored = 0
    for route in _storming(engine):  # and those of routes no longer configured with a valve: resolved at once
        with outbox.writer_connection(engine) as conn, outbox.write_transaction(conn):
            rows = _turn(conn, route, storms.get(route), now)
            outbox.record_many(conn, rows)
        stored += len(rows)
    with outbox.writer_connection(engine) as conn, outbox.write_transaction(conn):
        storm.prune(conn, storms, now)
    if stored:
        wake()


def begun(conn, storms: dict, routes: list[str], now: datetime) -> list[dict]:
    """The summary incidents' first triggers, for the storms a webhook's transaction began: sent at once rather than
    at the duty's next turn."""
    return [row for route in routes for row in _turn(conn, route, storms[route], now)]


def _storming(engine) -> list[str]:
    with engine.connect() as conn:
        return storm.routes(conn)


def _turn(conn, route: str, valve, now: datetime) -> list[dict]:
    """Decide on one route's storm under its lock; return the summary incident's rows to store."""
    outbox.backend(conn).hold_routes(conn, [route])
    current = storm.current(conn, route)
    if current is None:
        return []
    tally = storm.tally(conn, route, current.started_at)
    if valve is None or now - current.last_held_at >= timedelta(seconds=valve.per_seconds):
        storm.end(conn, route)
        log.info("storm on route %s is over: %s held", route, _alerts(tally.held),
                 extra={"route": route, "held": tally.held})
        final = [] if valve is None or current.summary_at is None or tally.held == current.summary_held else [
            _row(route, _trigger(route, key, valve, tally, current.started_at)) for key in tally.routing_keys]
        return final + [_row(route, _resolve(route, key)) for key in tally.routing_keys]
    if current.summary_at is not None and (now - current.summary_at < UPDATE_EVERY
                                           or tally.held == current.summary_held):
        return []
    storm.summarized(conn, route, now, tally.held)
    if current.summary_at is None:
        log.warning("storm on route %s: more than %d new alerts in %s; new alerts are held", route,
                    valve.max_triggers, duration_text(valve.per_seconds), extra={"route": route})
    return [_row(route, _trigger(route, key, valve, tally, current.started_at)) for key in tally.routing_keys]


def dedup_key(route: str) -> str:
    """The summary incident's dedup key: one per route, stable for the whole storm."""
    return f"relay-storm-{route}"


def _row(route: str, event: dict) -> dict:
    return outbox.row_values(load_event(event), source=SOURCE, route=route,
                             events_url=current_app.config["PAGERDUTY_EVENTS_URL"])


def _resolve(route: str, routing_key: str) -> dict:
    return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup_key(route)}


def _trigger(route: str, routing_key: str, valve, tally: storm.Tally, started_at: datetime) -> dict:
    """The summary incident's trigger, with the storm's counts."""
    top = ", ".join(f"{name} ({count})" for name, count in _largest(tally.by_alertname)[:TOP_ALERTNAMES])
    more = " …" if len(tally.by_alertname) > TOP_ALERTNAMES else ""
    details = {
        "route": route,
        "held_alerts": tally.held,
        "storm_started": started_at.isoformat(),
        "valve": f"more than {valve.max_triggers} new alerts in {duration_text(valve.per_seconds)}",
        "by_alertname": _listed(tally.by_alertname),
        "held_alerts_in_log": f"relay log --status held --route {route}: held alerts are kept there and are not "
                              "sent, nor are their resolves",
    }
    if valve.count_by:
        details[f"by_{valve.count_by}"] = _listed(tally.by_label)
    return {"routing_key": routing_key, "event_action": "trigger", "dedup_key": dedup_key(route), "client": "relay",
            "payload": {"summary": f"storm on route {route}: {_alerts(tally.held)} held, top alertnames {top}{more}",
                        "source": "relay", "severity": tally.severity, "class": "storm", "group": route,
                        "custom_details": details}}


def _alerts(count: int) -> str:
    return f"{count} alert" if count == 1 else f"{count} alerts"


def _largest(counts) -> list[tuple[str, int]]:
    """Counts largest first, equal ones by name."""
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def _listed(counts) -> dict:
    """The largest counts, and the rest summed under "others"."""
    listed = dict(_largest(counts)[:DETAIL_ENTRIES])
    others = sum(counts.values()) - sum(listed.values())
    return {**listed, "others": others} if others else listed
