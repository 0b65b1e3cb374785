"""The store down: senders get 503 with Retry-After and can send again once it is back, delivery waits and goes on,
/readyz and the log say why and where in a few words, and never with a user or password.

PostgreSQL goes away and comes back through a TCP proxy between the relay and it; SQLite is made unwritable for
real (a read-only connection, a write lock held past the busy timeout, a file that cannot be opened).
"""
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa
from conftest import app_config, fresh_postgres_database
from flask_migrate import upgrade

from relay import create_app
from relay.delivery import worker
from relay.store import failures, postgres
from relay.store import sqlite as sqlite_store
from relay.store.models import IncidentLog, db
from tests.helpers import alertmanager_notification, firing, wait_until
from tests.processes import ROOT, free_port
from tests.tcp_proxy import TcpProxy

KEY = "d0d0d0d0d0d0d0d0d0d0d0d0d0d0d1b1"
DEFAULT_ROUTE = {"name": "default", "routing_key": KEY}
PASSWORD = "hunter2-not-for-logs"  # PostgreSQL here trusts local logins: the password is carried, never checked


def notification(name="StoreDown"):
    return alertmanager_notification([firing(name)])


def proxied(url: str, proxy: TcpProxy) -> str:
    """The database URL through the proxy, with a password to watch for."""
    return sa.engine.make_url(url).set(port=proxy.port, password=PASSWORD).render_as_string(hide_password=False)


def json_lines(err: str) -> list[dict]:
    """Every stderr line, each of which must be one JSON object."""
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def assert_unavailable(response, html=False):
    """A 503 with Retry-After whose body says the store is unavailable and names no host, port, user or password."""
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.headers["Retry-After"] == "5"
    text = response.get_data(as_text=True)
    for secret in (PASSWORD, "127.0.0.1", "postgres@", "user"):
        assert secret not in text
    if html:
        assert response.mimetype == "text/html" and "Store unavailable" in text
        assert "the store is unavailable (database unreachable: connection refused)" in text
        return
    assert response.get_json() == {"error": {
        "code": "store_unavailable",
        "message": "the store is unavailable (database unreachable: connection refused); try again later"}}


@pytest.fixture
def proxy():
    with TcpProxy("127.0.0.1", 5432) as running:
        yield running


def test_webhooks_api_and_page_get_503_while_postgres_is_away_and_succeed_once_it_is_back(database_urls, pd, proxy,
                                                                                           capfd):
    app = create_app(app_config(proxied(database_urls("postgresql"), proxy), pd.events_url, RELAY_DELIVERY=False,
                                DEFAULT_ROUTE=DEFAULT_ROUTE))
    client = app.test_client()
    before = client.post("/webhooks/alertmanager", json=notification("Before"))  # leaves a pooled connection
    assert before.status_code == 202
    proxy.cut()  # as a database restart does: the pooled connection is dead, and a new one works
    assert client.post("/webhooks/alertmanager", json=notification("Restarted")).status_code == 202
    capfd.readouterr()

    proxy.stop()  # the pooled connection is cut, and new ones are refused
    for _ in range(3):
        assert_unavailable(client.post("/webhooks/alertmanager", json=notification("During")))
    assert_unavailable(client.post("/api/v1/incidents", json={"title": "t", "service_key": KEY}))
    assert_unavailable(client.get("/api/v1/log"))
    assert_unavailable(client.get("/"), html=True)
    readyz = client.get("/readyz")
    assert readyz.status_code == 503
    assert readyz.get_json()["reasons"] == [f"database unreachable: connection refused (127.0.0.1:{proxy.port})"]

    proxy.start()
    after = client.post("/webhooks/alertmanager", json=notification("After"))  # no restart, and no 500 first
    assert after.status_code == 202
    assert client.get("/api/v1/log").status_code == 200
    assert client.get("/readyz").get_json()["checks"]["store"] == {"ok": True}

    lines = json_lines(capfd.readouterr().err)
    store = [line for line in lines if line["message"].startswith("store ")]
    # One line as it started (six refused requests within its first step), one as it ended.
    assert [(line["level"], line["message"].split(" after ")[0].split(":")[0]) for line in store] == [
        ("ERROR", "store unavailable"), ("WARNING", "store available again")]
    assert store[1]["failures"] == 6
    assert store[0]["store_address"] == f"127.0.0.1:{proxy.port}"
    assert store[0]["store_reason"] == "database unreachable: connection refused"
    assert not any(PASSWORD in json.dumps(line) or "exception" in line for line in lines)
    with app.app_context():
        for answer in (before, after):
            assert db.session.get(IncidentLog, answer.get_json()["events"][0]["log_id"]).status == "pending"
        db.session.remove()
        db.engine.dispose()


