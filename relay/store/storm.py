"""The storm valve, decided as a webhook's events are stored, inside their write transaction (like collapse.py):
past a route's max_triggers new alerts within its window, further new alerts on that route are held, kept in the
log and never sent; a held alert's repeats and its resolve are held too. The storm's state and its tally, which the
summary incident (relay/delivery/storm.py) reports, live here as well.

A new alert is a trigger whose alert has no row the relay heard yet, or whose latest row is a resolve: an alert
already paged keeps updating and resolving normally. New alerts are counted in the store (storm_trigger), sent and
held alike, so the count holds across processes and instances: on PostgreSQL one transaction at a time counts a
route (an advisory lock per route, taken after the alerts' locks), on SQLite the write lock serializes them.
"""
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, func, insert, or_, select, update

from relay.masking import mask
from relay.store import outbox, states
from relay.store.models import IncidentLog, Storm, StormTrigger
from relay.timeutil import duration_text

TRIGGER, RESOLVE = "trigger", "resolve"
SEVERITY_ORDER = ("critical", "error", "warning", "info")  # the summary takes the gravest held alert's


def follows_held(row: dict, last) -> bool:
    """Hold a row whose alert is held (a repeat of its trigger, its resolve) and tell whether it did."""
    if last is None or getattr(last, "status", None) != states.HELD:
        return False
    if row["event_action"] == TRIGGER and last.event_action != TRIGGER:
        return False  # a held alert that resolved fires again: a new alert
    where = f"row {last.id}" if last.id else "an earlier event of this request"
    row.update(status=states.HELD, error=f"held: its alert was held by the storm valve ({where}); not sent")
    return True


def is_new(row: dict, last) -> bool:
    """Tell whether a row opens an alert: a trigger of an alert unheard of, or whose latest word is a resolve."""
    return row["event_action"] == TRIGGER and (last is None or last.event_action == RESOLVE)


@dataclass
class _Counted:
    """A new alert counted by the valve, sent or held, until its row has an id."""

    index: int
    route: str
    held: bool
    alertname: str | None
    counted_label: str | None


@dataclass
class Valve:
    """One write transaction's storm valves: each route's new alerts within its window, read from the store once and
    counted on as the transaction's rows are decided."""

    conn: object
    storms: dict  # route name → routing.Storm
    now: datetime
    counts: dict = field(default_factory=dict)
    counted: list = field(default_factory=list)

    def hold_routes(self, routes) -> None:
        """Lock the routes among these that have a valve (all at once, in one order) and read their counts."""
        names = sorted({name for name in routes if name in self.storms})
        if not names:
            return
        outbox.backend(self.conn).hold_routes(self.conn, names)
        for name in names:
            since = self.now - timedelta(seconds=self.storms[name].per_seconds)
            self.counts[name] = self.conn.execute(select(func.count()).where(
                StormTrigger.route == name, StormTrigger.created_at > since)).scalar()

    def holds(self, index: int, route: str, row: dict, last, labels: dict) -> bool:
        """Count a new alert on a route with a valve, hold it past the route's max_triggers, and tell whether it
        did."""
        storm = self.storms.get(route)
        if storm is None or route not in self.counts or not is_new(row, last):
            return False
        self.counts[route] += 1
        held = self.counts[route] > storm.max_triggers
        counted_label = labels.get(storm.count_by) if storm.count_by else None
        if counted_label == row["routing_key"]:  # a key taken from this very label (routing_key_template)
            counted_label = mask(counted_label)
        self.counted.append(_Counted(index, route, held, labels.get("alertname"), counted_label))
        if held:
            row.update(status=states.HELD, error=f"held: storm on route {route} (more than {storm.max_triggers} "
                                                 f"new alerts in {duration_text(storm.per_seconds)}); not sent")
        return held

    def record(self, ids: list[int]) -> list[str]:
        """Write the counted alerts with their rows' ids, start or go on with each route's storm that held one, and
        return the routes whose storm began here."""
        if not self.counted:
            return []
        self.conn.execute(insert(StormTrigger), [
            {"route": c.route, "created_at": self.now, "held": c.held, "log_id": ids[c.index],
             "alertname": c.alertname, "counted_label": c.counted_label} for c in self.counted])
        begun = []
        for route in sorted({c.route for c in self.counted if c.held}):
            if outbox.backend(self.conn).insert_if_absent(self.conn, Storm.__table__, {
                    "route": route, "started_at": self.now, "last_held_at": self.now, "summary_held": 0}):
                begun.append(route)
            else:
                self.conn.execute(update(Storm).where(Storm.route == route).values(last_held_at=self.now))
        return begun


@dataclass
class Tally:
    """What a storm has held so far: alerts by alertname, by the count_by label, their routing keys and gravest
    severity."""

    held: int = 0
    by_alertname: Counter = field(default_factory=Counter)
    by_label: Counter = field(default_factory=Counter)
    routing_keys: list = field(default_factory=list)
    severity: str = "info"


def current(conn, route: str):
    """The route's storm while it lasts (started_at, last_held_at, summary_at, summary_held), or None."""
    return conn.execute(select(*Storm.__table__.c).where(Storm.route == route)).first()


def tally(conn, route: str, since: datetime) -> Tally:
    """Count the alerts the route has held since the storm began."""
    found = conn.execute(
        select(StormTrigger.alertname, StormTrigger.counted_label, IncidentLog.routing_key, IncidentLog.severity,
               func.count())
        .outerjoin(IncidentLog, IncidentLog.id == StormTrigger.log_id)
        .where(StormTrigger.route == route, StormTrigger.held, StormTrigger.created_at >= since)
        .group_by(StormTrigger.alertname, StormTrigger.counted_label, IncidentLog.routing_key,
                  IncidentLog.severity)).all()
    result, keys, severities = Tally(), set(), set()
    for alertname, label, routing_key, severity, count in found:
        result.held += count
        result.by_alertname[alertname or "(no alertname)"] += count
        if label is not None:
            result.by_label[label] += count
        if routing_key:  # a row pruned meanwhile has none left to say
            keys.add(routing_key)
        severities.add(severity)
    result.routing_keys = sorted(keys)
    result.severity = next((s for s in SEVERITY_ORDER if s in severities), "info")
    return result


def summarized(conn, route: str, now: datetime, held: int) -> None:
    """Note that the summary incident was triggered now, counting held alerts."""
    conn.execute(update(Storm).where(Storm.route == route).values(summary_at=now, summary_held=held))


def end(conn, route: str) -> None:
    """End the route's storm."""
    conn.execute(delete(Storm).where(Storm.route == route))


def prune(conn, storms: dict, now: datetime) -> None:
    """Forget counted alerts past their route's window, but not those a storm still tallies, and every count of a
    route that no longer has a valve."""
    conn.execute(delete(StormTrigger).where(StormTrigger.route.not_in(sorted(storms))))
    for route, storm in storms.items():
        before = now - timedelta(seconds=storm.per_seconds)
        running = select(Storm.started_at).where(Storm.route == route).scalar_subquery()
        conn.execute(delete(StormTrigger).where(
            StormTrigger.route == route, StormTrigger.created_at < before,
            or_(~StormTrigger.held, running.is_(None), StormTrigger.created_at < running)))


def routes(conn) -> list[str]:
    """The routes in a storm now."""
    return list(conn.execute(select(Storm.route).order_by(Storm.route)).scalars())
