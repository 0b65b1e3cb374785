"""The store's SQLite backend: writers across connections take the write lock as soon as it comes free; the
wake-up on other processes' commits."""
import gc
import threading
import time

import pytest
import sqlalchemy as sa

from relay.store import outbox, sqlite
from relay.store.models import db

HOLD_SECONDS = 0.08  # SQLite's own busy handler would try at 78 ms, then sleep on to 103 ms


@pytest.fixture
def app(make_app, backend):
    if backend != "sqlite":
        pytest.skip("SQLite's write lock")
    return make_app()


@pytest.fixture
def no_gc():
    """No garbage collection meanwhile: a full one in this long-lived test process would be the lateness measured."""
    gc.disable()
    yield
    gc.enable()


def test_a_waiting_writer_gets_the_lock_moments_after_it_is_released(app, no_gc):
    """A writer outside the queue (write_transaction) polls SQLite's lock: after 0.1 ms, doubling up to 2 ms."""
    with app.app_context():
        holder = outbox.writer_connection(db.engine)
        waiter = outbox.writer_connection(db.engine)
        released = {}

        def hold():
            with holder.begin():
                taken.set()
                time.sleep(HOLD_SECONDS)
                released["at"] = time.monotonic()  # the commit follows in microseconds

        taken = threading.Event()
        thread = threading.Thread(target=hold)
        thread.start()
        taken.wait(5)
        with waiter.begin():
            got = time.monotonic()
            waiter.execute(sa.text("SELECT 1"))
        thread.join()
        holder.close()
        waiter.close()
    assert 0 <= got - released["at"] < 0.015, f"the lock was taken {1000 * (got - released['at']):.1f} ms late"


def test_a_writer_that_never_gets_the_lock_fails_with_a_database_error(app, monkeypatch):
    monkeypatch.setattr(sqlite, "BUSY_TIMEOUT_SECONDS", 0.05)
    with app.app_context():
        with outbox.writer_connection(db.engine) as holder, holder.begin():
            waiter = outbox.writer_connection(db.engine)
            with pytest.raises(sa.exc.OperationalError, match="locked"):
                waiter.begin()
            waiter.invalidate()
            waiter.close()
        with outbox.writer_connection(db.engine) as after, after.begin():
            after.execute(sa.text("SELECT 1"))  # the lock is free again once the holder is done


def test_writers_queue_for_the_lock_instead_of_trying_it_over_and_over(app):
    """write_transaction: a writer waits on the queue file while another holds the lock, then takes the lock at
    its first try (polling would try it dozens of times in 80 ms)."""
    with app.app_context():
        holder = outbox.writer_connection(db.engine)
        waiter = outbox.writer_connection(db.engine)
        tries = []
        waiter.connection.driver_connection.set_trace_callback(
            lambda sql: tries.append(sql) if sql.startswith("BEGIN") else None)
        taken = threading.Event()

        def hold():
            with outbox.write_transaction(holder):
                taken.set()
                time.sleep(HOLD_SECONDS)

        thread = threading.Thread(target=hold)
        thread.start()
        taken.wait(5)
        started = time.monotonic()
        with outbox.write_transaction(waiter):
            waited = time.monotonic() - started
            waiter.execute(sa.text("SELECT 1"))
        thread.join()
        holder.close()
        waiter.close()
    assert waited >= HOLD_SECONDS / 2 and tries == ["BEGIN IMMEDIATE"], (waited, tries)


def test_the_watcher_wakes_on_another_connections_commit(app):
    """The delivery process learns of rows another process stored from data_version, without a lock."""
    with app.app_context():
        watch = outbox.new_rows_watcher(db.engine)
        woken, stopping = threading.Event(), threading.Event()
        listener = threading.Thread(target=watch, args=(woken.set, stopping), daemon=True)
        listener.start()
        try:
            time.sleep(10 * sqlite.WATCH_SECONDS)  # its first look: the version it starts from
            assert not woken.is_set()
            outbox.store_rows(db.engine, [outbox.row_values({"routing_key": "k", "event_action": "resolve"}, "test")])
            assert woken.wait(5)
        finally:
            stopping.set()
            listener.join(5)


def test_a_database_in_memory_has_nothing_to_watch():
    assert sqlite.watcher(sa.create_engine("sqlite://")) is None
