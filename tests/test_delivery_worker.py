"""The in-process delivery worker keeps delivering when its own store connection breaks."""
import time

import pytest
from sqlalchemy import func, select

from relay.delivery import worker
from relay.store import outbox
from relay.store.models import IncidentLog, db
from tests.helpers import wait_until


def test_worker_recovers_when_postgresql_drops_its_connection(app, pd, routing_key, caplog):
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        pytest.skip("a SQLite file has no server to drop the connection")
    running = worker.current()
    held = wait_until(lambda: running.conn, timeout=5, message="the worker's own connection")
    backend = held.connection.dbapi_connection.info.backend_pid
    with app.app_context():  # as a database restart or a failover would
        assert db.session.execute(select(func.pg_terminate_backend(backend))).scalar()
        db.session.commit()
        outbox.record({"routing_key": routing_key, "event_action": "trigger", "dedup_key": "after-break",
                       "payload": {"summary": "s", "source": "x", "severity": "info"}}, source="test")
        db.session.commit()
    running.wake()
    wait_until(lambda: pd.accepted(), timeout=10, message="the event delivered after the break")
    assert pd.accepted()[0]["dedup_key"] == "after-break"
    # The break was met and survived (waited for: under load the step that meets it may come after the send).
    wait_until(lambda: "delivery connection lost: database unreachable: " in caplog.text, timeout=10,
               message="the worker meeting the dropped connection")


def test_a_result_whose_recording_failed_is_recorded_later_not_sent_again(delivering, backend, pd, routing_key,
                                                                            caplog):
    if backend != "postgresql":
        pytest.skip("a SQLite file has no server to drop the connection")
    app = delivering(RELAY_DELIVERY_POLL_SECONDS=30)  # no poll in between: the answer's recording hits the break
    running = worker.current()
    pd.set_latency(0.5)  # long enough to drop the worker's connection while the event is on the wire
    with app.app_context():
        row = outbox.record({"routing_key": routing_key, "event_action": "trigger", "dedup_key": "in-flight",
                             "payload": {"summary": "s", "source": "x", "severity": "info"}}, source="test")
        db.session.commit()
        log_id = row.id
    running.wake()
    wait_until(lambda: running.inflight == 1, timeout=5, message="the event on its way")
    time.sleep(0.2)  # the loop has looked for more work and now waits for the answer, 0.3 s away
    backend = running.conn.connection.dbapi_connection.info.backend_pid
    with app.app_context():
        assert db.session.execute(select(func.pg_terminate_backend(backend))).scalar()
        db.session.commit()

    def status():
        with app.app_context():
            found = db.session.get(IncidentLog, log_id)
            db.session.commit()
            return found.status == "delivered" and [attempt.outcome for attempt in found.attempt_rows]

    # Well within the 5 s lease: the result was kept and recorded, not left for a takeover to send again.
    assert wait_until(status, timeout=4, message="the kept result recorded") == ["delivered"]
    assert len(pd.accepted()) == 1
    assert "delivery connection lost" in caplog.text  # the recording did fail once
