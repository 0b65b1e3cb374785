"""The outbox on both stores: atomic leased claims, per-alert order, rate limits, outcomes, requeue."""
from datetime import timedelta

import pytest
from sqlalchemy import event, select

from relay.pagerduty.client import Delivery
from relay.pagerduty.retry import RetryPolicy
from relay.store import outbox, states
from relay.store.claim import claim as claim_rows
from relay.store.complete import complete as complete_rows
from relay.store.latest_states import latest_states
from relay.store.models import DeliveryAttempt, IncidentLog, db, utcnow
from relay.store.requeue import requeue, superseded

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
        return claim_rows(conn, worker, slots, now or utcnow(), lease, per_minute)


def complete(app, results, worker="w1", now=None):
    with app.app_context(), db.engine.begin() as conn:
        complete_rows(conn, worker, results, now or utcnow(), POLICY)


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


def test_late_result_from_this_workers_own_old_claim_does_not_complete_its_newer_claim(app, routing_key):
    log_id = add(app, routing_key)
    (stale,) = claim(app, lease=1)
    (fresh,) = claim(app, now=utcnow() + timedelta(seconds=2))  # the same worker takes its row over
    complete(app, [(stale, Delivery("delivered", 202, "success", dedup_key="d"))])
    found = row(app, log_id)
    assert (found.status, found.claimed_by, found.claimed_until is not None) == ("pending", "w1", True)
    complete(app, [(fresh, Delivery("retry", 503))])
    assert row(app, log_id).status == "retrying" and row(app, log_id).claimed_by is None
    # Each attempt keeps its own answer: the late one happened, it just moves nothing.
    assert attempts(app, log_id) == [("delivered", 202), ("retry", 503)]


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
        assert requeue(conn, utcnow(), IncidentLog.id.in_([log_id, delivered_id])) == [log_id]
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

    asked = ("writer_connection", "write_transaction", "prepare_candidates", "take", "hold_rate_budget",
             "hold_endpoints", "read_holding_alerts", "hold_routes", "finish", "watcher", "insert_rows")
    assert all(callable(getattr(module, name, None)) for module in (sqlite, postgres) for name in asked)


# --- what the relay last has for each alert (issue 18, item 8) -------------------------------------------------

def test_latest_states_names_each_alerts_newest_row_that_sets_its_state(app, routing_key):
    add(app, routing_key, "trigger", "k1")
    resolve = add(app, routing_key, "resolve", "k1")
    other = add(app, routing_key, "trigger", "k2")
    with app.app_context():
        outbox.record({"routing_key": routing_key, "event_action": "trigger", "dedup_key": "k1",
                       "payload": {"summary": "s", "source": "x", "severity": "info"}},
                      source="test", status=states.STALE)
        db.session.commit()
    with app.app_context(), outbox.writer_connection(db.engine) as conn, outbox.write_transaction(conn):
        latest = latest_states(conn, {(routing_key, "k1"), (routing_key, "k2"), ("other-key", "k1")})
    assert {pair: (found.id, found.event_action) for pair, found in latest.items()} == {
        (routing_key, "k1"): (resolve, "resolve"), (routing_key, "k2"): (other, "trigger")}


# --- replay never reopens what a newer event closed (issue 18, item 7) ---------------------------------------

def test_requeue_skips_a_trigger_its_delivered_resolve_supersedes(app, routing_key):
    trigger = add(app, routing_key, "trigger", "k1")
    resolve = add(app, routing_key, "resolve", "k1")
    lone = add(app, routing_key, "trigger", "k2")
    first = claim(app)
    complete(app, [(c, Delivery("failed", 400)) for c in first])  # the trigger and the other alert's
    (second,) = claim(app)
    complete(app, [(second, Delivery("delivered", 202))])  # the resolve
    with app.app_context(), db.engine.begin() as conn:
        assert requeue(conn, utcnow(), IncidentLog.id.in_([trigger, lone])) == [lone]
        (skipped,) = superseded(conn, IncidentLog.id.in_([trigger, lone]))
    assert (skipped.id, skipped.newer_id, skipped.newer_action, skipped.newer_status) == \
        (trigger, resolve, "resolve", "delivered")
    assert skipped.reason == (f"row {trigger} (trigger) was not sent again: row {resolve} (resolve, delivered) is "
                              "newer for the same alert, and sending the older event would undo it")
    assert row(app, trigger).status == "failed" and row(app, lone).status == "pending"


def test_requeue_of_a_dead_trigger_and_its_dead_resolve_sends_only_the_resolve(app, routing_key):
    trigger = add(app, routing_key, "trigger", "k1")
    resolve = add(app, routing_key, "resolve", "k1")
    for _ in range(2):
        (claimed,) = claim(app)
        complete(app, [(claimed, Delivery("failed", 400))])
    with app.app_context(), db.engine.begin() as conn:
        (before,) = superseded(conn, IncidentLog.id == trigger)
        assert before.reason.endswith(f"; replay row {resolve} to restore the alert's latest state")
        assert requeue(conn, utcnow()) == [resolve]
    assert row(app, trigger).status == "failed" and row(app, resolve).status == "pending"


def test_rows_that_set_no_state_never_supersede(app, routing_key):
    trigger = add(app, routing_key, "trigger", "k1")
    (claimed,) = claim(app)
    complete(app, [(claimed, Delivery("failed", 400))])
    with app.app_context():
        for status in (states.STALE, states.UNROUTED):
            outbox.record({"routing_key": routing_key, "event_action": "resolve", "dedup_key": "k1"},
                          source="test", status=status)
        db.session.commit()
    with app.app_context(), db.engine.begin() as conn:
        assert superseded(conn) == []
        assert requeue(conn, utcnow()) == [trigger]


def test_stored_rows_get_their_own_ids_in_order_after_deletions(app, routing_key):
    first = [add(app, routing_key, dedup_key=f"old-{n}") for n in range(5)]
    with app.app_context():  # gaps in the middle and at the end: the next ids come after the highest left
        db.session.query(IncidentLog).filter(IncidentLog.id.in_([first[2], first[4]])).delete()
        db.session.commit()
        rows = [outbox.row_values({"routing_key": routing_key, "event_action": "trigger", "dedup_key": f"new-{n}",
                                   "payload": {"summary": "s", "source": "x", "severity": "info"}}, source="test")
                for n in range(3)]
        ids = outbox.store_rows(db.engine, rows)
        stored = {row.id: row.dedup_key for row in db.session.query(IncidentLog)}
    assert [stored[log_id] for log_id in ids] == ["new-0", "new-1", "new-2"]
    assert len(set(ids)) == 3 and min(ids) > first[3]


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
