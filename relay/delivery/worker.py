"""The delivery worker: claims due incident_log rows, sends them concurrently, records the outcomes.

Under gunicorn one delivery process per host (`flask relay worker`, started by gunicorn.conf.py), or a thread
in the process that needs it (CLI jobs when no delivery process runs, tests). A new row wakes it at once:
in-process through wake(), from other processes through the store's watch for new rows; a slow poll is the
fallback. Each row goes to the events URL it was stored for. A lasting worker beats the store's registry of
delivery processes, so the CLI and the job's answers know whether, where and to which endpoint delivery runs.
"""
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from flask import current_app
from sqlalchemy import select

from relay import logs, metrics
from relay.delivery import duties
from relay.pagerduty.client import PagerDutyClient, safe_url
from relay.pagerduty.retry import RetryPolicy
from relay.store import claim, complete, endpoints, failures, outbox, processes, retention, states
from relay.store.models import IncidentLog, db, utcnow

log = logging.getLogger(__name__)

PRUNE_INTERVAL_SECONDS = 3600
LINGER_SECONDS = 0.005  # how long a finished send may wait to be recorded with others
MISDIRECTED_LOG_SECONDS = 60  # one line about a wrong events URL per this long: a backlog would repeat it per row
# How often a lasting worker beats the registry: well inside stalled_after, and rarely, since on SQLite each beat
# takes the write lock webhooks wait for.
BEAT_SECONDS = 5.0
FORGET_AFTER = timedelta(hours=1)  # registry rows silent this long (a killed process's) go when another registers
_worker = None  # this process's worker, if one runs here
_worker_lock = threading.Lock()


def policy_from(config) -> RetryPolicy:
    """Build the retry rule from the app's settings."""
    return RetryPolicy(config["RELAY_RETRY_BASE_SECONDS"], config["RELAY_RETRY_MAX_SECONDS"],
                       config["RELAY_GIVE_UP_AFTER_SECONDS"])


def outage_rule_from(config) -> endpoints.OutageRule | None:
    """Build the outage rule from the app's settings; None when probing is off."""
    if not config.get("RELAY_OUTAGE_PROBING", True):
        return None
    base = config["RELAY_RETRY_BASE_SECONDS"]
    return endpoints.OutageRule(config["PAGERDUTY_EVENTS_URL"], base,
                                max(base, config.get("RELAY_OUTAGE_PROBE_MAX_SECONDS", 30.0)))


def stalled_after(poll_seconds: float) -> float:
    """Seconds a delivery loop may go without coming round before it counts as stalled."""
    return max(30.0, 3 * poll_seconds)


