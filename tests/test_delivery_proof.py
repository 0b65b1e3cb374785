"""A delivery counts only when PagerDuty's answer proves it, and no send outlives its claim: the delivery worker
against answers that are not the Events API's, and against an answer trickled a byte at a time."""
import socket
import threading
import time

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from relay.delivery import worker
from relay.store import outbox
from relay.store.models import DeliveryAttempt, IncidentLog, db
from tests.helpers import wait_until


def store_event(app, routing_key, dedup_key="proof") -> int:
    """Store one trigger in the outbox and wake the worker; return its row id."""
    with app.app_context():
        row = outbox.record({"routing_key": routing_key, "event_action": "trigger", "dedup_key": dedup_key,
                             "payload": {"summary": "s", "source": "x", "severity": "info"}}, source="test")
        db.session.commit()
        log_id = row.id
    worker.wake()
    return log_id


def attempts(app, log_id) -> list:
    """The row's attempts, oldest first."""
    with app.app_context():
        found = db.session.execute(select(DeliveryAttempt.outcome, DeliveryAttempt.http_status, DeliveryAttempt.error)
                                   .where(DeliveryAttempt.log_id == log_id).order_by(DeliveryAttempt.id)).all()
        db.session.commit()
        return found


def row(app, log_id):
    with app.app_context():
        found = db.session.get(IncidentLog, log_id)
        db.session.expunge(found)
        db.session.commit()
        return found


def misdirected_count(http_status: str) -> float:
    return REGISTRY.get_sample_value("relay_pagerduty_misdirected_total", {"http_status": http_status}) or 0.0


def test_an_answer_from_a_wrong_url_is_retried_and_shown_as_a_configuration_problem(delivering, pd, routing_key,
                                                                                       caplog):
    wrong_url = pd.url + "/v2/enqueue-typo"  # the simulator answers 404 there, as any web server would
    before = misdirected_count("404")
    app = delivering(PAGERDUTY_EVENTS_URL=wrong_url)
    log_id = store_event(app, routing_key)

    wait_until(lambda: len(attempts(app, log_id)) >= 2 and attempts(app, log_id)[0].outcome == "retry",
               timeout=10, message="the event retried after a 404")
    found = row(app, log_id)
    assert (found.status, found.http_status) == ("retrying", 404)  # never failed at once: fixing the URL delivers it
    assert "the events URL is wrong or a proxy is in the way" in found.pd_message
    assert misdirected_count("404") - before >= 1

    response = app.test_client().get("/readyz")
    body = response.get_json()
    assert response.status_code == 503
    assert body["checks"]["pagerduty_url"] == {"ok": False, "url": wrong_url, "open_rows_by_http_status": {"404": 1}}
    assert any(wrong_url in reason and "HTTP 404" in reason for reason in body["reasons"]), body["reasons"]

    named = [record for record in caplog.records if "answers from PAGERDUTY_EVENTS_URL" in record.getMessage()]
    assert len(named) == 1  # once, however many attempts: a backlog would repeat it per row
    assert wrong_url in named[0].getMessage() and named[0].levelname == "ERROR"
    assert routing_key not in caplog.text and routing_key not in response.get_data(as_text=True)


def test_readyz_stays_ready_while_pagerduty_answers(app, pd, routing_key):
    log_id = store_event(app, routing_key)
    wait_until(lambda: row(app, log_id).status == "delivered", timeout=10, message="the event delivered")
    response = app.test_client().get("/readyz")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["checks"]["pagerduty_url"]["ok"] is True


class TricklingPagerDuty:
    """Answers every request with a 202 whose headers never end: a byte every `pause` seconds, until the client
    hangs up. Records when each request arrived and when its connection was closed."""

    def __init__(self, pause: float = 0.2):
        self.pause = pause
        self.server = socket.create_server(("127.0.0.1", 0))
        self.exchanges: list[list] = []  # [arrived, closed or None], per request
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def events_url(self) -> str:
        return f"http://127.0.0.1:{self.server.getsockname()[1]}/v2/enqueue"

    def _accept(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            exchange = [time.monotonic(), None]
            with self.lock:
                self.exchanges.append(exchange)
            conn.sendall(b"HTTP/1.1 202 Accepted\r\nX-Pad: ")
            conn.settimeout(self.pause)
            while not self.stopping.is_set():
                try:
                    if not conn.recv(1):
                        break  # the client hung up
                except TimeoutError:
                    try:
                        conn.sendall(b"a")
                    except OSError:
                        break
                except OSError:
                    break
            exchange[1] = time.monotonic()

    def most_at_once(self) -> int:
        """The most requests open at the same moment."""
        with self.lock:
            spans = [(arrived, closed or time.monotonic()) for arrived, closed in self.exchanges]
        return max((sum(1 for other in spans if other[0] <= start < other[1]) for start, _ in spans), default=0)

    def close(self):
        self.stopping.set()
        self.server.close()


@pytest.fixture
def trickling():
    server = TricklingPagerDuty()
    yield server
    server.close()


def test_a_trickled_answer_is_cut_at_the_sends_deadline_so_no_claim_outlives_its_lease(delivering, trickling,
                                                                                        routing_key):
    """The send's deadline (connect + read timeouts, 1.5 s) is shorter than the lease (2 s): every send ends, as a
    retry, before its lease runs out, so the same event is never on the wire twice at once."""
    app = delivering(PAGERDUTY_EVENTS_URL=trickling.events_url, PAGERDUTY_CONNECT_TIMEOUT=0.5,
                     PAGERDUTY_READ_TIMEOUT=1.0, RELAY_CLAIM_LEASE_SECONDS=2.0, RELAY_RETRY_BASE_SECONDS=0.05,
                     RELAY_RETRY_MAX_SECONDS=0.1)
    log_id = store_event(app, routing_key)
    time.sleep(4.5)  # two leases and more
    worker.stop()

    assert trickling.most_at_once() == 1
    assert len(trickling.exchanges) >= 2
    assert all(closed is not None and closed - arrived < 1.5 + 0.5 for arrived, closed in trickling.exchanges)
    recorded = attempts(app, log_id)
    assert "abandoned" not in [attempt.outcome for attempt in recorded]
    assert all((attempt.outcome, attempt.error) == ("retry", "timeout") for attempt in recorded[:-1]), recorded
