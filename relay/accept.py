"""Accepting alerts, the service every face shares (the webhook, the API's and the CLI's previews): a source and
its parsed payload in; the planned events out, and for a webhook stored as incident_log rows with delivery woken."""
from types import ModuleType

from flask import current_app

from relay import metrics
from relay.delivery import worker
from relay.errors import RelayError
from relay.intake.mapping import Planned, plan
from relay.intake.payload import Limits
from relay.intake.sources import SOURCES, get_source
from relay.masking import mask
from relay.store import outbox, states
from relay.store.models import db


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
    alerts = source.to_alerts(payload, settings)
    limits.check_alerts(alerts)
    return plan(alerts, current_app.extensions["relay.intake.routing"])


def receive(source: ModuleType, payload) -> list[dict]:
    """Plan a notification's events, store them together, wake delivery, and describe each stored event."""
    planned = planned_events(source, payload)
    ids = store(source.NAME, planned)
    return [describe(item, log_id) for item, log_id in zip(planned, ids)]


def preview(source: ModuleType, payload) -> list[dict]:
    """Describe in full the events a payload would produce, storing and sending nothing."""
    return [preview_entry(item) for item in planned_events(source, payload)]


def store(source_name: str, planned: list[Planned]) -> list[int]:
    """Write one incident_log row per planned event, commit them together, and return their ids."""
    rows = [outbox.row_values(item.event, source=source_name, route=item.route, alert=item.alert.as_dict(),
                              status=states.PENDING if item.routed else states.UNROUTED, error=item.problem)
            for item in planned]
    ids = outbox.store_rows(db.engine, rows)
    worker.wake()
    metrics.events_stored(source_name, planned)
    return ids


def describe(item: Planned, log_id=None) -> dict:
    """Summarize one planned event for an answer, routing key masked."""
    entry = {"route": item.route, "event_action": item.event["event_action"],
             "dedup_key": item.event.get("dedup_key"), "routing_key": mask(item.event["routing_key"])}
    if log_id is not None:
        entry = {"log_id": log_id, **entry}
    if item.problem:
        entry.update(status=states.UNROUTED, problem=item.problem)
    return entry


def preview_entry(item: Planned) -> dict:
    """Describe a planned event in full, routing key masked."""
    return {**describe(item), "event": {**item.event, "routing_key": mask(item.event["routing_key"])}}