@pytest.mark.parametrize("backend", ["postgresql"])
def test_delivery_loop_waits_out_an_outage_and_delivers_afterwards(database_urls, make_app, pd, proxy, capfd):
    app = make_app(SQLALCHEMY_DATABASE_URI=proxied(database_urls("postgresql"), proxy))
    running = worker.start(app)
    try:
        proxy.stop()
        time.sleep(1.5)  # the loop's connection is cut: it fails, and waits
        direct = create_app(app_config(database_urls("postgresql"), pd.events_url, RELAY_DELIVERY=False,
                                       DEFAULT_ROUTE=DEFAULT_ROUTE))
        assert direct.test_client().post("/webhooks/alertmanager", json=notification()).status_code == 202
        time.sleep(2.0)
        assert running.thread.is_alive() and running.alive
        assert pd.accepted() == []  # stored while the relay's store was away from it: waits

        proxy.start()
        wait_until(lambda: len(pd.accepted()) == 1, timeout=20, message="the row delivered after the outage")
        with direct.app_context():
            wait_until(lambda: db.session.scalars(sa.select(IncidentLog.status)).all() == ["delivered"],
                       message="the row recorded as delivered")
            db.session.remove()
        direct_engine_dispose(direct)
    finally:
        worker.stop()

    lines = json_lines(capfd.readouterr().err)
    told = [line for line in lines
            if line["logger"] == "relay.delivery.worker" and line["message"].startswith("store ")]
    assert told[0]["message"] == (f"store unavailable: database unreachable: connection refused "
                                  f"(127.0.0.1:{proxy.port}); delivery paused, retrying")
    assert told[0]["store_address"] == f"127.0.0.1:{proxy.port}" and told[0]["level"] == "ERROR"
    # Then at its backoff steps (1 s, then 2 s…), not on every try, and once when it is back.
    steps = [line["message"] for line in told[1:-1]]
    assert 1 <= len(steps) <= 3 and all(step.startswith("store still unavailable after ") for step in steps), steps
    assert told[-1]["message"].startswith("store available again after "), told[-1]
    assert not any(PASSWORD in json.dumps(line) or "exception" in line for line in lines)


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_database_restart_between_deliveries_is_no_outage(database_urls, make_app, pd, proxy, capfd):
    app = make_app(SQLALCHEMY_DATABASE_URI=proxied(database_urls("postgresql"), proxy), DEFAULT_ROUTE=DEFAULT_ROUTE)
    worker.start(app)
    client = app.test_client()
    try:
        assert client.post("/webhooks/alertmanager", json=notification("First")).status_code == 202
        wait_until(lambda: len(pd.accepted()) == 1, message="the first event delivered")
        proxy.cut()  # as a database restart does: the delivery loop's kept connection is dead
        capfd.readouterr()
        started = time.monotonic()
        assert client.post("/webhooks/alertmanager", json=notification("Second")).status_code == 202
        wait_until(lambda: len(pd.accepted()) == 2, message="the second event delivered")
        assert time.monotonic() - started < 0.9  # not after an outage's first pause
    finally:
        worker.stop()
    assert not [line for line in json_lines(capfd.readouterr().err) if line["message"].startswith("store ")]


