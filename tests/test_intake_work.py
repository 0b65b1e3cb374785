"""The work a stored webhook costs the store (bench/README.md): the statements a plain webhook sends, none for the
storm valve or heartbeats when no route has them, and the alerts' lock taken before their latest state is read
(on PostgreSQL both go in one round trip); on SQLite and PostgreSQL."""
import threading
import time

from sqlalchemy import event

from relay.store import outbox
from relay.store.latest_states import latest_states
from relay.store.models import db
from tests.helpers import alertmanager_notification, firing

KEY = "0123456789abcdef0123456789abcdef"
PLAIN = {"DEFAULT_ROUTE": {"name": "default", "routing_key": KEY}}
WITH_VALVE = {"ROUTES": [{"name": "web", "matchers": ['team="web"'], "routing_key": KEY,
                          "storm": {"max_triggers": 50, "per": "1m"}}], **PLAIN}


def statements_of_a_webhook(app, name: str) -> list[str]:
    """Post a 2-alert Alertmanager webhook and return the statements SQLAlchemy sent the store meanwhile."""
    sent = []

    def note(_conn, _cursor, statement, *_):
        sent.append(statement)

    body = alertmanager_notification([firing(f"{name}-{index}", team="web") for index in range(2)])
    client = app.test_client()
    with app.app_context():
        event.listen(db.engine, "before_cursor_execute", note)
        try:
            response = client.post("/webhooks/alertmanager", json=body)
        finally:
            event.remove(db.engine, "before_cursor_execute", note)
    assert response.status_code == 202, response.get_json()
    assert [entry["log_id"] for entry in response.get_json()["events"]]  # stored, with their ids
    return sent


def heads(statements: list[str]) -> list[str]:
    """Each statement's verb, and the table an INSERT writes."""
    return [" ".join(statement.split()[:3:2]) if statement.startswith("INSERT") else statement.split()[0]
            for statement in statements]


def test_a_plain_webhook_sends_the_store_only_its_read_and_its_insert(make_app, backend):
    sent = statements_of_a_webhook(make_app(**PLAIN), "Plain")
    # On PostgreSQL the alerts' locks and their latest states are read through psycopg's pipeline, beside
    # SQLAlchemy. No storm valve statement, no heartbeat statement: no route has either.
    assert heads(sent) == (["INSERT incident_log"] if backend == "postgresql" else ["SELECT", "INSERT incident_log"])
    assert not [statement for statement in sent if "storm" in statement or "heartbeat" in statement]


def test_a_route_with_a_storm_valve_counts_in_the_store(make_app):
    sent = statements_of_a_webhook(make_app(**WITH_VALVE), "Valve")
    assert [statement for statement in sent if "storm_trigger" in statement]  # what the test above looks for


def test_the_latest_states_wait_for_the_alerts_lock_and_see_what_its_holder_committed(make_app):
    app = make_app(**PLAIN)
    alert = (KEY, "dedup-locked")
    row = outbox.row_values({"routing_key": KEY, "event_action": "trigger", "dedup_key": alert[1],
                             "payload": {"summary": "s", "source": "x", "severity": "info"}}, source="test")
    seen, read = [], threading.Event()

    def second_webhook():
        with app.app_context(), outbox.writer_connection(db.engine) as conn, outbox.write_transaction(conn):
            seen.append(latest_states(conn, {alert}).get(alert))
            read.set()

    with app.app_context(), outbox.writer_connection(db.engine) as conn:
        with outbox.write_transaction(conn):
            assert latest_states(conn, {alert}) == {}
            (log_id,) = outbox.record_many(conn, [row])
            other = threading.Thread(target=second_webhook)
            other.start()
            time.sleep(0.5)
            assert not read.is_set()  # waiting for the lock this transaction holds
        other.join(10)
    assert read.is_set() and seen[0] is not None and seen[0].id == log_id
