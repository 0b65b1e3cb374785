"""incident_log as the outbox, the same on every database: writing rows, and the connections and write
transactions that claims and stored webhooks use.

What each database does its own way (locks, the write queue, wake-ups, the batch of results) is asked of its
backend module, relay/store/sqlite.py or relay/store/postgres.py. The outbox's other rules each have a module:
which rows are due and their lease (claim.py), each key's rate budget (rate_budget.py), what became of an attempt
(complete.py), an alert's newest row (latest_states.py), and replay (requeue.py).
"""
from relay.masking import mask
from relay.store import models, postgres, sqlite, states
from relay.store.models import IncidentLog, db

_BACKENDS = {"sqlite": sqlite, "postgresql": postgres}


def backend(bind):
    """The backend module of an engine's or connection's database.

    Each offers the same functions: writer_connection, write_transaction, prepare_candidates, take,
    hold_rate_budget, hold_endpoints, read_holding_alerts, hold_routes, finish, watcher and migration_lock.
    """
    return _BACKENDS[bind.dialect.name]


def row_values(event: dict, source: str, route: str | None = None, alert: dict | None = None,
               status: str = states.PENDING, error: str | None = None, summary: str | None = None,
               events_url: str | None = None, cause: str | None = None, event_action: str | None = None) -> dict:
    """The column values of a new row for a validated event (pending unless told otherwise); summary is shown
    when the event carries none; bound for events_url (None: whichever PAGERDUTY_EVENTS_URL the sending process
    has); cause says why the relay sent it of its own accord; event_action names what an event without one is (a
    change event)."""
    payload = event.get("payload") or {}
    now = models.utcnow()
    return {
        "source": source, "route": route, "event_action": event_action or event["event_action"],
        "dedup_key": event.get("dedup_key"), "summary": payload.get("summary") or summary,
        "severity": payload.get("severity"),
        "routing_key": event["routing_key"], "routing_key_masked": mask(event["routing_key"]),
        "event": {k: v for k, v in event.items() if k != "routing_key"}, "alert": alert, "status": status,
        "attempts": 0, "error": error, "created_at": now, "updated_at": now, "next_attempt_at": now,
        "events_url": events_url, "superseded_by": None, "cause": cause,
    }


def record(event: dict, source: str, **values) -> IncidentLog:
    """Add one row as an ORM object, for callers that follow it (the job); the caller commits."""
    row = IncidentLog(**row_values(event, source, **values))
    db.session.add(row)
    return row


def record_many(conn, rows: list[dict]) -> list[int]:
    """Insert rows made by row_values and return their ids, in order; the caller commits."""
    if not rows:
        return []
    return backend(conn.get_bind() if hasattr(conn, "get_bind") else conn).insert_rows(conn, rows)


def store_rows(engine, rows: list[dict]) -> list[int]:
    """Write rows made by row_values in a write transaction of their own and return their ids, in order."""
    with writer_connection(engine) as conn, write_transaction(conn):
        return record_many(conn, rows)


def writer_connection(engine):
    """A connection for claims and stored webhooks, as its database wants one (see write_transaction)."""
    return backend(engine).writer_connection(engine)


def write_transaction(conn):
    """A transaction on a writer connection; on SQLite it holds the file's one write lock."""
    return backend(conn).write_transaction(conn)


def new_rows_watcher(engine):
    """A function (wake, stopping) that calls wake() when another process stores rows, until stopping is set;
    None when no other process can."""
    return backend(engine).watcher(engine)
