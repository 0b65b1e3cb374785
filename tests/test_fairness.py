"""No routing key starves another: rows held back (behind an earlier row of their alert, or over their key's
budget) are put off instead of filling every claim's window, on both stores, with the real worker and simulator."""
import time

from sqlalchemy import select

from relay.pagerduty.client import Delivery
from relay.pagerduty.retry import RetryPolicy
from relay.store import claim, complete, outbox, states
from relay.store.models import IncidentLog, db, utcnow
from tests.helpers import store_events, trigger_event, wait_until


def test_a_key_with_budget_left_is_reached_behind_two_copies_of_a_big_notification(delivering, pd):
    app = delivering(RELAY_RATE_LIMIT_PER_MINUTE=120, RELAY_DELIVERY_CONCURRENCY=8)
    key_a, key_b = "a" * 32, "b" * 32
    copy = [trigger_event(key_a, f"alert-{i}") for i in range(600)]
    store_events(app, copy + copy)  # as Alertmanager's HA pair sends it: the second copy waits behind the first
    wait_until(lambda: len(pd.accepted()) >= 100, timeout=10, message="key A's budget being spent")
    stored_at = time.time()
    store_events(app, [trigger_event(key_b, "the-other-team")])
    found = wait_until(lambda: [r for r in pd.received() if r["body"]["routing_key"] == key_b], timeout=5,
                       message="key B's event at PagerDuty")
    assert found[0]["received_at"] - stored_at < 2.0


def test_a_held_row_is_put_off_not_read_again_on_every_claim(make_app, routing_key):
    app = make_app()
    ids = store_events(app, [trigger_event(routing_key, "same")] * 3 + [trigger_event(routing_key, "other")])
    now = utcnow()
    with app.app_context(), outbox.writer_connection(db.engine) as conn, conn.begin():
        claimed = claim.claim(conn, "w1", 1, now, 30, 0)
    assert [c.log_id for c in claimed] == [ids[0]]
    with app.app_context():
        due = dict(db.session.execute(select(IncidentLog.id, IncidentLog.next_attempt_at)).all())
    assert due[ids[1]] == due[ids[2]] == now + claim.BLOCKED_RECHECK
    with app.app_context(), outbox.writer_connection(db.engine) as conn, conn.begin():
        assert [c.log_id for c in claim.claim(conn, "w1", 1, now, 30, 0)] == [ids[3]]
    ended = utcnow()
    with app.app_context(), outbox.writer_connection(db.engine) as conn, conn.begin():
        complete.complete(conn, "w1", [(claimed[0], Delivery(states.DELIVERED, 202))], ended, RetryPolicy())
    with app.app_context():
        woken, still_held = db.session.get(IncidentLog, ids[1]), db.session.get(IncidentLog, ids[2])
        assert woken.status == states.PENDING and woken.next_attempt_at == ended  # not a minute later
        assert still_held.next_attempt_at == now + claim.BLOCKED_RECHECK  # still behind ids[1]
