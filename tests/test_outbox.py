"""The outbox on both stores: atomic leased claims, per-alert order, rate limits, outcomes, requeue."""
from datetime import timedelta

import pytest
from sqlalchemy import event, select

from relay.pagerduty.client import Delivery
from relay.pagerduty.retry import RetryPolicy
from relay.store import outbox, states
from relay.store.models import DeliveryAttempt, IncidentLog, db, utcnow

POLICY = RetryPolicy(base_seconds=10, max_seconds=100, give_up_seconds=3600)


@pytest.fixture
def app(make_app):
    """An app on an emptied store with no delivery worker: the tests claim by hand."""
    return make_app()


def add(app, routing_key, action="trigger", dedup_key="d"):
    event = {"routing_key": routing_key, "event_action": action, "dedup_key": dedup_key}
    if action == "trigger":
        event["payload"] = {"summary": "s", "source": "x", "severity": "info"}
    with app.app_context():
        row = outbox.record(event, source="test")
        db.session.commit()
        return row.id


def claim(app, worker="w1", slots=10, now=None, lease=30, per_minute=0):
    with app.app_context(), outbox.writer_connection(db.engine) as conn, conn.begin():
        return outbox.claim(conn, worker, slots, now or utcnow(), lease, per_minute)


def complete(app, results, worker="w1", now=None):
    with app.app_context(), db.engine.begin() as conn:
        outbox.complete(conn, worker, results, now or utcnow(), POLICY)


def row(app, log_id):
    with app.app_context():
        found = db.session.get(IncidentLog, log_id)
        db.session.expunge(found)
        return found


def attempts(app, log_id):
    with app.app_context():
        return [(a.outcome, a.http_status) for a in db.session.scalars(
            select(DeliveryAttempt).where(DeliveryAttempt.log_id == log_id).order_by(DeliveryAttempt.id))]


def test_claim_leases_rows_and_opens_an_attempt(app, routing_key):
    log_id = add(app, routing_key)
    (claimed,) = claim(app)
    assert claimed.log_id == log_id and claimed.event["routing_key"] == routing_key and claimed.attempts == 1
    assert row(app, log_id).claimed_by == "w1" and attempts(app, log_id) == [("sending", None)]
    assert claim(app, worker="w2") == []  # leased: nobody else gets it


def test_expired_lease_is_taken_over_and_the_lost_attempt_marked(app, routing_key):
    log_id = add(app, routing_key)
    claim(app, lease=30)
    (taken,) = claim(app, worker="w2", now=utcnow() + timedelta(seconds=31))
    assert taken.log_id == log_id and taken.attempts == 2
    assert attempts(app, log_id) == [("abandoned", None), ("sending", None)]
    complete(app, [(taken, Delivery("delivered", 202, "success", "Event processed", dedup_key="d"))], worker="w2")
    assert row(app, log_id).status == "delivered"


def test_resolve_waits_for_its_trigger(app, routing_key):
    trigger = add(app, routing_key, "trigger", "k1")
    resolve = add(app, routing_key, "resolve", "k1")
    other = add(app, routing_key, "trigger", "k2")
    first = claim(app)
    assert [c.log_id for c in first] == [trigger, other]
    complete(app, [(first[0], Delivery("retry", 503, message="HTTP 503")), (first[1], Delivery("delivered", 202))])
    assert claim(app, now=utcnow() + timedelta(seconds=1)) == []  # trigger retrying: resolve still waits
    (again,) = claim(app, now=utcnow() + timedelta(seconds=60))
    assert again.log_id == trigger
    complete(app, [(again, Delivery("delivered", 202))])
    assert [c.log_id for c in claim(app)] == [resolve]


def test_retry_is_scheduled_with_backoff_and_errors_kept(app, routing_key):
    log_id = add(app, routing_key)
    (claimed,) = claim(app)
    now = utcnow()
    complete(app, [(claimed, Delivery("retry", 429, "throttle event", "slow down", retry_after=30))], now=now)
    found = row(app, log_id)
    assert found.status == "retrying" and found.claimed_by is None and found.http_status == 429
    assert found.next_attempt_at - now == timedelta(seconds=30)  # Retry-After beats the 5–10 s backoff
    assert attempts(app, log_id) == [("retry", 429)]


def test_refused_event_fails_at_once_with_pagerduty_errors(app, routing_key):
    log_id = add(app, routing_key)
    (claimed,) = claim(app)
    complete(app, [(claimed, Delivery("failed", 400, "invalid event", "Event object is invalid",
                                      ["Invalid routing key"]))])
    found = row(app, log_id)
    assert (found.status, found.pd_errors) == ("failed", ["Invalid routing key"])
    assert attempts(app, log_id) == [("failed", 400)]
    assert claim(app, now=utcnow() + timedelta(days=1)) == []


