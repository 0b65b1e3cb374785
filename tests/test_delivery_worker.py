"""The in-process delivery worker keeps delivering when its own store connection breaks."""
import pytest
from sqlalchemy import func, select

from relay import delivery, outbox
from relay.models import db
from tests.helpers import wait_until


def test_worker_recovers_when_postgresql_drops_its_connection(app, pd, routing_key, caplog):
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        pytest.skip("a SQLite file has no server to drop the connection")
    worker = delivery.current()
    held = wait_until(lambda: worker.conn, timeout=5, message="the worker's own connection")
    backend = held.connection.dbapi_connection.info.backend_pid
    with app.app_context():  # as a database restart or a failover would
        assert db.session.execute(select(func.pg_terminate_backend(backend))).scalar()
        db.session.commit()
        outbox.record({"routing_key": routing_key, "event_action": "trigger", "dedup_key": "after-break",
                       "payload": {"summary": "s", "source": "x", "severity": "info"}}, source="test")
        db.session.commit()
    delivery.wake()
    wait_until(lambda: pd.accepted(), timeout=10, message="the event delivered after the break")
    assert pd.accepted()[0]["dedup_key"] == "after-break"
    assert "delivery step failed" in caplog.text  # the break was met and survived, not missed
