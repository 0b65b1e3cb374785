"""Outages per PagerDuty endpoint (a row's events URL), shared through the store's endpoint_state table.

When sends to an endpoint fail with 5xx, timeouts or connection errors DOWN_AFTER times in a row, it is down: its
rows stop retrying each on its own, and one probe at a time (the oldest due row, sent for real) goes, spaced from
RELAY_RETRY_BASE_SECONDS doubling up to RELAY_OUTAGE_PROBE_MAX_SECONDS. Any answer from PagerDuty (accepted,
refused, rate limited) ends the outage, and every row waiting on it is due at once; the claim still keeps order per
alert and each key's budget. A 429 is one key's, no outage (relay/store/rate_budget.py holds that key alone).

Every change happens inside the delivery step's transaction, under the backend's endpoint lock (SQLite's write
lock; a PostgreSQL advisory lock), taken only when there is something to change: while every endpoint is up and
answers, a step reads the small table and nothing more; when taken, before any row lock of the step. So instances
never probe one endpoint twice at once.
"""
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, insert, or_, select, text, update

from relay.pagerduty.client import safe_url
from relay.store import states
from relay.store.models import EndpointState, IncidentLog

log = logging.getLogger(__name__)

DOWN_AFTER = 3  # outage failures in a row (no answer between) that make an endpoint down: one lost send is not
# an outage
# A down endpoint's rows other than its probe wait this long at most: the probe that gets through makes them all due
# at once, and the failed probe stays due for the next, so they need not be read again at every probe.
HELD_WHILE_DOWN = timedelta(minutes=5)
SUCCESS_NOTE_SECONDS = 1.0  # last_success_at is written at most this often while up: /metrics' resolution
RATE_LIMITED = 429


@dataclass(frozen=True)
class OutageRule:
    """How outages are handled: where rows without an events URL go, and the probes' spacing."""

    default_url: str
    probe_base_seconds: float = 1.0
    probe_max_seconds: float = 30.0


def endpoint_of(events_url: str | None, rule: OutageRule) -> str:
    """The endpoint a row is sent to."""
    return events_url or rule.default_url


def is_outage(delivery) -> bool:
    """Tell whether a failed send says the endpoint is unreachable (5xx, timeout, connection error), rather than
    something about this event or key (400, 429) or a wrong URL."""
    status = delivery.http_status
    return (delivery.outcome == states.RETRY and not delivery.misdirected
            and (status is None or status >= 500))


def answered(delivery) -> bool:
    """Tell whether PagerDuty itself answered: it accepted, refused, or rate limited the event."""
    return delivery.outcome in (states.DELIVERED, states.FAILED) or delivery.http_status == RATE_LIMITED


def _rows_of(url: str, rule: OutageRule):
    """The condition: a row is sent to this endpoint."""
    if url == rule.default_url:
        return or_(IncidentLog.events_url == url, IncidentLog.events_url.is_(None))
    return IncidentLog.events_url == url


_OPEN = text(f"incident_log.{states.OPEN_SQL}")
_STATE_FIELDS = ("failures", "down_since", "probe_at", "probe_delay", "probe_until", "last_success_at",
                 "last_failure_at", "last_error")


def _load(conn, urls=None) -> dict[str, dict]:
    query = select(*EndpointState.__table__.c)
    if urls is not None:
        query = query.where(EndpointState.events_url.in_(sorted(urls)))
    return {row.events_url: dict(row._mapping) for row in conn.execute(query)}


def down(conn) -> dict[str, dict]:
    """The endpoints that are down now, with their state, by URL."""
    return {row.events_url: dict(row._mapping)
            for row in conn.execute(select(*EndpointState.__table__.c).where(EndpointState.down_since.is_not(None)))}


def gate(rows, down_now: dict[str, dict], now: datetime, rule: OutageRule):
    """Split candidate rows (id order, with events_url) into rows that may go and rows held until their endpoint's
    next probe; of a down endpoint's rows only the first goes, and only when its probe is due and none is in
    flight. Return (rows, held {id: moment}, probes {url: log id})."""
    going, held, probes = [], {}, {}
    for row in rows:
        url = endpoint_of(row.events_url, rule)
        state = down_now.get(url)
        if state is None:
            going.append(row)
            continue
        in_flight = state["probe_until"] is not None and state["probe_until"] > now
        if url not in probes and state["probe_at"] <= now and not in_flight:
            probes[url] = row.id
            going.append(row)
        else:
            held[row.id] = now + HELD_WHILE_DOWN
    return going, held, probes


def probes_sent(conn, probes: dict[str, int], taken_ids, now: datetime, lease_seconds: float,
                rule: OutageRule) -> None:
    """Mark each endpoint whose probe the claim took: the probe is in flight, and the next waits twice as long."""
    taken = set(taken_ids)
    for url, log_id in probes.items():
        if log_id not in taken:
            continue
        state = _load(conn, [url])[url]
        delay = min(2 * state["probe_delay"], rule.probe_max_seconds)
        conn.execute(update(EndpointState).where(EndpointState.events_url == url).values(
            probe_until=now + timedelta(seconds=lease_seconds), probe_delay=delay,
            probe_at=now + timedelta(seconds=delay)))


_HOLD_FAILED = update(IncidentLog).where(IncidentLog.id.in_(bindparam("ids", expanding=True)),
                                         IncidentLog.status == states.RETRYING).values(
    next_attempt_at=bindparam("until"))


