"""Retention: `relay prune` and the worker's automatic prune delete finished rows only."""
import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from relay.delivery import worker
from relay.store import outbox, retention
from relay.store.models import DeliveryAttempt, IncidentLog, db, utcnow
from tests.helpers import wait_until


def add_rows(app, routing_key, age_days, statuses):
    """Rows in the given states, backdated by age_days, each with one attempt."""
    ids = []
    with app.app_context():
        for n, status in enumerate(statuses):
            row = outbox.record({"routing_key": routing_key, "event_action": "resolve", "dedup_key": f"d{n}"},
                                source="test", status=status)
            db.session.flush()
            db.session.add(DeliveryAttempt(log_id=row.id, outcome="delivered"))
            ids.append(row.id)
        db.session.execute(update(IncidentLog).where(IncidentLog.id.in_(ids)).values(
            created_at=utcnow() - timedelta(days=age_days)))
        db.session.commit()
    return ids


def remaining(app):
    with app.app_context():
        statuses = db.session.scalars(select(IncidentLog.status).order_by(IncidentLog.id)).all()
        attempts = db.session.scalar(select(func.count()).select_from(DeliveryAttempt))
        return statuses, attempts


def test_prune_command_deletes_old_finished_rows_and_their_attempts(make_app, routing_key):
    app = make_app()
    add_rows(app, routing_key, 40, ["delivered", "failed", "pending", "retrying", "unrouted"])
    add_rows(app, routing_key, 1, ["delivered"])
    result = app.test_cli_runner().invoke(args=["relay", "prune", "--older-than", "30d"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["deleted"] == 3
    assert remaining(app) == (["pending", "retrying", "delivered"], 3)


def test_prune_by_status(make_app, routing_key):
    app = make_app()
    add_rows(app, routing_key, 40, ["delivered", "failed", "dead"])
    result = app.test_cli_runner().invoke(args=["relay", "prune", "--older-than", "7d", "--status", "failed"])
    assert json.loads(result.output)["deleted"] == 1
    assert remaining(app)[0] == ["delivered", "dead"]


@pytest.mark.parametrize("args, message", [(["--older-than", "soon"], "not a duration"),
                                           (["--older-than", "1d", "--status", "pending"], "pending")])
def test_prune_refuses_bad_arguments(make_app, args, message):
    result = make_app().test_cli_runner().invoke(args=["relay", "prune", *args])
    assert result.exit_code == 2 and message in result.output


def test_prune_works_in_batches(make_app, routing_key, monkeypatch):
    app = make_app()
    monkeypatch.setattr(retention, "BATCH", 2)
    add_rows(app, routing_key, 40, ["delivered"] * 5)
    with app.app_context():
        assert retention.prune(db.engine, utcnow() - timedelta(days=1)) == 5


def test_worker_prunes_delivered_rows_past_retention(make_app, routing_key):
    app = make_app(RELAY_PRUNE_DELIVERED_AFTER=timedelta(days=30))
    add_rows(app, routing_key, 40, ["delivered", "failed"])
    running = worker.DeliveryWorker(app)
    running.next_prune = 0  # due now rather than a minute after start
    running.start()
    try:
        wait_until(lambda: remaining(app)[0] == ["failed"], 5, "the automatic prune")
    finally:
        running.stop()
    assert remaining(app)[0] == ["failed"]
