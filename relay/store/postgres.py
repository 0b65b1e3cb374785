"""Everything PostgreSQL-specific in the store: row locks and the advisory lock that make claims safe across
instances, the claim's plan, the one-statement batch of results, and the wake-up by LISTEN/NOTIFY.

Claims lock the rows they take with FOR UPDATE SKIP LOCKED, so concurrent claimers never wait on each other;
rate-limited claims serialize their budget checks on one advisory lock; webhooks about the same alert compare
with its latest state one after the other, under an advisory lock per alert; the storm valve counts a route's new
alerts under an advisory lock per route.
"""
import functools
import hashlib
import json
import logging
from contextlib import contextmanager
from datetime import datetime

import psycopg
from psycopg.rows import namedtuple_row
from sqlalchemy import func, insert, make_url, select, text
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.exc import DBAPIError

from relay.store import failures
from relay.store.models import IncidentLog

log = logging.getLogger(__name__)

RATE_LOCK_ID = 0x72656C6179  # "relay": the advisory lock around rate-limited claims
ENDPOINT_LOCK_ID = 0x656E64707473  # "endpts": the advisory lock around moving endpoint states and key holds
ALERT_LOCK_CLASS = 0x616C7274  # "alrt": the first key of the per-alert advisory locks (the two-key lock space)
ROUTE_LOCK_CLASS = 0x7374726D  # "strm": the first key of the per-route locks around the storm valve's count
MIGRATE_LOCK_ID = 0x6D69677261  # "migra": held while one instance brings the schema up to date
# libpq waits for ever for a host that drops packets: fail instead (a 503, the delivery loop's backoff) well inside
# gunicorn's worker timeout and the delivery process's stall limit.
CONNECT_TIMEOUT_SECONDS = 5
NOTIFY_CHANNEL = "relay_outbox"  # sent by a trigger on incident_log (migration 0004) when rows turn pending
LISTEN_FIRST_PAUSE = 1.0  # after a lost LISTEN connection; doubling up to the last: polling covers the gap
LISTEN_LAST_PAUSE = 8.0


def init_app(app):
    """Bound how long opening a PostgreSQL connection may take, unless the settings already do."""
    if make_url(app.config["SQLALCHEMY_DATABASE_URI"]).get_backend_name() != "postgresql":
        return
    options = dict(app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})  # a copy: Config's dict is shared
    options["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_SECONDS, **options.get("connect_args", {})}
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = options


def writer_connection(engine):
    """A connection for claims and stored webhooks: row locks make any plain connection one."""
    return engine.connect()


@contextmanager
def write_transaction(conn):
    """A plain transaction: PostgreSQL writers need no queue."""
    with conn.begin():
        yield conn


@contextmanager
def migration_lock(engine):
    """Hold the session advisory lock under which one instance at a time brings the schema up to date; the others
    wait, then find it current."""
    with engine.connect() as conn:
        conn.execute(select(func.pg_advisory_lock(MIGRATE_LOCK_ID)))
        conn.commit()
        try:
            yield
        finally:
            conn.execute(select(func.pg_advisory_unlock(MIGRATE_LOCK_ID)))
            conn.commit()


def prepare_candidates(conn) -> None:
    """Walk ix_incident_log_open in id order and stop at the limit. Statistics taken before a burst say few rows
    are open, and PostgreSQL then bitmap-scans the whole backlog and sorts it, on every claim."""
    conn.exec_driver_sql("SET LOCAL enable_bitmapscan = off")


@functools.cache
def _skip_locked(statement):
    return statement.with_for_update(skip_locked=True)


def take(conn, statement, params):
    """Run the claim's read of its rows, locking them; rows another instance is claiming right now are skipped
    (SKIP LOCKED), and the read's conditions are checked again once a row is locked."""
    return conn.execute(_skip_locked(statement), params).all()


def hold_rate_budget(conn) -> None:
    """Take the advisory lock until the transaction ends: budget checks of several instances never interleave."""
    conn.execute(select(func.pg_advisory_xact_lock(RATE_LOCK_ID)))


def hold_endpoints(conn) -> None:
    """Take the endpoint lock until the transaction ends: one instance at a time decides on probes and outages, and
    writes a rate-limited key's hold."""
    conn.execute(select(func.pg_advisory_xact_lock(ENDPOINT_LOCK_ID)))


_HOLD_ALERTS = text("SELECT pg_advisory_xact_lock(CAST(:lock_class AS int), k) "
                    "FROM unnest(CAST(:keys AS int[])) AS k")


def read_holding_alerts(conn, pairs, statement, params: dict) -> list:
    """Take an advisory lock per alert (routing key, dedup key) until the transaction ends, in one order, so two
    webhooks about one alert never both compare with the state the other is about to change; then run statement,
    a read about those alerts, and return its rows.

    The locks and the read go in one round trip (psycopg's pipeline) where they took two. The server still runs them
    one after the other, and under READ COMMITTED the read's snapshot is taken when it starts, once the locks are
    held: it sees what their previous holder committed. (psycopg still waits for the transaction's BEGIN on its own.)
    """
    keys = sorted({_alert_lock_key(routing_key, dedup_key) for routing_key, dedup_key in pairs})
    lock = _compiled(_HOLD_ALERTS, conn.dialect).construct_expanded_state(
        {"lock_class": ALERT_LOCK_CLASS, "keys": keys})
    read = _compiled(statement, conn.dialect).construct_expanded_state(params)
    driver = conn.connection.driver_connection
    try:
        with driver.pipeline():
            driver.execute(lock.statement, lock.parameters)
            cursor = driver.cursor(row_factory=namedtuple_row)
            cursor.execute(read.statement, read.parameters)
        return cursor.fetchall()
    except psycopg.Error as exc:  # as SQLAlchemy would raise it, parameters (routing keys) hidden
        raise DBAPIError.instance(read.statement, None, exc, psycopg.Error, hide_parameters=True,
                                  dialect=conn.dialect) from None


@functools.lru_cache(maxsize=32)  # a few statements, per engine
def _compiled(statement, dialect):
    """A statement compiled once; its lists (IN) are written out per call, as SQLAlchemy does, so a list of the
    same length gives the same text, which psycopg prepares and PostgreSQL plans once."""
    return statement.compile(dialect=dialect)


def _alert_lock_key(routing_key: str, dedup_key: str) -> int:
    """A 32-bit lock key for an alert; two alerts that share one merely wait for each other."""
    return _lock_key(f"{routing_key}\0{dedup_key}")


def hold_routes(conn, names) -> None:
    """Take an advisory lock per route until the transaction ends, in one order (after the alerts' locks), so the
    storm valve's count of a route's new alerts is read and written by one instance at a time."""
    keys = sorted({_lock_key(name) for name in names})
    if keys:
        conn.execute(_HOLD_ALERTS, {"lock_class": ROUTE_LOCK_CLASS, "keys": keys})


def _lock_key(text: str) -> int:
    """A 32-bit lock key for a text; two texts that share one merely wait for each other."""
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:4], "big", signed=True)


