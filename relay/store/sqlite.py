"""Everything SQLite-specific in the store: connection settings, the write lock and its queue, claims under that
lock, and the wake-up on other processes' commits.

SQLite has one write lock per file. Claims and stored webhooks take it as their transaction begins (BEGIN
IMMEDIATE), so a claim is atomic without row locks; the relay's writers queue for it on a lock file beside the
database; the delivery process learns of other processes' new rows from SQLite's data_version.
"""
import fcntl
import os
import sqlite3
import time
from contextlib import contextmanager

from sqlalchemy import bindparam, event, func, insert, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine

from relay.store import failures
from relay.store.models import DeliveryAttempt, IncidentLog

BUSY_TIMEOUT_SECONDS = 10  # how long a writer waits for another's lock before it fails
WRITE_RETRY_SECONDS = 0.0001  # a writer's first pause while another holds the lock (a stored webhook holds it
# for about that long); each next one doubles
WRITE_RETRY_MAX_SECONDS = 0.002  # up to this: at most 2 ms late, without a wake-up every half millisecond
WATCH_SECONDS = 0.002  # how often the delivery process looks for other processes' commits
_BUSY_TIMEOUT = f"PRAGMA busy_timeout={BUSY_TIMEOUT_SECONDS * 1000}"


def init_app(app):
    """Tune every SQLite connection and begin its transactions ourselves (once per process)."""
    if not event.contains(Engine, "connect", _tune):
        event.listen(Engine, "connect", _tune)
        event.listen(Engine, "begin", _begin)


def _tune(dbapi_connection, _record):
    """Use WAL and wait on locks, so several gunicorn workers can share one SQLite file."""
    if isinstance(dbapi_connection, sqlite3.Connection):
        dbapi_connection.isolation_level = None  # transactions are begun in _begin instead
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(_BUSY_TIMEOUT)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def _begin(conn):
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
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    try:
        pause = WRITE_RETRY_SECONDS
        while _write_lock_busy(dbapi_connection) and time.monotonic() < deadline:
            time.sleep(pause)
            pause = min(2 * pause, WRITE_RETRY_MAX_SECONDS)
        if not dbapi_connection.in_transaction:  # out of time, or another error: raised as SQLAlchemy raises it
            conn.exec_driver_sql("BEGIN IMMEDIATE")
    finally:
        dbapi_connection.execute(_BUSY_TIMEOUT)


def _write_lock_busy(dbapi_connection) -> bool:
    """Try BEGIN IMMEDIATE once, straight on the driver (tries are cheap); tell whether another writer has the
    lock."""
    try:
        dbapi_connection.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        return "locked" in str(exc)
    return False


def writer_connection(engine):
    """A connection whose transactions take the write lock as they begin."""
    return engine.connect().execution_options(sqlite_immediate=True)


