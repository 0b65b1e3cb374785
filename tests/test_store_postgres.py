"""The store's PostgreSQL backend: NOTIFY on new rows, the wake-up that listens for it, the claim's plan."""
import threading
import time

import pytest
from conftest import app_config, fresh_postgres_database
from flask_migrate import upgrade
from test_outbox import POLICY, add, claim, complete, row

from relay import create_app
from relay.pagerduty.client import Delivery
from relay.store import outbox, postgres
from relay.store.claim import _CANDIDATES, _candidates
from relay.store.complete import complete as complete_rows
from relay.store.models import IncidentLog, db, utcnow
from relay.store.requeue import requeue


@pytest.fixture
def app(make_app, backend):
    if backend != "postgresql":
        pytest.skip("PostgreSQL's backend")
    return make_app()


def test_rows_turning_pending_notify_listeners(app, routing_key):
    import psycopg

    with app.app_context():
        url = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as listener:
        listener.execute(f"LISTEN {postgres.NOTIFY_CHANNEL}")

        def notified() -> int:
            return sum(1 for _ in listener.notifies(timeout=0.3))

        log_id = add(app, routing_key)
        assert notified() == 1  # a new row
        (claimed,) = claim(app)
        complete(app, [(claimed, Delivery("failed", 400))])
        assert notified() == 0  # claims and outcomes wake nobody
        with app.app_context(), db.engine.begin() as conn:
            requeue(conn, utcnow(), IncidentLog.id == log_id)
        assert notified() == 1  # a row put back by replay


def test_a_row_behind_one_whose_result_is_being_written_is_not_put_off(app, routing_key):
    """Another instance's complete, not yet committed, has already run its wake-up: a claim meanwhile must not put
    the alert's next row off for BLOCKED_RECHECK, or the resolve waits a minute behind a delivered trigger."""
    trigger = add(app, routing_key)
    (claimed,) = claim(app)
    resolve = add(app, routing_key, action="resolve")  # due, and behind the trigger in flight
    with app.app_context(), db.engine.connect() as finishing, finishing.begin():
        complete_rows(finishing, "w1", [(claimed, Delivery("delivered", 202))], utcnow(), POLICY)
        assert claim(app, worker="w2") == []  # the trigger still reads as open
    assert row(app, trigger).status == "delivered"
    assert [c.log_id for c in claim(app, worker="w2")] == [resolve]


def test_claims_walk_the_open_index_before_the_store_was_ever_analyzed(pd):
    """A new install's first burst: no statistics yet, and no claim may sort the whole backlog."""
    with fresh_postgres_database() as url:
        app = create_app(app_config(url, pd.events_url))
        with app.app_context():
            upgrade()
            burst = [outbox.row_values({"routing_key": "k", "event_action": "resolve", "dedup_key": f"b{n}"},
                                       source="test") for n in range(3000)]
            outbox.record_many(db.session, burst)
            db.session.commit()
            with outbox.writer_connection(db.engine) as conn, conn.begin():
                assert len(_candidates(conn, utcnow(), 32)[0]) == 32
                plan = _plan(conn, _CANDIDATES, {"now": utcnow()}, count=32)
            db.engine.dispose()
    assert "Index Scan using ix_incident_log_open" in plan and "Sort" not in plan, plan


def _plan(conn, statement, params, count):
    """PostgreSQL's plan for a statement with a literal LIMIT, in the connection's current transaction."""
    sql = str(statement.compile(dialect=conn.dialect)).replace("__[POSTCOMPILE_count]", str(count))
    return "\n".join(conn.exec_driver_sql("EXPLAIN " + sql, params).scalars())


def test_the_watcher_wakes_on_another_connections_new_row(app, routing_key):
    with app.app_context():
        watch = outbox.new_rows_watcher(db.engine)
    woken, stopping = threading.Event(), threading.Event()
    listener = threading.Thread(target=watch, args=(woken.set, stopping), daemon=True)
    listener.start()
    try:
        for n in range(25):  # until the listener has issued LISTEN and hears one
            add(app, routing_key, dedup_key=f"w{n}")
            if woken.wait(0.2):
                break
        assert woken.is_set()
    finally:
        stopping.set()
        listener.join(5)


def test_a_deadlock_with_another_instance_is_run_again_not_taken_for_an_outage(app, routing_key, caplog):
    from sqlalchemy import update

    from relay.delivery.worker import DeliveryWorker

    first, second = add(app, routing_key, dedup_key="a"), add(app, routing_key, dedup_key="b")
    touch = [update(IncidentLog).where(IncidentLog.id == log_id).values(attempts=IncidentLog.attempts)
             for log_id in (first, second)]
    errors = []

    def cross(conn, mine, theirs, ready, go):
        try:
            with conn.begin():
                conn.execute(mine)
                ready.set()
                go.wait(5)
                conn.execute(theirs)
        except Exception as exc:  # noqa: BLE001 - one of the two is PostgreSQL's chosen victim
            errors.append(exc)

    with app.app_context(), db.engine.connect() as one, db.engine.connect() as two:
        ready_one, ready_two = threading.Event(), threading.Event()
        crossing = threading.Thread(target=cross, args=(one, touch[0], touch[1], ready_one, ready_two))
        crossing.start()
        ready_one.wait(5)
        cross(two, touch[1], touch[0], ready_two, ready_one)
        crossing.join(10)
        (deadlock,) = errors
        worker = DeliveryWorker(app, registered=False)
        started = time.monotonic()
        assert worker._pause_after(deadlock, db.engine) is True
        worker.senders.shutdown()
    assert time.monotonic() - started < 0.5  # no outage back-off
    assert "delivery step rolled back (deadlock with another transaction); running it again" in caplog.text