def watcher(engine):
    """A function (wake, stopping) that calls wake() on NOTIFY from other instances' new rows."""
    url = engine.url

    def listen(wake, stopping):
        """LISTEN until stopping is set; reconnect when the connection drops, waiting longer while it cannot."""
        import psycopg

        conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        pause, lost = 0.0, None
        while not stopping.wait(pause):
            try:
                with psycopg.connect(conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    if lost:
                        log.info("LISTEN connection back: new rows wake delivery again")
                    pause, lost = 0.0, None
                    while not stopping.is_set():
                        for _ in conn.notifies(timeout=1.0):
                            wake()
            except Exception as exc:  # noqa: BLE001 - fall back to polling until PostgreSQL is back
                if lost is None:  # once per loss: the delivery loop tells of the outage as it goes on
                    lost = (failures.describe(exc, url)
                            or failures.StoreProblem("LISTEN failed", failures.address_of(url)))
                    log.warning("LISTEN connection lost: %s; new rows are found by polling until it is back", lost,
                                extra={"store_reason": lost.reason, "store_address": lost.address})
                pause = min(max(2 * pause, LISTEN_FIRST_PAUSE), LISTEN_LAST_PAUSE)

    return listen


# Each result on its attempt, then on its row (only while this claim holds it: this worker's lease, and no later
# attempt opened), in one statement. Per row, executemany costs a round trip's worth of driver work and a VALUES
# list costs SQLAlchemy a fresh compile; this is fixed text whose size never grows, fed one JSON document per batch.
_FINISH = text("""
WITH r AS (
    SELECT * FROM json_to_recordset(CAST(:results AS json)) AS r(
        b_attempt_id bigint, b_outcome text, b_http_status int, b_duration_ms float8, b_attempt_error text,
        b_log_id bigint, b_status text, b_next timestamptz, b_delivered_at timestamptz, b_dedup_key text,
        b_pd_status text, b_pd_message text, b_pd_errors json, b_error text)
), attempts AS (
    UPDATE delivery_attempt AS a
    SET outcome = r.b_outcome, http_status = r.b_http_status, duration_ms = r.b_duration_ms, error = r.b_attempt_error
    FROM r WHERE a.id = r.b_attempt_id
)
UPDATE incident_log AS l
SET status = r.b_status, next_attempt_at = r.b_next, delivered_at = coalesce(l.delivered_at, r.b_delivered_at),
    dedup_key = coalesce(l.dedup_key, r.b_dedup_key), http_status = r.b_http_status, pd_status = r.b_pd_status,
    pd_message = r.b_pd_message, pd_errors = r.b_pd_errors, error = r.b_error,
    claimed_by = NULL, claimed_until = NULL, updated_at = :now
FROM r WHERE l.id = r.b_log_id AND l.claimed_by = :worker
    AND NOT EXISTS (SELECT 1 FROM delivery_attempt AS newer WHERE newer.log_id = l.id AND newer.id > r.b_attempt_id)
""")


def finish(conn, worker_id: str, records: list[dict], now: datetime) -> None:
    """Record a batch of results, given as the outbox's result records, in one statement."""
    conn.execute(_FINISH, {"results": json.dumps(records, default=_iso), "now": now, "worker": worker_id})


def _iso(value):
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__}")


# Core, not the ORM bulk path: several times cheaper per row; built once. PostgreSQL returns the ids of a
# multi-row insert in one round trip.
_INSERT_ROWS = insert(IncidentLog.__table__).returning(IncidentLog.__table__.c.id, sort_by_parameter_order=True)


def insert_rows(conn, rows: list[dict]) -> list[int]:
    """Insert rows in one statement and return their ids, in order."""
    return list(conn.execute(_INSERT_ROWS, rows).scalars())


def insert_if_absent(conn, table, values: dict) -> bool:
    """Insert one row unless its primary key is taken (by a concurrent writer too); tell whether it was inserted."""
    inserted = postgresql_insert(table).values(**values).on_conflict_do_nothing().returning(*table.primary_key)
    return conn.execute(inserted).first() is not None