def _advance(state: dict, items, now: datetime, rule: OutageRule):
    """Move one endpoint's state on by its results, in order; return the new state, the rows that failed while it
    was down (they wait for its next probe), and when the outage it ended began (None if it ended none)."""
    state, failed_ids, ended = dict(state), [], None
    for claimed, delivery in items:
        if answered(delivery):
            if state["down_since"] is not None:
                ended = state["down_since"]
            note = state["last_success_at"] is None or now - state["last_success_at"] >= timedelta(
                seconds=SUCCESS_NOTE_SECONDS)
            state.update(failures=0, down_since=None, probe_at=None, probe_delay=None, probe_until=None,
                         last_success_at=now if note else state["last_success_at"])
            failed_ids = []
        elif is_outage(delivery):
            state.update(failures=state["failures"] + 1, last_failure_at=now,
                         last_error=delivery.error or delivery.message, probe_until=None)
            if state["down_since"] is None and state["failures"] >= DOWN_AFTER:
                state.update(down_since=now, probe_delay=rule.probe_base_seconds,
                             probe_at=now + timedelta(seconds=rule.probe_base_seconds))
            failed_ids.append(claimed.log_id)
    return state, (failed_ids if state["down_since"] is not None else []), ended


def _fresh(url: str) -> dict:
    return {"events_url": url, "failures": 0, **dict.fromkeys(_STATE_FIELDS[1:])}


def _by_url(results, rule: OutageRule) -> dict[str, list]:
    by_url: dict[str, list] = {}
    for claimed, delivery in results:
        by_url.setdefault(endpoint_of(claimed.events_url, rule), []).append((claimed, delivery))
    return by_url


def must_hold(conn, results, now: datetime, rule: OutageRule) -> bool:
    """Tell whether recording these (claimed, delivery) results needs the endpoint lock: an endpoint is down, or
    they change an endpoint's state. Asked before the results touch any row, so the lock is always taken before
    row locks."""
    by_url = _by_url(results, rule)
    known = _load(conn, by_url)
    return bool(down(conn)) or not all(
        url in known and _advance(known[url], items, now, rule)[0] == known[url] for url, items in by_url.items())


def record(conn, results, now: datetime, rule: OutageRule) -> list[str]:
    """Update each endpoint's state from a batch of (claimed, delivery) results, and release the rows of endpoints
    that answered again; return their URLs. The caller holds the endpoint lock when must_hold says so."""
    by_url = _by_url(results, rule)
    known = _load(conn, by_url)
    recovered = {}
    for url, items in by_url.items():
        before = known.get(url)
        state, failed_ids, ended = _advance(before or _fresh(url), items, now, rule)
        if ended is not None:
            recovered[url] = ended
        if before == state:
            continue
        if state["down_since"] is not None and (before is None or before["down_since"] is None):
            log.error("PagerDuty unreachable at %s (%d failed sends in a row, the last: %s): its events wait in "
                      "the outbox, one at a time probes it, up to every %g s", safe_url(url), state["failures"],
                      state["last_error"], rule.probe_max_seconds, extra={"events_url": safe_url(url)})
        if failed_ids:  # they wait for the probe, not each its own backoff
            conn.execute(_HOLD_FAILED, {"ids": failed_ids, "until": state["probe_at"]})
        if before is None:
            conn.execute(insert(EndpointState).values(**state))
        elif state != before:
            conn.execute(update(EndpointState).where(EndpointState.events_url == url).values(
                **{name: state[name] for name in _STATE_FIELDS}))
    for url, down_since in recovered.items():
        released = release(conn, url, now, rule)
        log.warning("PagerDuty answers again at %s after %.0f s unreachable: %d waiting events are due now",
                    safe_url(url), (now - down_since).total_seconds(), released,
                    extra={"events_url": safe_url(url)})
    return list(recovered)


def release(conn, url: str, now: datetime, rule: OutageRule) -> int:
    """Make every open row waiting on the endpoint due now (not those waiting out a 429); return how many."""
    result = conn.execute(update(IncidentLog).where(
        _OPEN, _rows_of(url, rule), IncidentLog.next_attempt_at > now,
        or_(IncidentLog.http_status.is_(None), IncidentLog.http_status != RATE_LIMITED)).values(next_attempt_at=now))
    return result.rowcount


@dataclass(frozen=True)
class EndpointView:
    """An endpoint as shown: up or down, since when, its last answer, and how many open rows wait on it."""

    events_url: str
    down_since: datetime | None
    last_success_at: datetime | None
    last_error: str | None
    waiting: int

    @property
    def up(self) -> bool:
        """Tell whether the endpoint answers."""
        return self.down_since is None


def overview(conn, default_url: str, down_only: bool = False) -> list[EndpointView]:
    """Every endpoint the store knows (or only those down: then no count at all while none is), by URL, with its
    open rows counted (rows without a URL count for default_url)."""
    known = down(conn) if down_only else _load(conn)
    if not known:
        return []
    url = func.coalesce(IncidentLog.events_url, default_url)
    waiting = dict(conn.execute(select(url, func.count()).where(_OPEN).group_by(url)).all())
    return [EndpointView(found["events_url"], found["down_since"], found["last_success_at"], found["last_error"],
                         waiting.get(found["events_url"], 0))
            for _, found in sorted(known.items())]
