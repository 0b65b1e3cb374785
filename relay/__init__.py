"""The relay: receives alerts, logs them as PagerDuty events, and delivers them."""
import os
import sqlite3
import time

from flask import Flask
from flask_migrate import Migrate
from sqlalchemy import event
from sqlalchemy.engine import Engine

from config import Config
from relay import cli, errors, logs, metrics
from relay.intake import configure
from relay.store.models import db
from relay.web import api, auth, health, openapi, page, payloads, webhooks

MIGRATIONS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "migrations")
migrate = Migrate()
SQLITE_BUSY_TIMEOUT_SECONDS = 10  # how long a SQLite writer waits for another's lock before it fails
SQLITE_WRITE_RETRY_SECONDS = 0.0001  # a writer's first pause while another holds the lock (a stored webhook holds
# it for about that long); each next one doubles
SQLITE_WRITE_RETRY_MAX_SECONDS = 0.002  # up to this: at most 2 ms late, without a wake-up every half millisecond
_SQLITE_BUSY_TIMEOUT = f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_SECONDS * 1000}"


def create_app(test_config=None):
    """Build the relay app from Config, overridden by test_config."""
    app = Flask(__name__, instance_relative_config=True, static_folder="web/static",
                template_folder="web/templates")
    app.config.from_object(Config)
    if os.environ.get("RELAY_CONFIG"):
        app.config.from_pyfile(os.path.abspath(os.environ["RELAY_CONFIG"]))
    if test_config:
        app.config.from_mapping(test_config)
    if not app.config.get("SQLALCHEMY_DATABASE_URI"):
        os.makedirs(app.instance_path, exist_ok=True)
        app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///" + os.path.join(app.instance_path, "relay.sqlite3")
    logs.init_app(app)  # first, so what the other init_app say at start-up is logged as JSON

    db.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS_DIR)
    configure.init_app(app)
    payloads.init_app(app)
    auth.init_app(app)
    errors.init_app(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(page.bp)  # the log page at /
    cli.init_app(app)
    return app


@event.listens_for(Engine, "connect")
def _tune_sqlite(dbapi_connection, _record):
    """Use WAL and wait on locks, so several gunicorn workers can share one SQLite file."""
    if isinstance(dbapi_connection, sqlite3.Connection):
        dbapi_connection.isolation_level = None  # transactions are begun in _begin_sqlite instead
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(_SQLITE_BUSY_TIMEOUT)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


@event.listens_for(Engine, "begin")
def _begin_sqlite(conn):
    """Begin SQLite transactions ourselves; IMMEDIATE ones (claims, stored webhooks) take the write lock up
    front, since a read-then-write transaction fails with SQLITE_BUSY, past any busy_timeout, if a writer commits
    between."""
    if conn.dialect.name == "sqlite":
        if conn.get_execution_options().get("sqlite_immediate"):
            _begin_immediate(conn)
        else:
            conn.exec_driver_sql("BEGIN")


def _begin_immediate(conn):
    """Take the write lock, retrying after 0.1 ms, 0.2, 0.4, 0.8, 1.6, then every 2 ms while another writer holds it.

    SQLite's own busy handler sleeps ever longer between tries (up to 100 ms each): a webhook that met the
    delivery process's write would wait tens of milliseconds after the lock came free.
    """
    dbapi_connection = conn.connection.dbapi_connection
    dbapi_connection.execute("PRAGMA busy_timeout=0")
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_SECONDS
    try:
        pause = SQLITE_WRITE_RETRY_SECONDS
        while _write_lock_busy(dbapi_connection) and time.monotonic() < deadline:
            time.sleep(pause)
            pause = min(2 * pause, SQLITE_WRITE_RETRY_MAX_SECONDS)
        if not dbapi_connection.in_transaction:  # out of time, or another error: raised as SQLAlchemy raises it
            conn.exec_driver_sql("BEGIN IMMEDIATE")
    finally:
        dbapi_connection.execute(_SQLITE_BUSY_TIMEOUT)


def _write_lock_busy(dbapi_connection) -> bool:
    """Try BEGIN IMMEDIATE once, straight on the driver (tries are cheap); tell whether another writer has the
    lock."""
    try:
        dbapi_connection.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        return "locked" in str(exc)
    return False