def direct_engine_dispose(app):
    with app.app_context():
        db.engine.dispose()


@pytest.mark.parametrize("url, reason", [
    ("postgresql+psycopg://relayuser:{password}@127.0.0.1:{port}/relay", "database unreachable: connection refused"),
    ("sqlite:////nonexistent-relay-dir/relay.sqlite3", "database unreachable: cannot open the database file"),
])
def test_readyz_names_why_and_where_the_store_fails_without_user_or_password(url, reason, pd):
    port = free_port()
    app = create_app(app_config(url.format(password=PASSWORD, port=port), pd.events_url, RELAY_DELIVERY=False))
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    where = f"127.0.0.1:{port}" if url.startswith("postgresql") else "/nonexistent-relay-dir/relay.sqlite3"
    assert body["reasons"] == [f"{reason} ({where})"]
    assert body["checks"]["store"] == {"ok": False, "error": reason, "address": where}
    assert PASSWORD not in response.get_data(as_text=True) and "relayuser" not in response.get_data(as_text=True)


def test_readyz_says_the_schema_is_not_migrated_on_sqlite(tmp_path, pd):
    path = tmp_path / "empty.sqlite3"
    sqlite3.connect(path).close()
    app = create_app(app_config(f"sqlite:///{path}", pd.events_url, RELAY_DELIVERY=False))
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["reasons"] == [f"schema not migrated: table incident_log missing ({path})"]


def test_readyz_says_the_schema_is_not_migrated_on_postgres(pd):
    with fresh_postgres_database() as url:
        app = create_app(app_config(url, pd.events_url, RELAY_DELIVERY=False))
        client = app.test_client()
        assert client.get("/readyz").get_json()["reasons"] == [
            "schema not migrated: table incident_log missing (127.0.0.1:5432)"]
        assert_schema_503(client)
        with app.app_context():
            db.engine.dispose()


def assert_schema_503(client):
    response = client.post("/webhooks/alertmanager", json=notification())
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert response.get_json()["error"]["message"] == ("the store is unavailable (schema not migrated: table "
                                                      "incident_log missing); try again later")


@pytest.fixture
def sqlite_file(tmp_path):
    """A migrated SQLite file of this test's own."""
    url = f"sqlite:///{tmp_path / 'relay.sqlite3'}"
    app = create_app({"SQLALCHEMY_DATABASE_URI": url})
    with app.app_context():
        upgrade()
        db.engine.dispose()
    return tmp_path / "relay.sqlite3"


def test_webhook_gets_503_when_sqlite_is_read_only(sqlite_file, pd):
    url = f"sqlite:///file:{sqlite_file}?mode=ro&uri=true"
    client = create_app(app_config(url, pd.events_url, RELAY_DELIVERY=False, DEFAULT_ROUTE=DEFAULT_ROUTE)).test_client()
    response = client.post("/webhooks/alertmanager", json=notification())
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert response.get_json()["error"] == {
        "code": "store_unavailable",
        "message": "the store is unavailable (database unwritable: the file is read-only); try again later"}
    assert str(sqlite_file) not in response.get_data(as_text=True)


