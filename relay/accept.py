"""Accepting alerts, the service every face shares (the webhook, the API's and the CLI's previews): a source and
its parsed payload in; the planned events out, and for a webhook stored as incident_log rows with delivery woken."""
import logging
from dataclasses import replace
from datetime import timedelta
from types import ModuleType, SimpleNamespace

from flask import current_app
from marshmallow import ValidationError
from sqlalchemy import select

from relay import metrics
from relay.delivery import heartbeats, worker
from relay.delivery import storm as storm_summary
from relay.errors import BadInput, RelayError, validation_fields
from relay.intake.alert import ROUTING_KEY_LABEL, TRUNCATED, Alert
from relay.intake.mapping import Planned, older_state, plan
from relay.intake.payload import Limits
from relay.intake.routing import PROXY
from relay.intake.sources import SOURCES, get_source, meant_for, pagerduty
from relay.masking import mask
from relay.pagerduty.event import change_event_schema
from relay.store import collapse, outbox, states, storm
from relay.store.latest_states import latest_states
from relay.store.models import IncidentLog, db, utcnow

log = logging.getLogger(__name__)


class UnknownSource(RelayError):
    """The URL or command names a source the relay does not have."""

    status_code = 404
    code = "unknown_source"


def source_named(name: str) -> ModuleType:
    """Return the registered source of that name, or raise UnknownSource listing the known ones."""
    source = get_source(name)
    if source is None:
        raise UnknownSource(f"no source named {name!r}; known: {', '.join(SOURCES)}")
    return source


def planned_events(source: ModuleType, payload) -> list[Planned]:
    """Map a payload through its source and the routes to the events it calls for (nothing stored)."""
    settings = current_app.extensions["relay.source_settings"].get(source.NAME)
    limits = Limits.from_config(current_app.config)
    if hasattr(source, "alert_count"):  # counted before a single alert is loaded
        limits.check_count(source.alert_count(payload))
    try:
        alerts = source.to_alerts(payload, settings)
    except ValidationError as exc:
        raise with_hint(exc, source, payload) from None
    limits.check_alerts(alerts)
    alerts = [with_trigger_labels(alert) for alert in alerts]
    return plan(alerts, current_app.extensions["relay.intake.routing"])


def with_trigger_labels(alert: Alert) -> Alert:
    """Give a drop-in follow-up (acknowledge, resolve: only a routing key and a dedup key) the labels of its alert's
    latest trigger from the same sender, so that it takes the routes its trigger took."""
    if alert.event is None or alert.event["event_action"] == "trigger":
        return alert
    sender = alert.labels[ROUTING_KEY_LABEL]
    stored = db.session.execute(select(IncidentLog.alert).where(
        IncidentLog.source == alert.source, IncidentLog.dedup_key == alert.dedup_key,
        IncidentLog.event_action == "trigger").order_by(IncidentLog.id.desc()).limit(1)).scalar()
    db.session.commit()  # end the read: the rows are written on a connection of their own
    labels = (stored or {}).get("labels") or {}
    if labels.get(ROUTING_KEY_LABEL) != mask(sender):  # another sender's alert, or none stored
        return alert
    return replace(alert, labels={**labels, ROUTING_KEY_LABEL: sender})  # stored masked: the key is the sender's


def with_hint(exc: ValidationError, source: ModuleType, payload) -> ValidationError | BadInput:
    """The error a source raised for a payload, saying which webhook the payload looks meant for when it is
    another's."""
    other = meant_for(payload, source, current_app.extensions["relay.source_settings"])
    if other is None:
        return exc
    return BadInput(f"invalid input; the body looks meant for /webhooks/{other.NAME}: send it there",
                    validation_fields(exc))


