"""The baseline for bench/ingest.py and bench/memory.py: a bare Flask endpoint that inserts one row per request.

    BENCH_DATABASE_URL=sqlite:////tmp/bare.sqlite3 RELAY_DELIVERY=0 \
        .venv/bin/gunicorn -c gunicorn.conf.py bench.bare_app:app

(from the project root, with the same gunicorn.conf.py as the relay). POST /ingest parses the JSON body and
inserts it, as text, into bench_rows with SQLAlchemy Core, in its own transaction, then answers 202. The engine
is set up like the relay's (pool_pre_ping, hide_parameters; on SQLite: WAL, busy_timeout=10000,
synchronous=NORMAL, explicit BEGIN). Create the table first with `create_table(url)` (the benchmark scripts do):
two workers racing to CREATE TABLE at import can fail on PostgreSQL.

It does not import the relay package, so its worker's memory is Flask + SQLAlchemy + the driver only.
"""
import os
import sqlite3
from datetime import datetime, timezone

import sqlalchemy as sa
from flask import Flask, jsonify, request

metadata = sa.MetaData()
bench_rows = sa.Table(
    "bench_rows", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
)


def _tune_sqlite(dbapi_connection, _record):
    """The relay's SQLite settings (relay/store/sqlite.py)."""
    if isinstance(dbapi_connection, sqlite3.Connection):
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def _begin_sqlite(conn):
    conn.exec_driver_sql("BEGIN")


def make_engine(url: str) -> sa.Engine:
    """An engine with the relay's options."""
    engine = sa.create_engine(url, pool_pre_ping=True, hide_parameters=True)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _tune_sqlite)
        sa.event.listen(engine, "begin", _begin_sqlite)
    return engine


def create_table(url: str) -> None:
    """Create bench_rows in the store (once, before the workers start)."""
    engine = make_engine(url)
    try:
        metadata.create_all(engine)
    finally:
        engine.dispose()


def server_env(url: str) -> dict:
    """The environment to serve the bare app in: its store, and no delivery process (gunicorn.conf.py starts the
    relay's own beside any app it serves unless RELAY_DELIVERY=0)."""
    return {"BENCH_DATABASE_URL": url, "RELAY_DELIVERY": "0"}


def create_app() -> Flask:
    """The bare app: /ingest and /healthz."""
    app = Flask(__name__)
    app.config["RELAY_DELIVERY"] = False  # gunicorn.conf.py's post_worker_init reads it
    engine = make_engine(os.environ["BENCH_DATABASE_URL"])

    @app.post("/ingest")
    def ingest():
        request.get_json()  # parse it, as the relay does (a bad body is a 400)
        with engine.begin() as conn:
            conn.execute(bench_rows.insert().values(created_at=datetime.now(timezone.utc),
                                                    body=request.get_data(as_text=True)))
        return jsonify({"accepted": 1}), 202

    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok"})

    return app


app = create_app() if os.environ.get("BENCH_DATABASE_URL") else None
