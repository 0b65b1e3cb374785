"""GET /readyz: 200 when the store answers, the delivery worker runs and the outbox keeps up; else 503 naming
every failed check, and never a 500."""
import os
import time
from datetime import timedelta

import pytest
from conftest import app_config

from relay import create_app
from relay.delivery import worker
from relay.store.models import IncidentLog, db, utcnow
from relay.web import health
from tests.helpers import alertmanager_notification, firing

KEY = "d0d0d0d0d0d0d0d0d0d0d0d0d0d0d1b1"
DEFAULT_ROUTE = {"name": "default", "routing_key": KEY}


def alerts(count: int, start: int = 0) -> dict:
    """An Alertmanager notification with `count` distinct firing alerts."""
    return alertmanager_notification([firing("Test", n=str(n)) for n in range(start, start + count)])


def readyz(client):
    response = client.get("/readyz")
    assert response.status_code in (200, 503), response.status_code
    return response.status_code, response.get_json()


def test_ready_with_a_running_worker(client):
    status, body = readyz(client)
    assert status == 200, body
    assert body["status"] == "ready"
    assert body["checks"]["store"]["ok"] and body["checks"]["delivery_worker"] == {"ok": True, "state": "running"}
    assert body["checks"]["backlog"] == {"ok": True, "open": 0, "max": 10000}
    assert body["checks"]["oldest_pending_age"]["max"] == 900


def test_not_ready_when_the_worker_stops_or_stalls(app, client):
    assert readyz(client)[0] == 200
    running = worker.current()
    running.heartbeat = time.monotonic() - 3600  # its loop has not come round for an hour
    status, body = readyz(client)
    assert status == 503 and body["status"] == "not ready"
    assert body["reasons"] == ["delivery worker stalled (its loop has not run recently)"]

    worker.stop()
    status, body = readyz(client)
    assert status == 503
    assert body["reasons"] == ["delivery worker not running in this process"]
    assert body["checks"]["delivery_worker"]["ok"] is False


def test_worker_check_skipped_when_delivery_runs_elsewhere(make_app):
    status, body = readyz(make_app(RELAY_DELIVERY=False).test_client())
    assert status == 200
    assert body["checks"]["delivery_worker"]["ok"] is True
    assert "RELAY_DELIVERY=0" in body["checks"]["delivery_worker"]["skipped"]


def test_web_workers_read_the_delivery_process_heartbeat(make_app, tmp_path):
    heartbeat = tmp_path / "delivery.heartbeat"
    client = make_app(RELAY_DELIVERY=False, RELAY_DELIVERY_HEARTBEAT_FILE=str(heartbeat)).test_client()
    status, body = readyz(client)
    assert status == 503 and body["reasons"] == ["the delivery process has not started yet"]

    heartbeat.touch()
    status, body = readyz(client)
    assert status == 200, body
    assert body["checks"]["delivery_worker"]["state"] == "running in its own process"

    stale = time.time() - 45
    os.utime(heartbeat, (stale, stale))
    status, body = readyz(client)
    assert status == 503 and body["reasons"] == ["the delivery process has not beaten for 45s"]
    assert body["checks"]["delivery_worker"]["state"] == "stalled"


def test_healthz_fails_once_the_delivery_process_has_not_beaten_for_its_threshold(make_app, tmp_path, monkeypatch):
    heartbeat = tmp_path / "delivery.heartbeat"
    client = make_app(RELAY_DELIVERY=False, RELAY_DELIVERY_HEARTBEAT_FILE=str(heartbeat)).test_client()
    monkeypatch.setattr(health, "_STARTED", time.monotonic())  # as in a web worker that has just started
    assert client.get("/healthz").status_code == 200  # not started yet, within its first threshold

    heartbeat.touch()
    assert client.get("/healthz").status_code == 200

    stale = time.time() - 45
    os.utime(heartbeat, (stale, stale))
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.get_json() == {"status": "unhealthy", "reason": "the delivery process has not beaten for 45s"}

    heartbeat.unlink()  # never started, and the web worker has served for longer than the threshold
    monkeypatch.setattr(health, "_STARTED", time.monotonic() - 31)
    assert client.get("/healthz").status_code == 503


def test_not_ready_without_a_worker_when_delivery_is_on(make_app):
    status, body = readyz(make_app().test_client())  # RELAY_DELIVERY on, but no worker was started here
    assert status == 503 and body["reasons"] == ["delivery worker not running in this process"]


