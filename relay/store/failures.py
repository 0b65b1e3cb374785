"""What went wrong with the store, in a few words a person can act on, and how one process tells of an outage.

describe() is the one place a database exception becomes a reason: /readyz, the 503 answers, the web workers' and
the delivery loop's log lines all use it. A reason never holds the driver's text, which may name the user or quote
a row; the address beside it names only the host and port (or the SQLite file), never a user or password.
"""
import errno
import logging
import re
import threading
import time
from dataclasses import dataclass

from sqlalchemy.engine import make_url
from sqlalchemy.exc import TimeoutError as PoolTimeout

UNREACHABLE = "database unreachable"
UNWRITABLE = "database unwritable"
NOT_MIGRATED = "schema not migrated"
DEFAULT_PORTS = {"postgresql": 5432}

# PostgreSQL's client library reports failed connections as text without an SQLSTATE: (fragment of the lowercased
# text, reason). The first fragment found wins.
_MESSAGES = (
    ("connection refused", f"{UNREACHABLE}: connection refused"),
    ("timeout expired", f"{UNREACHABLE}: connection timed out"),
    ("timed out", f"{UNREACHABLE}: connection timed out"),
    ("failed to resolve host", f"{UNREACHABLE}: host name not found"),
    ("could not translate host name", f"{UNREACHABLE}: host name not found"),
    ("name or service not known", f"{UNREACHABLE}: host name not found"),
    ("no route to host", f"{UNREACHABLE}: no route to host"),
    ("network is unreachable", f"{UNREACHABLE}: network unreachable"),
    ("password authentication failed", f"{UNREACHABLE}: login refused (wrong password)"),
    ("no password supplied", f"{UNREACHABLE}: login refused (no password given)"),
    ("pg_hba.conf", f"{UNREACHABLE}: login refused by pg_hba.conf"),
    ("role ", f"{UNREACHABLE}: login refused (no such user)"),
    ("database ", f"{UNREACHABLE}: no such database"),
    ("too many connections", f"{UNREACHABLE}: too many connections"),
    ("remaining connection slots are reserved", f"{UNREACHABLE}: too many connections"),
    ("the database system is starting up", f"{UNREACHABLE}: the server is starting up"),
    ("the database system is shutting down", f"{UNREACHABLE}: the server is shutting down"),
    ("the database system is in recovery mode", f"{UNREACHABLE}: the server is recovering"),
    ("terminating connection due to administrator command", f"{UNREACHABLE}: the server ended the connection"),
    ("no space left on device", f"{UNWRITABLE}: disk full"),
    ("could not extend file", f"{UNWRITABLE}: disk full"),
    ("read-only transaction", f"{UNWRITABLE}: read-only (a standby?)"),
    ("statement timeout", "database too slow: statement timed out"),
    ("server closed the connection", f"{UNREACHABLE}: connection lost"),
    ("consuming input failed", f"{UNREACHABLE}: connection lost"),
    ("connection is lost", f"{UNREACHABLE}: connection lost"),
    ("connection is closed", f"{UNREACHABLE}: connection lost"),
    ("connection already closed", f"{UNREACHABLE}: connection lost"),
    ("could not receive data", f"{UNREACHABLE}: connection lost"),
    ("could not send data", f"{UNREACHABLE}: connection lost"),
    ("ssl connection has been closed", f"{UNREACHABLE}: connection lost"),
    ("connection reset", f"{UNREACHABLE}: connection lost"),
)
# SQLite's result codes (sqlite3 errors carry them by name), by primary code.
_SQLITE_CODES = {
    "SQLITE_BUSY": f"{UNWRITABLE}: locked by another writer beyond the busy timeout",
    "SQLITE_LOCKED": f"{UNWRITABLE}: locked by another writer beyond the busy timeout",
    "SQLITE_READONLY": f"{UNWRITABLE}: the file is read-only",
    "SQLITE_FULL": f"{UNWRITABLE}: disk full",
    "SQLITE_IOERR": f"{UNREACHABLE}: disk I/O error",
    "SQLITE_CANTOPEN": f"{UNREACHABLE}: cannot open the database file",
    "SQLITE_PERM": f"{UNREACHABLE}: permission denied",
    "SQLITE_NOTADB": f"{UNREACHABLE}: the file is not a database",
    "SQLITE_CORRUPT": f"{UNREACHABLE}: the file is corrupt",
}
# The writers' lock file beside a SQLite database (relay/store/sqlite.py), by errno.
_LOCK_FILE_ERRORS = {
    errno.ENOSPC: f"{UNWRITABLE}: disk full",
    errno.EROFS: f"{UNWRITABLE}: read-only file system",
    errno.EACCES: f"{UNWRITABLE}: permission denied",
    errno.EPERM: f"{UNWRITABLE}: permission denied",
    errno.ENOENT: f"{UNREACHABLE}: cannot open the database file",
}
_SCHEMA_SQLSTATES = {"42P01": "table", "42703": "column"}  # undefined_table, undefined_column
# Another transaction got in the way; PostgreSQL rolled this one back, and running it again is the cure.
_CONFLICT_SQLSTATES = {"40P01": "deadlock with another transaction", "40001": "serialization failure"}
_SQLITE_MISSING = re.compile(r"no such (table|column): ([\w.]+)|table (\w+) has no column named (\w+)")
_PG_MISSING = re.compile(r'(?:relation|column) "([\w.]+)"')


class LockFileError(OSError):
    """The writers' lock file beside a SQLite database cannot be opened: the database cannot be written either."""


@dataclass(frozen=True)
class StoreProblem:
    """Why the store failed (safe for any reader: no host, user or password) and where it is (host:port or file)."""

    reason: str
    address: str = ""

    def __str__(self):
        return f"{self.reason} ({self.address})" if self.address else self.reason


