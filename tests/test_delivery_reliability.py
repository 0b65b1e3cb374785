"""Delivery that never loses a page (issue 4), shown with real processes and sockets.

Relays are gunicorn process groups (tests/e2e/harness.py relay_server) posting to the in-process PagerDuty
simulator; webhooks arrive from client threads over HTTP; "kill -9" is SIGKILL to a whole process group. Every wait
is bounded, retry bases and leases are short, and every process and database is removed on the way out.
"""
import os
import secrets
import threading
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
import requests
import sqlalchemy as sa
from conftest import fresh_postgres_database
from e2e.harness import migrate_store, relay_server, wait_for
from sqlalchemy.pool import NullPool

from relay.store.models import DeliveryAttempt, IncidentLog

# RELAY_CLAIM_LEASE_SECONDS where an instance is killed: its rows wait this long. Short, yet well above the
# claim-to-record time of a live worker on a busy 2-core machine (up to ~1 s seen), which has no lease renewal.
LEASE = 5.0
FAST = {  # short timings so every scenario ends in seconds; rate limit off unless it is the point
    "RELAY_RETRY_BASE_SECONDS": "0.05",
    "RELAY_RETRY_MAX_SECONDS": "1",
    "RELAY_CLAIM_LEASE_SECONDS": str(LEASE),
    "RELAY_RATE_LIMIT_PER_MINUTE": "0",
    "RELAY_DELIVERY_POLL_SECONDS": "0.5",
    "RELAY_ACCESS_LOG": "0",  # thousands of requests: keep the logs to what matters
}
NO_KILL = {"RELAY_CLAIM_LEASE_SECONDS": "60"}  # nobody dies: no lease may run out, so any duplicate is a bug
ACCEPTED = "accepted"  # the simulator's outcome for an event applied to alert state
DELIVER_TIMEOUT = 45  # seconds for any outbox to drain once PagerDuty answers
GO_ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of a firing alert


# --- stores ------------------------------------------------------------------------------------------------

class Store:
    """Reads the relays' store from the test process (no pooled connection outlives a query)."""

    def __init__(self, url: str):
        self.url = url
        self.engine = sa.create_engine(url, poolclass=NullPool)

    def rows(self, *where) -> list:
        """incident_log rows, oldest first."""
        log = IncidentLog.__table__.c
        query = sa.select(log.id, log.status, log.event_action, log.dedup_key, log.routing_key, log.claimed_by,
                          log.claimed_until, log.next_attempt_at, log.attempts).where(*where).order_by(log.id)
        with self.engine.connect() as conn:
            return conn.execute(query).all()

    def attempts(self) -> dict[int, list]:
        """delivery_attempt rows by log_id, in the order they were opened."""
        attempt = DeliveryAttempt.__table__.c
        by_log = defaultdict(list)
        with self.engine.connect() as conn:
            for row in conn.execute(sa.select(DeliveryAttempt.__table__).order_by(attempt.id)):
                by_log[row.log_id].append(row)
        return by_log

    def claimers(self) -> set[int]:
        """Process ids holding a lease right now."""
        return {claimer_pid(row.claimed_by) for row in self.rows(IncidentLog.claimed_by.is_not(None))}