@contextmanager
def write_transaction(conn):
    """A transaction on a writer connection, after queueing for the file's write lock on a lock file beside it:
    the kernel hands that to the next writer the moment the last one is done, where SQLite's own lock can only be
    tried again and again, and every failed try costs CPU."""
    path = file_of(conn.engine.url)
    if path is None:
        with conn.begin():
            yield conn
        return
    try:
        queue = os.open(f"{path}-writers", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise failures.LockFileError(exc.errno, exc.strerror, f"{path}-writers") from None
    try:
        fcntl.flock(queue, fcntl.LOCK_EX)
        with conn.begin():
            yield conn
    finally:
        os.close(queue)  # and with it the flock


def file_of(url) -> str | None:
    """The database's file, also when the URL names it as a URI (file:PATH with uri=true); None in memory."""
    path = url.database
    if path and url.query.get("uri") == "true" and path.startswith("file:"):
        path = path[len("file:"):]
    return None if not path or path == ":memory:" else path


@contextmanager
def migration_lock(engine):
    """Hold the lock under which one process at a time brings the schema up to date: a lock file beside the
    database (SQLite's own lock cannot be held across the migration's transactions)."""
    path = engine.url.database
    if not path or path == ":memory:":
        yield
        return
    lock = os.open(f"{path}-migrate", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
    finally:
        os.close(lock)  # and with it the flock


def prepare_candidates(conn) -> None:
    """Nothing to tune: SQLite plans the candidates' query well as it is."""


def take(conn, statement, params):
    """Run the claim's read of its rows; the claim's transaction already holds the write lock."""
    return conn.execute(statement, params).all()


def hold_rate_budget(conn) -> None:
    """Nothing to take: the claim's write lock already keeps other claimers' budget checks out."""


def hold_endpoints(conn) -> None:
    """Nothing to take: the delivery step's write lock already keeps other steps' endpoint states and key holds
    out."""


def read_holding_alerts(conn, pairs, statement, params: dict) -> list:
    """Run statement, a read about these alerts, and return its rows: nothing to take, a stored webhook's write lock
    already keeps other webhooks about its alerts out."""
    return conn.execute(statement, params).all()


def hold_routes(conn, names) -> None:
    """Nothing to take: the write lock already keeps other writers' storm valve counts out."""


_FINISH_ATTEMPT = (update(DeliveryAttempt).where(DeliveryAttempt.id == bindparam("b_attempt_id"))
                   .values(outcome=bindparam("b_outcome"), http_status=bindparam("b_http_status"),
                           duration_ms=bindparam("b_duration_ms"), error=bindparam("b_attempt_error")))
# Only the claim holding the row moves it: after a takeover (by another worker or this one) the newer claim's
# answer counts, and a newer claim is one that opened a later attempt.
_NEWER_CLAIM = (select(DeliveryAttempt.id).where(DeliveryAttempt.log_id == IncidentLog.id,
                                                  DeliveryAttempt.id > bindparam("b_attempt_id")).exists())
_FINISH_ROW = (update(IncidentLog).where(IncidentLog.id == bindparam("b_log_id"),
                                          IncidentLog.claimed_by == bindparam("b_worker"), ~_NEWER_CLAIM)
               .values(status=bindparam("b_status"), next_attempt_at=bindparam("b_next"),
                       delivered_at=func.coalesce(IncidentLog.delivered_at, bindparam("b_delivered_at")),
                       dedup_key=func.coalesce(IncidentLog.dedup_key, bindparam("b_dedup_key")),
                       http_status=bindparam("b_http_status"), pd_status=bindparam("b_pd_status"),
                       pd_message=bindparam("b_pd_message"), pd_errors=bindparam("b_pd_errors"),
                       error=bindparam("b_error"), claimed_by=None, claimed_until=None,
                       updated_at=bindparam("b_now")))


def finish(conn, worker_id: str, records: list[dict], now) -> None:
    """Record a batch of results, given as the outbox's result records: each on its attempt, then on its row."""
    params = [{**record, "b_worker": worker_id, "b_now": now} for record in records]
    conn.execute(_FINISH_ATTEMPT, params)
    conn.execute(_FINISH_ROW, params)


def watcher(engine):
    """A function (wake, stopping) that calls wake() whenever another process commits; None for a database in
    memory, which no other process shares."""
    path = file_of(engine.url)
    if path is None:
        return None

    def watch(wake, stopping):
        """Read data_version, without any lock, until stopping is set; wake when it changes. A file that cannot be
        read is tried again each second (the delivery loop, polling meanwhile, tells why in the log)."""
        while not stopping.is_set():
            try:
                conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                                       check_same_thread=False)
            except sqlite3.Error:
                stopping.wait(1.0)
                continue
            try:
                seen = None
                while not stopping.wait(WATCH_SECONDS):
                    version = conn.execute("PRAGMA data_version").fetchone()[0]
                    if seen is not None and version != seen:
                        wake()
                    seen = version
            except sqlite3.Error:
                stopping.wait(1.0)
            finally:
                conn.close()

    return watch


_INSERT_ROWS = insert(IncidentLog.__table__)
_LAST_ROWID = "SELECT last_insert_rowid()"


def insert_rows(conn, rows: list[dict]) -> list[int]:
    """Insert rows with one executemany and return their ids, in order.

    SQLAlchemy's RETURNING with ids in order sends one INSERT per row here; without RETURNING the driver runs them
    all at once. The ids follow from the last one: this transaction holds the write lock, so nothing else inserts
    between the rows, and SQLite gives each new row the next rowid.
    """
    conn.execute(_INSERT_ROWS, rows)
    last = conn.connection.driver_connection.execute(_LAST_ROWID).fetchone()[0]  # the driver's: no statement to build
    return list(range(last - len(rows) + 1, last + 1))


def insert_if_absent(conn, table, values: dict) -> bool:
    """Insert one row unless its primary key is taken (by a concurrent writer too); tell whether it was inserted."""
    inserted = sqlite_insert(table).values(**values).on_conflict_do_nothing().returning(*table.primary_key)
    return conn.execute(inserted).first() is not None