def test_row_retried_past_the_give_up_age_is_dead(app, routing_key):
    log_id = add(app, routing_key)
    (claimed,) = claim(app)
    complete(app, [(claimed, Delivery("retry", 503))], now=utcnow() + timedelta(seconds=3601))
    assert row(app, log_id).status == "dead"


def test_generated_dedup_key_is_kept(app, routing_key):
    with app.app_context():
        log = outbox.record({"routing_key": routing_key, "event_action": "trigger",
                             "payload": {"summary": "s", "source": "x", "severity": "info"}}, source="test")
        db.session.commit()
        log_id = log.id
    (claimed,) = claim(app)
    complete(app, [(claimed, Delivery("delivered", 202, dedup_key="generated-by-pd"))])
    assert row(app, log_id).dedup_key == "generated-by-pd"


def test_late_result_from_a_worker_that_lost_its_lease_does_not_move_the_row(app, routing_key):
    log_id = add(app, routing_key)
    (stale,) = claim(app, lease=1)
    claim(app, worker="w2", now=utcnow() + timedelta(seconds=2))
    complete(app, [(stale, Delivery("failed", 400))], worker="w1")
    assert row(app, log_id).status == "pending" and row(app, log_id).claimed_by == "w2"


def test_rate_limit_caps_each_key_per_rolling_minute(app, routing_key):
    other_key = "b" * 32
    ids = [add(app, routing_key, dedup_key=f"a{i}") for i in range(5)]
    other = add(app, other_key, dedup_key="b")
    now = utcnow()
    claimed = claim(app, now=now, per_minute=3, lease=300)
    assert [c.log_id for c in claimed] == ids[:3] + [other]
    assert claim(app, now=now + timedelta(seconds=59), per_minute=3, lease=300) == []
    held = row(app, ids[3])
    assert held.status == "pending" and held.next_attempt_at == now + timedelta(seconds=62)  # 60 s + slack
    assert claim(app, now=now + timedelta(seconds=61), per_minute=3, lease=300) == []
    later = claim(app, now=now + timedelta(seconds=63), per_minute=3, lease=300)
    assert [c.log_id for c in later] == ids[3:]


def test_requeue_puts_failed_and_dead_rows_back(app, routing_key):
    log_id = add(app, routing_key)
    delivered_id = add(app, routing_key, dedup_key="other")
    first, second = claim(app)
    complete(app, [(first, Delivery("failed", 400)), (second, Delivery("delivered", 202))])
    with app.app_context(), db.engine.begin() as conn:
        assert outbox.requeue(conn, utcnow(), IncidentLog.id.in_([log_id, delivered_id])) == [log_id]
    assert row(app, log_id).status == "pending" and row(app, delivered_id).status == "delivered"


@pytest.mark.parametrize("status", [states.UNROUTED, states.DELIVERED])
def test_rows_that_are_not_open_are_never_claimed(app, routing_key, status):
    with app.app_context():
        outbox.record({"routing_key": routing_key, "event_action": "resolve", "dedup_key": "z"},
                      source="test", status=status)
        db.session.commit()
    assert claim(app) == []


def test_both_backends_offer_what_the_outbox_asks_of_them():
    from relay.store import postgres, sqlite

    asked = ("writer_connection", "write_transaction", "prepare_candidates", "take", "hold_rate_budget", "finish",
             "watcher")
    assert all(callable(getattr(module, name, None)) for module in (sqlite, postgres) for name in asked)


def test_rows_over_a_spent_budget_are_deferred_in_one_statement(app, routing_key):
    ids = [add(app, routing_key, dedup_key=f"k{i}") for i in range(40)]
    now = utcnow()
    deferrals = []

    def count(conn, cursor, statement, *args):
        text = statement.lstrip().upper()
        if text.startswith("UPDATE INCIDENT_LOG SET") and "NEXT_ATTEMPT_AT" in text and "CLAIMED_BY" not in text:
            deferrals.append(statement)

    with app.app_context():
        event.listen(db.engine, "before_cursor_execute", count)
        try:
            claimed = claim(app, now=now, per_minute=3, lease=300)
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
    assert [c.log_id for c in claimed] == ids[:3]
    assert len(deferrals) == 1  # not one UPDATE per row: a backlog is deferred again whenever a place frees
    assert {row(app, log_id).next_attempt_at for log_id in ids[3:]} == {now + timedelta(seconds=62)}
