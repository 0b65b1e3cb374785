"""Periodic duties run in one delivery process at a time across instances, under a lease in the store, on both
stores; a holder that stops gives its duty up, one that dies loses it when its lease runs out."""
import threading
import time
from datetime import timedelta

from relay.delivery import duties
from relay.store import leases, outbox
from relay.store.models import db, utcnow
from tests.helpers import wait_until


def _hold(app, name, holder, now, seconds=30):
    with app.app_context(), outbox.writer_connection(db.engine) as conn, outbox.write_transaction(conn):
        return leases.hold(conn, name, holder, now, seconds)


def test_a_lease_is_held_by_one_until_it_runs_out(make_app):
    app = make_app()
    now = utcnow()
    assert _hold(app, "reconcile", "a", now)
    assert not _hold(app, "reconcile", "b", now + timedelta(seconds=29))
    assert _hold(app, "reconcile", "a", now + timedelta(seconds=29))  # renewed until 59 s
    assert not _hold(app, "reconcile", "b", now + timedelta(seconds=58))
    assert _hold(app, "heartbeats", "b", now)  # another duty's lease is its own
    assert _hold(app, "reconcile", "b", now + timedelta(seconds=60))  # a's ran out: b takes over
    with app.app_context(), db.engine.connect() as conn:
        assert leases.holders(conn, now + timedelta(seconds=61)) == {"reconcile": "b"}


def test_two_runners_run_a_duty_in_one_place_and_hand_it_over_on_stop(make_app):
    app = make_app()
    runs, lock = [], threading.Lock()

    def record(holder):
        def run(engine, now, wake):
            with lock:
                runs.append(holder)
            wake()
        return run

    woken = []
    first = duties.DutyRunner(app, "first", [duties.Duty("count", 0.05, record("first"))], lambda: woken.append(1))
    second = duties.DutyRunner(app, "second", [duties.Duty("count", 0.05, record("second"))], lambda: None)
    first.start()
    wait_until(lambda: runs, timeout=5, message="the first runner's first turn")
    second.start()
    try:
        time.sleep(0.5)
        assert set(runs) == {"first"} and len(runs) >= 3 and woken
        first.stop()
        taken_over = len(runs)
        wait_until(lambda: "second" in runs[taken_over:], timeout=5, message="the second runner taking over")
    finally:
        first.stop()
        second.stop()
    assert "first" not in runs[taken_over:]


def test_a_failing_duty_is_logged_and_runs_again(make_app, caplog):
    app = make_app()
    calls = []

    def fail(engine, now, wake):
        calls.append(now)
        raise ConnectionError("the source is down")

    runner = duties.DutyRunner(app, "only", [duties.Duty("flaky", 0.05, fail)], lambda: None).start()
    try:
        wait_until(lambda: len(calls) >= 3, timeout=5, message="three turns of a failing duty")
    finally:
        runner.stop()
    assert "flaky could not run (ConnectionError)" in caplog.text