def receive(source: ModuleType, payload) -> list[dict]:
    """Plan a notification's events, store them together, wake delivery, and describe each stored event."""
    planned, beats = without_heartbeats(planned_events(source, payload))
    if beats:
        heartbeats.record_beats(db.engine, beats, current_app.extensions["relay.intake.routing"], utcnow(),
                                current_app.config["PAGERDUTY_EVENTS_URL"])
    stored = store(source.NAME, planned)
    report_truncation(source.NAME, planned)
    return [*(describe(item, *stored_as) for item, stored_as in zip(planned, stored)),
            *({**describe(item), "status": HEARTBEAT} for item in beats)]


CHANGE = "change"  # a change event's event_action in incident_log (the event itself carries none)


def receive_change(event) -> int:
    """Check a change event (PagerDuty's rules, the pagerduty source's allow-list), store it for PagerDuty's change
    endpoint (PAGERDUTY_CHANGE_EVENTS_URL), wake delivery, and return its row's id. A change event has no dedup
    key: no order, collapse or staleness applies to it."""
    settings = current_app.extensions["relay.source_settings"].get(pagerduty.NAME)
    loaded = change_event_schema.load(pagerduty.checked_change(event, settings))
    row = outbox.row_values(loaded, source=pagerduty.NAME, route=PROXY, event_action=CHANGE,
                            events_url=current_app.config["PAGERDUTY_CHANGE_EVENTS_URL"])
    log_id, = outbox.store_rows(db.engine, [row])
    worker.wake()
    metrics.event_stored(pagerduty.NAME, CHANGE, PROXY)
    return log_id


def answer_dedup_key(events: list[dict]) -> str | None:
    """The dedup key a drop-in sender is answered with: the one its first routed event takes to PagerDuty."""
    routed = [event for event in events if event.get("status") != states.UNROUTED]
    return (routed or events)[0]["dedup_key"] if events else None


def preview(source: ModuleType, payload) -> list[dict]:
    """Describe in full the events a payload would produce, storing and sending nothing."""
    planned, beats = without_heartbeats(planned_events(source, payload))
    return [*map(preview_entry, planned), *({**preview_entry(item), "status": HEARTBEAT} for item in beats)]


HEARTBEAT = "heartbeat"  # an alert of a heartbeat route: recorded as a beat, never sent as an incident


def without_heartbeats(planned: list[Planned]) -> tuple[list[Planned], list[Planned]]:
    """Split the events to store from the alerts of heartbeat routes (relay/delivery/heartbeats.py)."""
    routing = current_app.extensions["relay.intake.routing"]
    if not routing.has_heartbeats:
        return planned, []
    beats = [routing.heartbeat_of(item.route) is not None for item in planned]
    return ([item for item, beat in zip(planned, beats) if not beat],
            [item for item, beat in zip(planned, beats) if beat])


def store(source_name: str, planned: list[Planned]) -> list[tuple[int, str | None, str | None, int | None]]:
    """Write one incident_log row per planned event, commit them together, and return each row's id with the state
    it was stored in when that is never to be sent (stale, superseded, held; None when it will be sent), why, and
    the row superseding it.
    Each row is bound for this process's PAGERDUTY_EVENTS_URL, whichever delivery process sends it."""
    events_url = current_app.config["PAGERDUTY_EVENTS_URL"]
    rows = [outbox.row_values(item.event, source=source_name, route=item.route, alert=item.alert.as_dict(),
                              status=states.PENDING if item.routed else states.UNROUTED, error=item.problem,
                              summary=item.summary, events_url=events_url)
            for item in planned]
    for item, row in zip(planned, rows):
        if item.delay_seconds:
            row["next_attempt_at"] += timedelta(seconds=item.delay_seconds)
    with outbox.writer_connection(db.engine) as conn, outbox.write_transaction(conn):
        valve = storm.Valve(conn, current_app.extensions["relay.intake.routing"].storms(),
                            rows[0]["created_at"] if rows else None)
        superseded = _compare_with_latest(conn, planned, rows, valve)
        ids = outbox.record_many(conn, rows)
        collapse.supersede_older(conn, ids, superseded, rows[0]["created_at"] if rows else None)
        outbox.record_many(conn, storm_summary.begun(conn, valve.storms, valve.record(ids), valve.now))
    worker.wake()
    metrics.events_stored(source_name, planned)
    metrics.events_held(row["route"] for row in rows if row["status"] == states.HELD)
    metrics.events_not_sent(source_name, rows, superseded)
    return [(log_id, row["status"], row["error"], row.get("superseded_by")) if row["status"] in NOT_SENT
            else (log_id, None, None, None) for log_id, row in zip(ids, rows)]