class DeliveryWorker:
    """Moves rows from the outbox to PagerDuty with a pool of concurrent senders; registered (beating the store's
    registry) unless it only serves one command and stops with it."""

    def __init__(self, app, registered: bool = True):
        config = app.config
        self.app = app
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.id = f"{self.host}:{self.pid}:{uuid.uuid4().hex[:6]}"
        self.registered = registered
        self.started_at = utcnow()
        self.next_beat = 0.0
        self.concurrency = config["RELAY_DELIVERY_CONCURRENCY"]
        self.poll_seconds = config["RELAY_DELIVERY_POLL_SECONDS"]
        self.lease_seconds = config["RELAY_CLAIM_LEASE_SECONDS"]
        self.per_minute = config["RELAY_RATE_LIMIT_PER_MINUTE"]
        self.policy = policy_from(config)
        self.outage_rule = outage_rule_from(config)
        self.events_url = config["PAGERDUTY_EVENTS_URL"]  # for rows stored without one
        self.clients: dict[str, PagerDutyClient] = {}  # by events URL; made by the loop's thread only
        self.senders = ThreadPoolExecutor(self.concurrency, thread_name_prefix="relay-send")
        self.results = deque()  # (claimed, delivery, finished at) from the senders; appends are thread-safe
        self.batch = max(1, self.concurrency // 8)
        self.inflight = 0
        self.wake_event = threading.Event()
        self.stopping = threading.Event()
        self.heartbeat = time.monotonic()
        self.watchers: dict[int, threading.Event] = {}
        self.watchers_lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="relay-delivery", daemon=True)
        self.listener = None
        self.conn = None  # the delivery loop's connection, see _connection
        self.prune_after = config["RELAY_PRUNE_DELIVERED_AFTER"]
        self.next_prune = time.monotonic() + 60  # not in the middle of start-up
        self.misdirected_quiet_until = 0.0
        self.outage = failures.Outage(log, "delivery paused, retrying")
        self.reconnected = False  # a dead kept connection was replaced at once since the store last worked
        offered = duties.enabled(config) if registered else []
        self.duties = duties.DutyRunner(app, self.id, offered, self.wake) if offered else None

    def start(self):
        """Start delivering, and watching for other processes' new rows."""
        self.thread.start()
        with self.app.app_context():
            watch = outbox.new_rows_watcher(db.engine)
        if watch is not None:
            self.listener = threading.Thread(target=watch, args=(self.wake, self.stopping), name="relay-listen",
                                             daemon=True)
            self.listener.start()
        if self.duties is not None:
            self.duties.start()
        return self

    def stop(self, timeout: float = 15.0):
        """Stop claiming, let in-flight sends finish and be recorded, then return."""
        self.stopping.set()
        self.wake()
        if self.duties is not None:
            self.duties.stop()
        self.thread.join(timeout)
        self.senders.shutdown(wait=False, cancel_futures=True)
        for client in list(self.clients.values()):
            client.close()

    def wake(self):
        """Make the worker look for due rows now."""
        self.wake_event.set()

    def watch(self, log_id: int) -> threading.Event:
        """Return an event set whenever an attempt on the row is recorded here."""
        with self.watchers_lock:
            return self.watchers.setdefault(log_id, threading.Event())

    def unwatch(self, log_id: int):
        """Stop telling about the row."""
        with self.watchers_lock:
            self.watchers.pop(log_id, None)

    @property
    def alive(self) -> bool:
        """Tell whether the delivery loop has run recently."""
        return self.thread.is_alive() and time.monotonic() - self.heartbeat < stalled_after(self.poll_seconds)

    def _run(self):
        with self.app.app_context():
            engine = db.engine
            while not (self.stopping.is_set() and self.inflight == 0):
                self.heartbeat = time.monotonic()
                if self.registered:
                    self._beat(engine)
                try:
                    if not self._step(engine):
                        self._idle(engine)
                except Exception as exc:  # noqa: BLE001 - a store outage pauses delivery, it never ends it
                    self._drop_connection()
                    if not self._pause_after(exc, engine):
                        if self.inflight:
                            log.warning("stopping before the store could record %d sends: their rows are sent "
                                        "again once their claims' lease ends", self.inflight)
                        break
            self._drop_connection()
            if self.registered:
                self._unregister(engine)

    def _beat(self, engine):
        """Tell the registry this loop still delivers, at most every BEAT_SECONDS; a failure is logged, and
        delivery goes on."""
        if time.monotonic() < self.next_beat:
            return
        self.next_beat = time.monotonic() + BEAT_SECONDS
        now = utcnow()
        try:
            conn = self._connection(engine)
            with outbox.write_transaction(conn):
                processes.beat(conn, self.id, self.host, self.pid, self.events_url, self.started_at, now,
                               now - FORGET_AFTER)
        except Exception as exc:  # noqa: BLE001 - the registry informs; it must never stop delivery
            if failures.describe(exc, engine.url) is None:  # a store outage is the step's to report, once
                log.warning("cannot record this delivery process in the store's registry (%s); delivery goes on",
                            type(exc).__name__)
            self._drop_connection()

    def _unregister(self, engine):
        """Remove this loop's row from the registry: it delivers no more."""
        try:
            with outbox.writer_connection(engine) as conn, outbox.write_transaction(conn):
                processes.forget(conn, self.id)
        except Exception as exc:  # noqa: BLE001 - the row expires by itself
            log.warning("cannot remove this delivery process from the store's registry (%s)", type(exc).__name__)

    def _pause_after(self, exc, engine) -> bool:
        """Wait before trying again, longer while the store stays down; False if told to stop meanwhile."""
        clash = failures.conflict(exc)
        if clash:  # another instance's step crossed this one's locks; its results are kept for the next step
            log.info("delivery step rolled back (%s); running it again", clash)
            return True
        problem = failures.describe(exc, engine.url)
        if problem is None:
            log.exception("delivery step failed; retrying in a second")
            return self._wait(1.0)
        if getattr(exc, "connection_invalidated", False) and not (self.outage.down or self.reconnected):
            self.reconnected = True  # the kept connection died (a database restart, say): a new one may work now
            log.info("delivery connection lost: %s; reconnecting at once", problem,
                     extra={"store_reason": problem.reason, "store_address": problem.address})
            return True
        return self._wait(self.outage.failed(problem))

    def _wait(self, seconds: float) -> bool:
        """Sleep, still beating (a pause is not a stall); False if told to stop meanwhile."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.heartbeat = time.monotonic()
            if self.stopping.wait(min(left, 1.0)):
                return False
        return True

    def _store_worked(self):
        """Note that the store answered: end an outage in the log."""
        self.reconnected = False
        self.outage.recovered()

    def _connection(self, engine):
        """The loop's own connection, kept between steps (no pool checkout or ping per step)."""
        if self.conn is None:
            self.conn = outbox.writer_connection(engine)
        return self.conn

    def _drop_connection(self):
        """Discard the loop's connection; the next step opens a fresh one."""
        if self.conn is not None:
            self.conn.invalidate()  # after a failure its state is unknown: never back into the pool
            self.conn.close()
            self.conn = None

    def _step(self, engine) -> bool:
        """Record finished sends and claim more, in one transaction; tell whether anything happened."""
        finished = self._ready_results()
        slots = self.concurrency - self.inflight
        # Busy, claim a batch of slots per transaction rather than one per finished send.
        wanted = slots > 0 and not self.stopping.is_set() and (self.inflight == 0 or slots >= self.batch)
        if not (finished or wanted):
            return False
        try:
            conn = self._connection(engine)
            with outbox.write_transaction(conn):
                now = utcnow()
                moves = (complete.complete(conn, self.id, finished, now, self.policy, self.outage_rule)
                         if finished else [])
                claimed = (claim.claim(conn, self.id, slots, now, self.lease_seconds, self.per_minute,
                                        self.outage_rule) if wanted else [])
        except Exception:
            self._keep(finished)  # recorded by the next step, not lost with this transaction
            raise
        self._store_worked()
        if finished:
            metrics.delivered(finished, moves)
            logs.delivery_outcomes(finished, moves)
            self._report_misdirected(finished)
            self._notify(finished)
        for item in claimed:
            self.inflight += 1
            self.senders.submit(self._send, self._client(item.events_url), item)
        return bool(finished or claimed)

    def _client(self, events_url: str | None) -> PagerDutyClient:
        """The client for a row's events URL (this process's own for rows stored without one), made once."""
        url = events_url or self.events_url
        client = self.clients.get(url)
        if client is None:
            config = self.app.config
            client = self.clients[url] = PagerDutyClient(url, config["PAGERDUTY_CONNECT_TIMEOUT"],
                                                         config["PAGERDUTY_READ_TIMEOUT"], pool_size=self.concurrency)
        return client

    def _report_misdirected(self, finished):
        """Name the events URLs (never a key) in the log when answers say they are wrong, at most once a while."""
        wrong = [(item, delivery) for item, delivery in finished if delivery.misdirected]
        if not wrong or time.monotonic() < self.misdirected_quiet_until:
            return
        self.misdirected_quiet_until = time.monotonic() + MISDIRECTED_LOG_SECONDS
        statuses = sorted({delivery.http_status for _, delivery in wrong})
        urls = sorted({safe_url(item.events_url or self.events_url) for item, _ in wrong})
        log.error("answers from PAGERDUTY_EVENTS_URL %s (the one the rows were stored for) are not the Events API's "
                  "(HTTP %s): the URL is wrong or a proxy is in the way; the events stay in the outbox and are retried",
                  ", ".join(urls), ", ".join(map(str, statuses)),
                  extra={"events_url": urls[0] if len(urls) == 1 else urls, "http_status": statuses})

    def _keep(self, finished):
        """Put results whose recording failed back at the head of the queue."""
        now = time.monotonic()
        self.inflight += len(finished)
        self.results.extendleft((item, delivery, now) for item, delivery in reversed(finished))

    def _send(self, client, item):
        try:
            delivery = client.send(item.event)
            self.results.append((item, delivery, time.monotonic()))
        finally:
            self.wake()

    def _ready_results(self):
        """Take finished sends to record: once a batch is ready, nothing else is in flight, or one waited long."""
        waiting = len(self.results)
        if not waiting:
            return []
        lingered = time.monotonic() - self.results[0][2] >= LINGER_SECONDS
        if waiting < self.batch and waiting < self.inflight and not lingered:
            return []
        finished = [self.results.popleft()[:2] for _ in range(waiting)]
        self.inflight -= len(finished)
        return finished

    def _notify(self, finished):
        with self.watchers_lock:
            for item, _ in finished:
                if item.log_id in self.watchers:
                    self.watchers[item.log_id].set()

    def _idle(self, engine):
        """Sleep until woken, until the next row is due, or for the poll interval."""
        timeout = LINGER_SECONDS if self.results else self.poll_seconds
        if self.registered:
            timeout = min(timeout, max(0.01, self.next_beat - time.monotonic()))
        if self.inflight == 0 and not self.stopping.is_set():
            with engine.connect() as conn:
                due = claim.next_due_at(conn, utcnow())
            self._store_worked()
            if due is not None:
                timeout = min(timeout, max(0.01, (due - utcnow()).total_seconds()))
        self._prune_when_due(engine)
        self.wake_event.wait(timeout)
        self.wake_event.clear()

    def _prune_when_due(self, engine):
        """Delete delivered rows past their retention, at most once per prune interval."""
        if not self.prune_after or time.monotonic() < self.next_prune:
            return
        self.next_prune = time.monotonic() + PRUNE_INTERVAL_SECONDS
        deleted = retention.prune(engine, utcnow() - self.prune_after, [states.DELIVERED])
        if deleted:
            log.info("pruned %d delivered rows older than %s", deleted, self.prune_after)