def test_webhook_gets_503_while_sqlite_is_locked_past_the_busy_timeout_and_202_after(sqlite_file, pd, monkeypatch):
    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_SECONDS", 0.2)
    client = create_app(app_config(f"sqlite:///{sqlite_file}", pd.events_url, RELAY_DELIVERY=False,
                                   DEFAULT_ROUTE=DEFAULT_ROUTE)).test_client()
    holder = sqlite3.connect(sqlite_file, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer that keeps the write lock
    try:
        response = client.post("/webhooks/alertmanager", json=notification())
        assert response.status_code == 503 and response.headers["Retry-After"] == "5"
        assert response.get_json()["error"]["message"] == (
            "the store is unavailable (database unwritable: locked by another writer beyond the busy timeout); "
            "try again later")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert client.post("/webhooks/alertmanager", json=notification()).status_code == 202


def test_a_full_sqlite_disk_is_named(sqlite_file):
    conn = sqlite3.connect(sqlite_file, isolation_level=None)
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count={pages}")  # SQLite's own "disk full" at the file's present size
    with pytest.raises(sqlite3.OperationalError) as raised:
        conn.execute("CREATE TABLE filler AS SELECT randomblob(200000) AS x")
    conn.close()
    assert failures.describe(raised.value, f"sqlite:///{sqlite_file}") == failures.StoreProblem(
        "database unwritable: disk full", str(sqlite_file))


def test_errors_that_are_not_the_store_failing_stay_500(sqlite_file):
    engine = sa.create_engine(f"sqlite:///{sqlite_file}")
    with pytest.raises(sa.exc.IntegrityError) as raised, engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO incident_log (id) VALUES (NULL)"))
    engine.dispose()
    assert failures.describe(raised.value, engine.url) is None


@pytest.mark.system
def test_the_delivery_process_rides_out_an_outage_with_one_json_line_per_step(database_urls, pd, proxy, tmp_path):
    url = proxied(database_urls("postgresql"), proxy)
    proxy.stop()  # away before the process starts
    env = {**os.environ, "DATABASE_URL": url, "PAGERDUTY_EVENTS_URL": pd.events_url,
           "RELAY_DELIVERY_POLL_SECONDS": "0.2", "RELAY_DELIVERY_NICE": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "flask", "--app", "wsgi", "relay", "worker"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "stderr", "w"))
    try:
        time.sleep(4.0)
        assert proc.poll() is None, (tmp_path / "stderr").read_text()
        direct = create_app(app_config(database_urls("postgresql"), pd.events_url, RELAY_DELIVERY=False,
                                       DEFAULT_ROUTE=DEFAULT_ROUTE))
        with direct.app_context():
            db.session.execute(sa.text("DELETE FROM delivery_attempt"))
            db.session.execute(sa.text("DELETE FROM incident_log"))
            db.session.commit()
        assert direct.test_client().post("/webhooks/alertmanager", json=notification()).status_code == 202
        proxy.start()
        wait_until(lambda: len(pd.accepted()) == 1, timeout=30, message="the row delivered once the store is back")
        direct_engine_dispose(direct)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    lines = json_lines((tmp_path / "stderr").read_text())  # every line JSON: no traceback
    told = [line["message"] for line in lines if line["message"].startswith("store ")]
    assert told[0].startswith(f"store unavailable: database unreachable: connection refused (127.0.0.1:{proxy.port})")
    assert told[-1].startswith("store available again after "), told
    assert len(told) <= 5, told  # a start, a line at each backoff step, an end: not one per try
    assert not any(PASSWORD in json.dumps(line) for line in lines)


def test_a_host_that_never_answers_is_named_within_the_connect_timeout(pd):
    """A listener that takes the connection and then says nothing (a host that drops packets looks the same to
    libpq): /readyz answers, naming it, instead of hanging past gunicorn's worker timeout."""
    silent = socket.create_server(("127.0.0.1", 0))
    port = silent.getsockname()[1]
    try:
        app = create_app(app_config(f"postgresql+psycopg://relayuser:{PASSWORD}@127.0.0.1:{port}/relay",
                                    pd.events_url, RELAY_DELIVERY=False))
        started = time.monotonic()
        response = app.test_client().get("/readyz")
        took = time.monotonic() - started
    finally:
        silent.close()
    assert response.status_code == 503 and took < 3 * postgres.CONNECT_TIMEOUT_SECONDS
    assert response.get_json()["reasons"] == [f"database unreachable: connection timed out (127.0.0.1:{port})"]
