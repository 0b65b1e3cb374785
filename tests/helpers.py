"""Small helpers shared by the test modules."""
import json
import time
from pathlib import Path

from hypothesis import strategies as st

from relay.store import outbox
from relay.store.models import IncidentLog, db

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> dict:
    """Load a JSON payload from tests/fixtures."""
    return json.loads((FIXTURES / name).read_text())


def statuses(app) -> list[str]:
    """The status of every incident_log row, oldest first."""
    with app.app_context():
        found = [row.status for row in db.session.query(IncidentLog).order_by(IncidentLog.id)]
        db.session.commit()
        return found


def wait_until(predicate, timeout: float = 15.0, message: str = "condition", interval: float = 0.05):
    """Poll predicate until it returns a truthy value and return that value; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message} not reached in {timeout}s")
        time.sleep(interval)


def messages_at(err, path: tuple):
    """Walk a marshmallow ValidationError's messages along a field path."""
    node = err.messages
    for key in path:
        node = node[key]
    return node


def set_at(path, value):
    """Build a mutator that sets the field at path (keys and indexes) to value."""

    def mutate(payload):
        node = payload
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        return payload

    return mutate


def delete_at(path):
    """Build a mutator that removes the field at path."""

    def mutate(payload):
        node = payload
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
        return payload

    return mutate


def mutated(draw, value: dict, names: list[str], junk) -> dict:
    """For a hypothesis @composite: value with up to two of its fields removed or replaced by what junk draws; a
    dotted name ("payload.summary") reaches into a nested object, when there is one."""
    for path in draw(st.lists(st.sampled_from(names), max_size=2)):
        *outer, name = path.split(".")
        parent = value
        for key in outer:
            if isinstance(parent.get(key), dict):
                parent = parent[key]
        if draw(st.booleans()):
            parent.pop(name, None)
        else:
            parent[name] = draw(junk)
    return value


def firing(name: str, annotations: dict | None = None, **labels) -> dict:
    """One firing Alertmanager alert named name, with more labels if given."""
    return {"status": "firing", "labels": {"alertname": name, **labels}, "annotations": annotations or {},
            "startsAt": "2026-11-26T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z"}


def alertmanager_notification(alerts: list[dict]) -> dict:
    """An Alertmanager webhook (version 4) carrying the given alerts."""
    return {"version": "4", "groupKey": "{}:{}", "status": alerts[0]["status"], "receiver": "relay",
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am:9093",
            "truncatedAlerts": 0, "alerts": alerts}


def trigger_event(routing_key: str, dedup_key: str) -> dict:
    """A minimal Events API trigger, summarized by its dedup key."""
    return {"routing_key": routing_key, "event_action": "trigger", "dedup_key": dedup_key,
            "payload": {"summary": dedup_key, "source": "x", "severity": "info"}}


def store_events(app, events: list[dict]) -> list[int]:
    """Store events as the outbox's pending rows, straight through the store; return their ids."""
    with app.app_context():
        return outbox.store_rows(db.engine, [outbox.row_values(e, source="test") for e in events])