def start(app, registered: bool = True) -> DeliveryWorker:
    """Start this process's delivery worker (once); registered=False for one that stops with its command, which
    other processes must not count on."""
    global _worker
    with _worker_lock:
        if _worker is None:
            _worker = DeliveryWorker(app, registered).start()
        return _worker


def stop():
    """Stop this process's delivery worker, if any."""
    global _worker
    with _worker_lock:
        worker, _worker = _worker, None
    if worker:
        worker.stop()


def current() -> DeliveryWorker | None:
    """Return this process's worker, or None when delivery runs elsewhere."""
    return _worker


def delivering_process():
    """The delivery process that sends stored rows now (id, host, pid, events_url): this process's own registered
    worker, or the one that beat last within the stall threshold; None when none does."""
    own = _worker
    if own is not None and own.registered and own.alive:
        return own
    threshold = stalled_after(current_app.config["RELAY_DELIVERY_POLL_SECONDS"])
    found = processes.beating(db.session, utcnow() - timedelta(seconds=threshold))
    db.session.commit()  # end the read: the caller's next look must see new commits
    return found[0] if found else None


def wake():
    """Tell this process's worker that new rows wait."""
    if _worker is not None:
        _worker.wake()


def wait_for_outcome(log_id: int, timeout: float) -> str:
    """Wait up to timeout seconds for the row to be delivered, refused or given up; return its status."""
    worker = current()
    signal = worker.watch(log_id) if worker else None
    wake()
    deadline = time.monotonic() + timeout
    try:
        while True:
            status = db.session.execute(select(IncidentLog.status).where(IncidentLog.id == log_id)).scalar()
            db.session.commit()  # end the read so the next look sees new commits
            remaining = deadline - time.monotonic()
            if status in states.FINAL or remaining <= 0:
                return status
            if signal is not None:
                signal.wait(min(remaining, 0.25))  # the poll also covers a row another process claimed
                signal.clear()
            else:
                time.sleep(min(remaining, 0.02))
    finally:
        if worker:
            worker.unwatch(log_id)