@pytest.fixture
def store_url(request, tmp_path):
    """A fresh store: a SQLite file or a new PostgreSQL database (param "sqlite" or "postgresql")."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'relay.sqlite3'}"
    else:
        with fresh_postgres_database() as url:
            yield url


@pytest.fixture
def own_postgres_url():
    """A new PostgreSQL database for this test alone."""
    with fresh_postgres_database() as url:
        yield url


@contextmanager
def instances(tmp_path, pd, database_url: str, env: dict, count: int = 2):
    """Serve one store with `count` relays sharing a routing key: migrated once, started and stopped side by side."""
    migrate_store({**{k: v for k, v in os.environ.items() if k != "RELAY_CONFIG"}, "DATABASE_URL": database_url})
    routing_key = secrets.token_hex(16)
    managers = [relay_server(tmp_path, pd.events_url, routing_key, env, database_url=database_url,
                             name=f"relay-{chr(ord('a') + index)}", migrate=False) for index in range(count)]
    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(manager.__enter__) for manager in managers]
    started = [manager for manager, future in zip(managers, futures) if future.exception() is None]
    try:
        for future in futures:
            if future.exception() is not None:
                raise future.exception()
        yield [future.result() for future in futures]
    finally:  # every started relay is stopped, whatever happened
        with ThreadPoolExecutor(count) as pool:
            list(pool.map(lambda manager: manager.__exit__(None, None, None), started))


@contextmanager
def watching_claimers(store: Store):
    """Collect, every 20 ms in a thread, the process ids holding leases; yield the growing set."""
    seen, done = set(), threading.Event()

    def sample():
        while not done.is_set():
            seen.update(store.claimers())
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield seen
    finally:
        done.set()
        sampler.join(5)


def claimer_pid(claimed_by: str) -> int:
    """The process id in a delivery worker id (host:pid:nonce)."""
    return int(claimed_by.rsplit(":", 2)[1])


def group_pids(relay) -> set[int]:
    """Every live process in the relay's process group: gunicorn's master and its workers."""
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == relay.process.proc.pid:
                    pids.add(int(entry))
            except ProcessLookupError:
                pass
    return pids


def all_delivered(store: Store, expected: int | None = None):
    """Predicate for wait_for: every row delivered (and as many rows as expected)."""
    def check():
        statuses = Counter(row.status for row in store.rows())
        total = sum(statuses.values())
        return statuses["delivered"] == total and (expected is None or total == expected)
    return check


# --- webhooks ----------------------------------------------------------------------------------------------

def am_alert(run: str, name: str, status: str = "firing", episode: int = 0) -> dict:
    """One Alertmanager alert with labels of its own (so its own dedup key), in its n-th episode of firing (each
    starts after the last one resolved, as Prometheus dates them)."""
    started = datetime(2024, 5, 1, 10, tzinfo=timezone.utc) + episode * timedelta(minutes=10)
    return {
        "status": status,
        "labels": {"alertname": "RelayReliability", "run": run, "instance": name, "severity": "critical"},
        "annotations": {"summary": f"{name} is down"},
        "startsAt": f"{started:%Y-%m-%dT%H:%M:%SZ}",
        "endsAt": f"{started + timedelta(minutes=5):%Y-%m-%dT%H:%M:%SZ}" if status == "resolved" else GO_ZERO_TIME,
        "generatorURL": "",
        "fingerprint": uuid.uuid5(uuid.NAMESPACE_OID, run + name).hex[:16],
    }


def notification(alerts: list[dict]) -> dict:
    """An Alertmanager webhook (version 4) carrying the given alerts."""
    return {"version": "4", "groupKey": "{}:{}", "status": alerts[0]["status"], "receiver": "relay",
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am:9093",
            "truncatedAlerts": 0, "alerts": alerts}


@dataclass
class Answer:
    """What one webhook request got back: an HTTP status and the stored events, or a transport error."""

    status: int | None
    events: list
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Burst:
    """Posts sequences of (url, body), each from a client thread of its own in order, keeping every answer."""

    def __init__(self, sequences: list[list[tuple[str, dict]]]):
        self.sequences = sequences
        self.answers = [[None] * len(sequence) for sequence in sequences]
        self.threads = [threading.Thread(target=self._post, args=(index,), daemon=True)
                        for index in range(len(sequences))]

    def start(self) -> "Burst":
        for thread in self.threads:
            thread.start()
        return self

    def join(self, timeout: float = 60) -> list[Answer]:
        """Wait for every request to be answered (or to fail); return the answers in sequence order."""
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(thread.is_alive() for thread in self.threads), "webhook burst still running"
        return self.all()

    def all(self) -> list[Answer]:
        return [answer for answers in self.answers for answer in answers if answer is not None]

    def ok_count(self) -> int:
        return sum(answer.ok for answer in self.all())

    def _post(self, index: int) -> None:
        with requests.Session() as session:
            session.trust_env = False  # loopback only, whatever HTTP(S)_PROXY says
            for position, (url, body) in enumerate(self.sequences[index]):
                try:
                    response = session.post(url, json=body, timeout=10)
                    events = response.json().get("events", []) if response.ok else []
                    self.answers[index][position] = Answer(response.status_code, events)
                except (requests.RequestException, ValueError) as exc:
                    self.answers[index][position] = Answer(None, [], repr(exc))


def split(items: list, parts: int) -> list[list]:
    """Deal items round-robin into `parts` lists."""
    return [items[start::parts] for start in range(parts)]


def accepted_counts(pd) -> Counter:
    """(dedup_key, event_action) → how many times the simulator accepted it."""
    return Counter((body["dedup_key"], body["event_action"]) for body in pd.accepted())


def rows_by_key(rows) -> dict[tuple, int]:
    """(dedup_key, event_action) → how many rows the relay holds for it."""
    return Counter((row.dedup_key, row.event_action) for row in rows)


# --- 1. kill -9 mid-burst while PagerDuty is down ----------------------------------------------------------

@pytest.mark.parametrize("store_url", ["sqlite", "postgresql"], indirect=True)
def test_kill_9_mid_burst_during_outage_loses_nothing_it_answered_2xx(tmp_path, pd, store_url):
    run = uuid.uuid4().hex[:8]
    store = Store(store_url)
    # Retries a little slower than FAST: a hundred rows retrying every few ms would only slow the intake down.
    env = {**FAST, "RELAY_RETRY_BASE_SECONDS": "0.2", "RELAY_RETRY_MAX_SECONDS": "2"}
    pd.set_outage("refuse")  # PagerDuty down: nothing can be in flight to it when the relay dies
    with relay_server(tmp_path, pd.events_url, extra_env=env, database_url=store_url) as relay:
        routing_key = relay.routing_key
        bodies = [(relay.alertmanager_webhook, notification([am_alert(run, f"host-{i:03d}")])) for i in range(300)]
        burst = Burst(split(bodies, 6)).start()
        wait_for(lambda: burst.ok_count() >= 100, 30, interval=0.005, message="100 webhooks answered 2xx")
        relay.process.kill()  # master and workers at once, mid-burst
        answers = burst.join()
    answered = [event for answer in answers if answer.ok for event in answer.events]
    failed = [answer for answer in answers if not answer.ok]
    stored = store.rows()
    print(f"\n[{store_url.split(':')[0]}] kill -9 after {len(answered)} webhooks answered 2xx; "
          f"{len(failed)} failed; {len(stored)} rows stored; "
          f"{len(pd.received())} refused sends before the kill")
    assert len(answers) == 300
    assert failed, "the kill came after the burst: nothing shows a kill mid-burst"
    assert all(answer.status is None for answer in failed), [a for a in failed if a.status is not None][:3]
    assert {event["log_id"] for event in answered} <= {row.id for row in stored}
    assert pd.accepted() == [] and not any(row.status == "delivered" for row in stored)

    refused = len(pd.received())
    with relay_server(tmp_path, pd.events_url, routing_key, env, database_url=store_url, name="relay-restarted",
                      migrate=False):
        wait_for(lambda: len(pd.received()) > refused, 15, message="the restarted relay trying PagerDuty")
        pd.set_outage(None)  # PagerDuty back
        back = time.monotonic()
        wait_for(all_delivered(store, len(stored)), DELIVER_TIMEOUT, message="every stored row delivered")
        drained = time.monotonic() - back
        time.sleep(0.5)  # a duplicate would show up now
        delivered = accepted_counts(pd)
    print(f"  restarted: {len(pd.received()) - refused - len(stored)} more refused sends; PagerDuty back: "
          f"all {len(stored)} rows delivered {drained:.2f}s later")
    for event in answered:
        assert delivered[(event["dedup_key"], event["event_action"])] == 1, event
    assert delivered == rows_by_key(stored)  # every stored row exactly once, nothing else
    assert all(count == 1 for count in rows_by_key(stored).values())  # distinct alerts, one event each
    assert {body["routing_key"] for body in pd.accepted()} == {routing_key}


# --- 2. 503s, then 429s with Retry-After -------------------------------------------------------------------

BACKOFF_BASE, BACKOFF_MAX, RETRY_AFTER = 0.25, 5.0, 3.0


def backoff_ceiling(attempt: int) -> float:
    """The longest backoff after the attempt-th failed attempt (relay/retry.py)."""
    return min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (attempt - 1))


def test_503_window_then_429_retry_after_backoff_visible_in_attempts(tmp_path, pd):
    run = uuid.uuid4().hex[:8]
    # Each row's own backoff, as it runs with the outage probing off (test_outage.py covers the probing).
    env = {**FAST, **NO_KILL, "RELAY_RETRY_BASE_SECONDS": str(BACKOFF_BASE),
           "RELAY_RETRY_MAX_SECONDS": str(BACKOFF_MAX), "RELAY_OUTAGE_PROBING": "0"}
    pd.inject(503, count=12)  # a window of 503s (about three per event), then rate limiting
    pd.inject(429, count=4, retry_after=int(RETRY_AFTER))
    with relay_server(tmp_path, pd.events_url, extra_env=env) as relay:
        store = Store(relay.database_url)
        answer = requests.post(relay.alertmanager_webhook, timeout=10,
                               json=notification([am_alert(run, f"db-{i}") for i in range(4)]))
        assert answer.status_code == 202
        wait_for(all_delivered(store, 4), DELIVER_TIMEOUT, message="4 events delivered after 503s and 429s")
        attempts = store.attempts()
    statuses = Counter(record["status"] for record in pd.received())
    assert statuses == {503: 12, 429: 4, 202: 4}
    assert accepted_counts(pd) == rows_by_key(store.rows())  # each event once

    doubling, retry_after_gaps = 0, []
    print()
    for log_id, tries in sorted(attempts.items()):
        assert [t.outcome for t in tries] == ["retry"] * (len(tries) - 1) + ["delivered"]
        gaps = [(later.started_at - earlier.started_at).total_seconds() for earlier, later in zip(tries, tries[1:])]
        print(f"  row {log_id}: " + ", ".join(f"{t.http_status} +{gap:.3f}s" for t, gap in zip(tries, gaps))
              + f", {tries[-1].http_status}")
        for number, (attempt, gap) in enumerate(zip(tries, gaps), start=1):
            if attempt.http_status == 503:  # exponential backoff with jitter: at least half the ceiling, which
                assert gap >= backoff_ceiling(number) / 2, (log_id, number, gap)  # doubles with each attempt
                doubling += number == 3
            else:  # 429 with Retry-After: 3 — waited for, however short the backoff
                assert attempt.http_status == 429 and gap >= RETRY_AFTER, (log_id, number, gap)
                if backoff_ceiling(number) < RETRY_AFTER:
                    retry_after_gaps.append(gap)
    assert sum(len(tries) for tries in attempts.values()) == 20
    assert retry_after_gaps, "no 429 came early enough for Retry-After to be what delayed the retry"
    assert doubling, "no row saw three 503s in a row: too little backoff to show"


# --- 3. two instances on one PostgreSQL: 2,000 events, then one killed -------------------------------------

def test_two_instances_on_postgresql_deliver_2000_once_and_survive_a_kill(tmp_path, pd, own_postgres_url):
    run = uuid.uuid4().hex[:8]
    store = Store(own_postgres_url)
    with instances(tmp_path, pd, own_postgres_url, FAST) as (first, second), watching_claimers(store) as claimers:
        pd.set_latency(0.005)  # a little, so leases last long enough to be seen
        started = time.monotonic()
        batches = [[am_alert(run, f"svc-{b:03d}-{i:02d}") for i in range(20)] for b in range(100)]
        bodies = [((first, second)[b % 2].alertmanager_webhook, notification(alerts))
                  for b, alerts in enumerate(batches)]
        answers = Burst(split(bodies, 8)).start().join()
        accepted_in = time.monotonic() - started
        assert all(answer.ok for answer in answers) and sum(len(a.events) for a in answers) == 2000
        wait_for(all_delivered(store, 2000), DELIVER_TIMEOUT, message="2,000 events delivered")
        elapsed = time.monotonic() - started
        time.sleep(0.5)  # a duplicate would show up now
        delivered, stored = accepted_counts(pd), store.rows()
        pids_first, pids_second = group_pids(first), group_pids(second)
        print(f"\n  2,000 events through 2 instances: accepted in {accepted_in:.1f}s, all delivered at {elapsed:.1f}s; "
              f"claimers seen: {len(claimers & pids_first)} in A, {len(claimers & pids_second)} in B")
        assert len(delivered) == 2000 and set(delivered.values()) == {1}  # none twice
        assert delivered == rows_by_key(stored)  # none lost
        assert claimers & pids_first and claimers & pids_second, "both instances should have been delivering"

        # Now A dies mid-send while PagerDuty is slow, in a burst posted to B (A claims through NOTIFY):
        # B takes A's rows over once their lease ends.
        pd.set_latency(0.5)
        before = len(stored)
        batches = [[am_alert(run, f"slow-{b:02d}-{i:02d}") for i in range(10)] for b in range(20)]
        burst = Burst(split([(second.alertmanager_webhook, notification(alerts)) for alerts in batches], 2)).start()
        wait_for(lambda: store.claimers() & pids_first, 15, interval=0.01, message="instance A holding rows")
        first.process.kill()
        killed_at = time.monotonic()
        held = {row.id: row.claimed_until for row in store.rows(IncidentLog.claimed_by.is_not(None))
                if claimer_pid(row.claimed_by) in pids_first and row.status in ("pending", "retrying")}
        assert all(answer.ok for answer in burst.join()) and len(burst.all()) == 20
        wait_for(all_delivered(store, before + 200), DELIVER_TIMEOUT, message="B finishing A's rows")
        finished_after = time.monotonic() - killed_at
        time.sleep(0.6)  # a late answer from the slow simulator would show up now
        delivered, attempts = accepted_counts(pd), store.attempts()
        rows = store.rows(IncidentLog.id > stored[-1].id)
    print(f"  A killed holding {len(held)} rows; B finished all 200 in {finished_after:.1f}s after the kill; "
          f"{sum(delivered[(r.dedup_key, r.event_action)] - 1 for r in rows)} sent twice (in flight at the kill)")
    assert held, "instance A held no rows when it was killed"
    for row in rows:  # none lost; only a row A had on the wire may have reached PagerDuty twice
        assert 1 <= delivered[(row.dedup_key, row.event_action)] <= (2 if row.id in held else 1), row
    for log_id, claimed_until in held.items():
        *earlier, last = attempts[log_id]
        assert last.outcome == "delivered" and last.started_at >= claimed_until  # B waited out A's lease
        assert [attempt.outcome for attempt in earlier][-1:] == ["abandoned"]  # A's send, marked as such


# --- 4. trigger/resolve pairs with random 5xx: order kept --------------------------------------------------

@pytest.mark.parametrize("store_url", ["sqlite", "postgresql"], indirect=True)
def test_resolve_never_overtakes_its_trigger_under_random_5xx(tmp_path, pd, store_url):
    run = uuid.uuid4().hex[:8]
    store = Store(store_url)
    # send_flapping: every trigger and resolve is sent, so the order of all 1,000 can be checked (without it, a
    # trigger still unsent when its resolve arrives is superseded with it: tests/test_collapse.py).
    flapping = tmp_path / "flapping.py"
    flapping.write_text('DEFAULT_ROUTE = {"name": "default", "routing_key_env": "PAGERDUTY_ROUTING_KEY", '
                        '"send_flapping": True}\n')
    env = {**FAST, **NO_KILL, "RELAY_CONFIG": str(flapping)}
    pd.set_error_rate(0.3, 503, seed=4)
    # On PostgreSQL across instances too: triggers posted to A, resolves to B.
    with instances(tmp_path, pd, store_url, env, count=2 if store_url.startswith("postgresql") else 1) as relays:
        names = [f"flappy-{i:02d}" for i in range(50)]
        sequences = []
        for mine in split(names, 5):  # a client thread per 10 alerts: all firing, all resolved, ten times over
            sequences.append([((relays[0] if status == "firing" else relays[-1]).alertmanager_webhook,
                               notification([am_alert(run, name, status, episode) for name in mine]))
                              for episode in range(10) for status in ("firing", "resolved")])
        started = time.monotonic()
        answers = Burst(sequences).start().join()
        assert all(answer.ok for answer in answers) and sum(len(answer.events) for answer in answers) == 1000
        wait_for(all_delivered(store, 1000), DELIVER_TIMEOUT, message="1,000 events delivered")
        elapsed = time.monotonic() - started
        rows, attempts = store.rows(), store.attempts()
    records = pd.received()
    faults = sum(record["outcome"] == "injected-fault" for record in records)
    print(f"\n  [{store_url.split(':')[0]}] 1,000 events, {faults} of {len(records)} sends answered 503, "
          f"all delivered in order in {elapsed:.1f}s")
    assert faults >= 0.2 * len(records), "too few 5xx to mean anything"
    dropped = {record["dedup_key"] for record in records if record["outcome"] == "dropped"}
    assert not dropped, "\n\n".join(explain(key, records, rows, attempts) for key in dropped)
    accepted_order, relay_order = defaultdict(list), defaultdict(list)
    for record in records:
        if record["outcome"] == ACCEPTED:
            accepted_order[record["dedup_key"]].append(record["body"]["event_action"])
    for row in rows:
        relay_order[row.dedup_key].append(row.event_action)
    assert len(relay_order) == 50
    for dedup_key, actions in relay_order.items():
        assert actions == ["trigger", "resolve"] * 10  # accepted in the order posted
        assert accepted_order[dedup_key] == actions, explain(dedup_key, records, rows, attempts)


def explain(dedup_key: str, records: list, rows: list, attempts: dict) -> str:
    """What the simulator and the relay saw for one alert, for a failure message."""
    start = records[0]["received_at"]
    lines = [f"{record['received_at'] - start:8.3f}s sim {record['body'].get('event_action')} {record['outcome']}"
             for record in records if isinstance(record["body"], dict) and record["body"].get("dedup_key") == dedup_key]
    for row in rows:
        if row.dedup_key == dedup_key:
            lines += [f"row {row.id} {row.event_action}: attempt {a.started_at:%H:%M:%S.%f} {a.outcome} {a.http_status}"
                      f" {a.duration_ms}ms" for a in attempts[row.id]]
    return "\n".join(lines)


# --- 5. the rate limit, shared by two instances ------------------------------------------------------------

def test_rate_limit_is_shared_across_two_instances(tmp_path, pd, own_postgres_url):
    run = uuid.uuid4().hex[:8]
    store = Store(own_postgres_url)
    # Few slots per delivery process, so both instances claim small batches side by side and race for the last
    # of the budget, instead of one claim taking every row.
    env = {**FAST, **NO_KILL, "RELAY_RATE_LIMIT_PER_MINUTE": "30", "RELAY_DELIVERY_CONCURRENCY": "4"}
    with instances(tmp_path, pd, own_postgres_url, env) as (first, second), watching_claimers(store) as claimers:
        pd.set_latency(0.15)  # long enough for both instances to join in, and for the sampler to see who does
        alerts = [am_alert(run, f"api-{i:03d}") for i in range(100)]
        bodies = [((first, second)[i % 2].alertmanager_webhook, notification(alerts[i::4])) for i in range(4)]
        answers = Burst([[body] for body in bodies]).start().join()  # all at once, two to each instance
        assert all(answer.ok for answer in answers) and sum(len(answer.events) for answer in answers) == 100
        wait_for(lambda: len(pd.received()) >= 30, 20, message="the first 30 events")
        time.sleep(3)  # four delivery workers, all eager: none may send more this minute
        records = pd.received()
        rows = store.rows()
        attempts = store.attempts()
        senders = [len(claimers & group_pids(relay)) for relay in (first, second)]
    print(f"\n  limit 30/min on 2 instances, 100 events: {len(records)} received in the first "
          f"{records[-1]['received_at'] - records[0]['received_at']:.2f}s + 3s; claiming processes {senders}")
    assert all(senders), "both instances should have been sending"
    assert len(records) == 30 and all(record["outcome"] == ACCEPTED for record in records)
    assert Counter(row.status for row in rows) == {"delivered": 30, "pending": 70}
    first_send = min(attempt.started_at for tries in attempts.values() for attempt in tries)
    waiting = [row for row in rows if row.status == "pending"]
    # The excess waits in the outbox for the window to move on: a minute after the first send.
    assert min(row.next_attempt_at for row in waiting) >= first_send + timedelta(seconds=59)


# --- 6. Alertmanager in HA: a lagging replica's firing, a resolve before its trigger (issue 18, item 8) ------

@pytest.mark.parametrize("store_url", ["sqlite", "postgresql"], indirect=True)
def test_a_lagging_replica_or_a_resolve_before_its_trigger_leaves_no_incident_open(tmp_path, pd, store_url):
    run = uuid.uuid4().hex[:8]
    store = Store(store_url)
    env = {**FAST, **NO_KILL}
    # Each replica posts to an instance of its own (on PostgreSQL two relays share the store), all alerts at once.
    with instances(tmp_path, pd, store_url, env, count=2 if store_url.startswith("postgresql") else 1) as relays:
        first, lagging = relays[0].alertmanager_webhook, relays[-1].alertmanager_webhook
        sequences = []
        for index in range(20):  # one replica fires and resolves; the other's firing arrives after the resolve
            name = f"ha-{index:02d}"
            sequences.append([(first, notification([am_alert(run, name)])),
                              (first, notification([am_alert(run, name, "resolved")])),
                              (lagging, notification([am_alert(run, name)]))])
        for index in range(20):  # the resolve overtakes its trigger on the way to the relay
            name = f"early-{index:02d}"
            sequences.append([(lagging, notification([am_alert(run, name, "resolved")])),
                              (first, notification([am_alert(run, name)]))])
        burst = Burst(sequences).start()
        answers = burst.join()
        assert all(answer.ok for answer in answers) and len(answers) == 100

        def settled():
            statuses = Counter(row.status for row in store.rows())
            return statuses["delivered"] + statuses["stale"] + statuses["superseded"] == 100 and statuses

        statuses = wait_for(settled, DELIVER_TIMEOUT, message="every row delivered, stale or superseded")
        time.sleep(0.5)  # a stale row sent by mistake would show up now
        rows = store.rows()
    # A trigger still unsent when its resolve arrived is superseded with it (relay/store/collapse.py): neither is sent.
    collapsed = statuses["superseded"] // 2
    assert statuses == Counter({"delivered": 60 - 2 * collapsed, "stale": 40, "superseded": 2 * collapsed})
    late = [sequence[-1].events[0] for sequence in burst.answers]
    assert all(event["status"] == "stale" for event in late)
    assert {row.dedup_key for row in rows if row.status == "stale"} == {event["dedup_key"] for event in late}
    still_open = [alert for alert in pd.alerts() if alert["status"] != "resolved"]
    assert not still_open, f"{len(still_open)} incidents left open, e.g. {still_open[0]}"
    assert Counter(body["event_action"] for body in pd.accepted()) == Counter({"trigger": 20 - collapsed,
                                                                               "resolve": 20 - collapsed})