def test_backlog_threshold(make_app):
    app = make_app(RELAY_DELIVERY=False, DEFAULT_ROUTE=DEFAULT_ROUTE, RELAY_READY_MAX_BACKLOG=3)
    client = app.test_client()
    client.post("/webhooks/alertmanager", json=alerts(2))
    status, body = readyz(client)
    assert status == 200 and body["checks"]["backlog"] == {"ok": True, "open": 2, "max": 3}

    client.post("/webhooks/alertmanager", json=alerts(1, start=2))
    status, body = readyz(client)
    assert status == 503
    assert body["reasons"] == ["outbox backlog 3 is not under RELAY_READY_MAX_BACKLOG=3"]
    assert body["checks"]["backlog"] == {"ok": False, "open": 3, "max": 3}

    with app.app_context():  # delivered rows are not backlog
        db.session.query(IncidentLog).update({"status": "delivered"})
        db.session.commit()
    assert readyz(client)[0] == 200


def test_retrying_rows_are_backlog_too(make_app):
    app = make_app(RELAY_DELIVERY=False, DEFAULT_ROUTE=DEFAULT_ROUTE, RELAY_READY_MAX_BACKLOG=1)
    client = app.test_client()
    client.post("/webhooks/alertmanager", json=alerts(1))
    with app.app_context():
        db.session.query(IncidentLog).update({"status": "retrying"})
        db.session.commit()
    status, body = readyz(client)
    assert status == 503 and body["checks"]["backlog"]["open"] == 1


def test_oldest_pending_age_threshold(make_app):
    app = make_app(RELAY_DELIVERY=False, DEFAULT_ROUTE=DEFAULT_ROUTE, RELAY_READY_MAX_PENDING_AGE_SECONDS=60)
    client = app.test_client()
    client.post("/webhooks/alertmanager", json=alerts(2))
    status, body = readyz(client)
    assert status == 200 and body["checks"]["oldest_pending_age"]["seconds"] < 60

    with app.app_context():
        oldest = db.session.query(IncidentLog).order_by(IncidentLog.id).first()
        oldest.created_at = utcnow() - timedelta(seconds=120)
        db.session.commit()
    status, body = readyz(client)
    assert status == 503
    [reason] = body["reasons"]
    assert reason.startswith("oldest pending row is 12")
    assert reason.endswith("s old, not under RELAY_READY_MAX_PENDING_AGE_SECONDS=60")
    assert 120 <= body["checks"]["oldest_pending_age"]["seconds"] < 130


def test_every_failed_check_is_named(make_app):
    app = make_app(DEFAULT_ROUTE=DEFAULT_ROUTE, RELAY_READY_MAX_BACKLOG=1, RELAY_READY_MAX_PENDING_AGE_SECONDS=30)
    client = app.test_client()
    client.post("/webhooks/alertmanager", json=alerts(1))
    with app.app_context():
        db.session.query(IncidentLog).update({"created_at": utcnow() - timedelta(minutes=10)})
        db.session.commit()
    status, body = readyz(client)
    assert status == 503
    assert [reason.split(" ")[0] for reason in body["reasons"]] == ["delivery", "outbox", "oldest"]


def test_zero_turns_the_outbox_checks_off(make_app):
    app = make_app(RELAY_DELIVERY=False, DEFAULT_ROUTE=DEFAULT_ROUTE, RELAY_READY_MAX_BACKLOG=0,
                   RELAY_READY_MAX_PENDING_AGE_SECONDS=0)
    client = app.test_client()
    client.post("/webhooks/alertmanager", json=alerts(3))
    with app.app_context():
        db.session.query(IncidentLog).update({"created_at": utcnow() - timedelta(days=2)})
        db.session.commit()
    assert readyz(client)[0] == 200


@pytest.mark.parametrize("url", ["postgresql+psycopg://postgres@127.0.0.1:1/nowhere",
                                 "sqlite:////nonexistent-relay-dir/relay.sqlite3"])
def test_a_store_that_is_down_is_a_reason_not_a_500(url, pd):
    app = create_app(app_config(url, pd.events_url, RELAY_DELIVERY=False))
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "not ready"
    [reason] = body["reasons"]
    assert reason.startswith("database unreachable: ")  # why and where: tests/test_store_down.py
    assert "postgres@" not in response.get_data(as_text=True)  # no user


def test_healthz_stays_up_when_the_store_is_down(pd):
    app = create_app(app_config("sqlite:////nonexistent-relay-dir/relay.sqlite3", pd.events_url))
    assert app.test_client().get("/healthz").status_code == 200
