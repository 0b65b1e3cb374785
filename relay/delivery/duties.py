"""Periodic duties of a lasting delivery process: the capabilities that act on open alerts over time (the
reconciler, heartbeats, the storm valve).

Every instance offers to run each enabled duty; a lease in the store (relay/store/leases.py) keeps each to one
process at a time. Duties run on a thread of their own, so a slow source never holds up delivery; a duty that fails
is logged and runs again at its next turn. A duty stores the events it decides on through the outbox like any other
and calls wake() so this process's worker sends them at once.
"""
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from relay.store import leases, outbox
from relay.store.models import db, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Duty:
    """A periodic duty: its lease's name, seconds between runs, and run(engine, now, wake)."""

    name: str
    every: float
    run: Callable

    @property
    def lease_seconds(self) -> float:
        """How long one run's lease holds: past a late turn or two, so the holder keeps the duty between runs."""
        return max(3 * self.every, 30.0)


def enabled(config) -> list[Duty]:
    """The duties this configuration turns on; each capability's module offers its own (None while it is off)."""
    from relay.delivery import heartbeats, reconcile, storm  # each imports Duty from here

    offers = (heartbeats.duty, reconcile.duty, storm.duty)
    return [duty for offer in offers if (duty := offer(config)) is not None]


class DutyRunner:
    """Runs each duty every `every` seconds while this process holds its lease."""

    def __init__(self, app, holder: str, duties: list[Duty], wake: Callable[[], None]):
        self.app, self.holder, self.duties, self.wake = app, holder, duties, wake
        self.next_turn = {duty.name: 0.0 for duty in duties}
        self.held: set[str] = set()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="relay-duties", daemon=True)

    def start(self) -> "DutyRunner":
        """Start taking turns."""
        self.thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the running turn, and give up the leases held so another instance takes over at once."""
        self.stopping.set()
        self.thread.join(timeout)
        if self.held:
            try:
                with self.app.app_context(), outbox.writer_connection(db.engine) as conn, \
                        outbox.write_transaction(conn):
                    for name in self.held:
                        leases.release(conn, name, self.holder)
            except Exception as exc:  # noqa: BLE001 - the leases then run out by themselves
                log.warning("cannot give up the leases on %s (%s); another instance takes over when they run out",
                            ", ".join(sorted(self.held)), type(exc).__name__)

    def _run(self):
        with self.app.app_context():
            engine = db.engine
            while not self.stopping.is_set():
                for duty in self.duties:
                    if time.monotonic() >= self.next_turn[duty.name] and not self.stopping.is_set():
                        self.next_turn[duty.name] = time.monotonic() + duty.every
                        self._turn(engine, duty)
                self.stopping.wait(max(0.0, min(self.next_turn.values()) - time.monotonic()))

    def _turn(self, engine, duty: Duty) -> None:
        """Run the duty once if this process holds (or takes) its lease."""
        now = utcnow()
        try:
            with outbox.writer_connection(engine) as conn, outbox.write_transaction(conn):
                held = leases.hold(conn, duty.name, self.holder, now, duty.lease_seconds)
            if not held:
                self.held.discard(duty.name)
                return
            self.held.add(duty.name)
            duty.run(engine, now, self.wake)
        except Exception as exc:  # noqa: BLE001 - a failed turn (store or source down) is tried again, never fatal
            log.warning("%s could not run (%s); trying again in %g s", duty.name, type(exc).__name__, duty.every)
            log.debug("%s failed", duty.name, exc_info=True)