def conflict(exc: BaseException) -> str | None:
    """Name the clash when PostgreSQL rolled a transaction back for another's sake (deadlock, serialization),
    which is no outage: the transaction is simply run again. None otherwise."""
    return _CONFLICT_SQLSTATES.get(getattr(getattr(exc, "orig", None) or exc, "sqlstate", None))


def describe(exc: BaseException, url) -> StoreProblem | None:
    """Turn a database exception into a short reason with the store's address; None when it is not the store
    failing (a bug, a constraint), which stays a 500."""
    if isinstance(exc, PoolTimeout):
        return StoreProblem(f"{UNREACHABLE}: no free connection in the pool in time", address_of(url))
    if isinstance(exc, LockFileError):
        return StoreProblem(_LOCK_FILE_ERRORS.get(exc.errno, f"{UNWRITABLE}: cannot open its lock file"),
                            address_of(url))
    reason = _reason(getattr(exc, "orig", None) or exc, getattr(exc, "connection_invalidated", False))
    return StoreProblem(reason, address_of(url)) if reason else None


def _reason(orig: BaseException, invalidated: bool) -> str | None:
    """The reason for a driver's (sqlite3 or psycopg) exception, or None when it is not a store failure."""
    kind = {cls.__name__ for cls in type(orig).__mro__}
    text = str(orig).lower()
    missing = _missing_part(orig, text)
    if missing:
        return f"{NOT_MIGRATED}: {missing} missing"
    sqlite_code = getattr(orig, "sqlite_errorname", None)
    if sqlite_code:
        primary = "_".join(sqlite_code.split("_")[:2])
        if primary in _SQLITE_CODES:
            return _SQLITE_CODES[primary]
        return f"database error ({primary})" if "OperationalError" in kind else None
    if not ({"OperationalError", "InterfaceError"} & kind or invalidated
            or getattr(orig, "sqlstate", None) == "25006"):  # read_only_sql_transaction is an InternalError
        return None
    for fragment, reason in _MESSAGES:
        if fragment in text and (fragment not in ("role ", "database ") or "does not exist" in text):
            return reason
    sqlstate = getattr(orig, "sqlstate", None)
    return f"database error (SQLSTATE {sqlstate})" if sqlstate else f"{UNREACHABLE}: connection failed"


def _missing_part(orig: BaseException, text: str) -> str | None:
    """'table NAME' or 'column NAME' when the schema lacks what the relay asked for, else None."""
    part = _SCHEMA_SQLSTATES.get(getattr(orig, "sqlstate", None))
    if part:
        found = _PG_MISSING.search(str(orig))
        return f"{part} {found.group(1)}" if found else part
    found = getattr(orig, "sqlite_errorname", None) and _SQLITE_MISSING.search(text)
    if not found:
        return None
    if found.group(1):
        return f"{found.group(1)} {found.group(2)}"
    return f"column {found.group(3)}.{found.group(4)}"


def address_of(url) -> str:
    """host:port of a server database, or the SQLite file; never the user or password."""
    url = make_url(url)
    if url.get_backend_name() == "sqlite":
        return url.database or ":memory:"
    host = url.host or url.query.get("host") or "localhost"
    port = url.port or DEFAULT_PORTS.get(url.get_backend_name(), "")
    return f"{host}:{port}" if port else str(host)


class Outage:
    """One process's record of a store outage, so that its log says when one starts, again at growing steps while
    it lasts (FIRST_STEP doubling to LAST_STEP), and when it ends: a line per step, not one per failed request or
    retry. The step is also the pause a retrying loop should take."""

    FIRST_STEP = 1.0
    LAST_STEP = 30.0

    def __init__(self, log: logging.Logger, effect: str):
        self.log = log
        self.effect = effect  # what the relay does meanwhile, for the log lines: "webhooks get 503" and such
        self.lock = threading.Lock()
        self.since = None  # time.monotonic() of the outage's first failure; None while the store works
        self.problem = None
        self.failures = 0
        self.step = self.FIRST_STEP
        self.next_report = 0.0

    @property
    def down(self) -> bool:
        """Tell whether the last word on the store was a failure."""
        return self.since is not None

    def failed(self, problem: StoreProblem) -> float:
        """Note a failure; log it when the outage starts, its reason changes or its next step is due; return the
        step (how long a retrying loop should wait)."""
        with self.lock:
            now = time.monotonic()
            self.failures += 1
            fields = {"store_reason": problem.reason, "store_address": problem.address}
            if self.since is None or problem.reason != self.problem.reason:
                self.since, self.problem, self.failures = now, problem, 1
                self.step = self.FIRST_STEP
                self.next_report = now + self.step
                self.log.error("store unavailable: %s; %s", problem, self.effect, extra=fields)
            elif now >= self.next_report:
                self.step = min(2 * self.step, self.LAST_STEP)
                self.next_report = now + self.step
                self.log.error("store still unavailable after %.0f s (%d failures): %s; %s", now - self.since,
                               self.failures, problem, self.effect,
                               extra={**fields, "failures": self.failures, "down_seconds": round(now - self.since, 1)})
            return self.step

    def recovered(self) -> None:
        """Note that the store worked; log the end of the outage, if there was one."""
        if self.since is None:
            return
        with self.lock:
            if self.since is None:
                return
            down = time.monotonic() - self.since
            self.log.warning("store available again after %.0f s (%d failures): %s", down, self.failures,
                             self.problem.address, extra={"store_address": self.problem.address,
                                                          "failures": self.failures, "down_seconds": round(down, 1)})
            self.since, self.problem, self.failures = None, None, 0