def report_truncation(source_name: str, planned: list[Planned]) -> None:
    """Log and count, once per notification, the alerts its sender left out (Alertmanager's or Grafana's
    max_alerts): they were never sent, so nothing pages for them."""
    truncated = planned[0].alert.details.get(TRUNCATED) if planned else None
    if not truncated:
        return
    log.warning("notification truncated by its sender: %d alert(s) not sent; raise max_alerts on its webhook",
                truncated, extra={"source": source_name, "truncated_alerts": truncated})
    metrics.alerts_truncated(source_name, truncated)


NOT_SENT = states.NOT_SENT


def _compare_with_latest(conn, planned: list[Planned], rows: list[dict], valve: storm.Valve) -> list[list[int]]:
    """Compare each event with its alert's newest row: mark it stale when it reports an older state (a resolve
    before its trigger, a lagging replica's firing after the resolve), so it never reopens or closes an incident
    out of turn, held when its alert is held or it is a new alert past its route's storm valve
    (relay/store/storm.py), or superseded when it need not be sent (relay/store/collapse.py); return, per row, the
    older rows it supersedes."""
    pending = [index for index, row in enumerate(rows) if row["status"] == states.PENDING and row["dedup_key"]]
    latest = latest_states(conn, {(rows[i]["routing_key"], rows[i]["dedup_key"]) for i in pending})
    valve.hold_routes(rows[i]["route"] for i in pending if rows[i]["event_action"] == collapse.TRIGGER)
    routing = current_app.extensions["relay.intake.routing"]
    superseded = [[] for _ in rows]
    for index in pending:
        item, row = planned[index], rows[index]
        alert_key = (row["routing_key"], row["dedup_key"])
        last = latest.get(alert_key)
        older = last and older_state(item.alert, row["event_action"], last.event_action, last.alert)
        if older:
            where = f"row {last.id}" if last.id else "an earlier event of this request"
            row.update(status=states.STALE, error=f"stale: {older} ({where}); not sent")
            continue
        if not (storm.follows_held(row, last) or valve.holds(index, item.route, row, last, item.alert.labels)):
            superseded[index] = collapse.decide(conn, row, last, routing.sends_flapping(item.route))
        # later events of this request compare with this one
        latest[alert_key] = SimpleNamespace(id=None, event_action=row["event_action"], alert=row["alert"],
                                            status=row["status"])
    return superseded


def describe(item: Planned, log_id=None, not_sent: str | None = None, why: str | None = None,
             superseded_by: int | None = None) -> dict:
    """Summarize one planned event for an answer, routing key masked."""
    entry = {"route": item.route, "event_action": item.event["event_action"],
             "dedup_key": item.event.get("dedup_key"), "routing_key": mask(item.event["routing_key"])}
    if log_id is not None:
        entry = {"log_id": log_id, **entry}
    if item.delay_seconds:
        entry["send_after_seconds"] = item.delay_seconds
    if item.problem:
        entry.update(status=states.UNROUTED, problem=item.problem)
    elif not_sent:
        entry.update(status=not_sent, problem=why)
        if superseded_by is not None:
            entry["superseded_by"] = superseded_by
    return entry


def preview_entry(item: Planned) -> dict:
    """Describe a planned event in full, routing key masked."""
    return {**describe(item), "event": {**item.event, "routing_key": mask(item.event["routing_key"])}}
