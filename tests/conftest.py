"""Shared fixtures: the relay app on a real SQLite file and on the real PostgreSQL, and the simulator."""
import os
import secrets
import uuid
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
from flask_migrate import upgrade
from sqlalchemy.pool import NullPool

from relay import create_app
from relay.delivery import worker
from relay.store.models import db
from tools.simulator import PagerDutySimulator

POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def simulator():
    """One PagerDuty simulator on a real socket for the whole run; reset before each test that uses it."""
    with PagerDutySimulator() as sim:
        yield sim


@pytest.fixture
def pd(simulator):
    """The simulator, emptied of earlier tests' events, faults and keys."""
    simulator.reset()
    return simulator


@contextmanager
def fresh_postgres_database():
    """Yield the URL of a new, empty PostgreSQL database; drop it afterwards."""
    name = f"relay_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_url():
    """A fresh PostgreSQL database for this run, dropped at the end."""
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(scope="session")
def database_urls(tmp_path_factory, request):
    """Map each backend to its database URL, migrated once per run."""
    urls = {}

    def url_for(backend):
        if backend not in urls:
            if backend == "sqlite":
                urls[backend] = "sqlite:///" + str(tmp_path_factory.mktemp("db") / "relay.sqlite3")
            else:
                urls[backend] = request.getfixturevalue("postgres_url")
            app = create_app({"SQLALCHEMY_DATABASE_URI": urls[backend]})
            with app.app_context():
                upgrade()
                db.engine.dispose()
        return urls[backend]

    return url_for


def app_config(database_url, events_url, **overrides):
    """Settings for a test app: the given store and PagerDuty endpoint, short timeouts."""
    return {
        "TESTING": True,
        "SQLALCHEMY_DATABASE_URI": database_url,
        "PAGERDUTY_EVENTS_URL": events_url,
        "PAGERDUTY_CONNECT_TIMEOUT": 1.0,
        "PAGERDUTY_READ_TIMEOUT": 2.0,
        "RELAY_SYNC_WAIT_SECONDS": 5.0,
        "RELAY_RETRY_BASE_SECONDS": 0.05,
        "RELAY_RETRY_MAX_SECONDS": 0.5,
        "RELAY_DELIVERY_POLL_SECONDS": 0.2,
        "RELAY_CLAIM_LEASE_SECONDS": 5.0,
        "RELAY_RECONCILE_INTERVAL_SECONDS": 0,  # off unless a test turns it on: no test's alerts are asked about
        **overrides,
    }


@pytest.fixture(params=BACKENDS)
def backend(request):
    """The store under test: every app test runs on SQLite and on PostgreSQL."""
    return request.param


@pytest.fixture
def delivering(make_app):
    """Build an app (make_app's settings) with this process's delivery worker sending to the simulator.

    One worker per process: build one app per test.
    """
    def build(**config):
        app = make_app(**config)
        worker.start(app)
        return app

    yield build
    worker.stop()


@pytest.fixture
def app(delivering):
    """A relay app on an emptied, migrated store, with its delivery worker sending to the simulator."""
    return delivering()


@pytest.fixture
def client(app):
    """A test client for the app."""
    return app.test_client()


@pytest.fixture
def runner(app):
    """A CLI runner for the app's commands."""
    return app.test_cli_runner()


@pytest.fixture
def routing_key():
    """A fresh 32-character integration key, as PagerDuty issues them."""
    return secrets.token_hex(16)


@pytest.fixture
def make_app(backend, database_urls, pd):
    """Build relay apps with extra settings (ROUTES, DEFAULT_ROUTE…) on the test's emptied store, no worker."""
    made = []

    def make(**overrides):
        app = create_app(app_config(database_urls(backend), pd.events_url, **overrides))
        with app.app_context():
            db.session.execute(sa.text("DELETE FROM delivery_attempt"))
            db.session.execute(sa.text("DELETE FROM incident_log"))
            db.session.execute(sa.text("DELETE FROM delivery_process"))  # an earlier test's killed process
            db.session.execute(sa.text("DELETE FROM endpoint_state"))  # an earlier test's outage
            db.session.execute(sa.text("DELETE FROM key_hold"))
            db.session.execute(sa.text("DELETE FROM lease"))  # an earlier test's periodic duties
            db.session.execute(sa.text("DELETE FROM storm"))  # an earlier test's storms
            db.session.execute(sa.text("DELETE FROM storm_trigger"))
            db.session.execute(sa.text("DELETE FROM reconcile_watch"))  # the alerts an earlier test's reconciler watched
            db.session.execute(sa.text("DELETE FROM heartbeat"))  # an earlier test's heartbeats
            db.session.commit()
        made.append(app)
        return app

    yield make
    for app in made:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


# --- test tiers: `make check` runs what needs nothing but Python (-m "not system"); `make test` runs everything ---

# Whole files that start gunicorn, the delivery process or other processes, need a browser, or fuzz at length.
SYSTEM_FILES = {"test_server.py", "test_startup.py", "test_supervision.py", "test_supervisor.py",
                "test_delivery_reliability.py", "test_ui_browser.py", "test_openapi_fuzz.py", "test_fuzz.py",
                "test_console.py"}
# Single tests, in files otherwise fast, that start processes (gunicorn, the simulator's CLI, `flask relay`).
SYSTEM_TESTS = {
    "test_logs.py": {"test_gunicorn_logs_json_without_access_log_by_default"},
    "test_metrics.py": {"test_gunicorn_workers_report_the_total"},
    "test_simulator.py": {"test_cli_serves_events_and_stops_on_sigterm", "test_cli_never_prints_a_full_routing_key"},
    "test_webhooks.py": {"test_check_config_ok", "test_check_config_warns_without_default_route",
                         "test_check_config_names_route_and_field"},
    "test_outbox.py": {"test_claims_walk_the_open_index_before_the_store_was_ever_analyzed"},  # its own PostgreSQL
}
POSTGRES_FIXTURES = {"postgres_url", "own_postgres_url"}


def is_system_test(item) -> bool:
    """Tell whether a test needs more than Python: processes, PostgreSQL, Alertmanager or a browser."""
    path = item.path
    if "e2e" in path.parts or path.name in SYSTEM_FILES:
        return True
    if item.originalname in SYSTEM_TESTS.get(path.name, ()):
        return True
    params = getattr(item, "callspec", None)
    if params and "postgresql" in (params.params.get("backend"), params.params.get("store_url")):
        return True
    return bool(POSTGRES_FIXTURES & set(item.fixturenames))


def pytest_collection_modifyitems(items):
    """Mark the system tier, which `make check` leaves out."""
    for item in items:
        if is_system_test(item):
            item.add_marker(pytest.mark.system)
