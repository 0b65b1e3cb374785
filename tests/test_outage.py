"""Outages per PagerDuty endpoint: one probe at a time while it is down, the whole backlog due the moment a probe
gets through, a 429 holding only its own key; on both stores, through the real simulator."""
import time
from collections import Counter

import pytest
from sqlalchemy import insert, select

from relay.delivery.worker import DeliveryWorker
from relay.pagerduty.client import Delivery
from relay.pagerduty.retry import RetryPolicy
from relay.store import endpoints, outbox, states
from relay.store.claim import claim as claim_rows
from relay.store.complete import complete as complete_rows
from relay.store.models import EndpointState, IncidentLog, db, utcnow
from tests.helpers import store_events, trigger_event, wait_until

OUTAGE_SECONDS = 4.0
SETTINGS = {"RELAY_RETRY_BASE_SECONDS": 0.05, "RELAY_RETRY_MAX_SECONDS": 0.4, "RELAY_OUTAGE_PROBE_MAX_SECONDS": 0.4,
            "RELAY_DELIVERY_CONCURRENCY": 8, "RELAY_GIVE_UP_AFTER_SECONDS": 3600}


def endpoint_down(app) -> bool:
    with app.app_context():
        found = db.session.execute(select(EndpointState.down_since)).scalars().all()
        db.session.commit()
        return any(found)


def probe_bound(seconds: float) -> int:
    """Most probes an outage this long allows: spaced from the base doubling up to the cap."""
    spacing, elapsed, probes = SETTINGS["RELAY_RETRY_BASE_SECONDS"], 0.0, 0
    while elapsed <= seconds:
        elapsed += spacing
        probes += 1
        spacing = min(2 * spacing, SETTINGS["RELAY_OUTAGE_PROBE_MAX_SECONDS"])
    return probes


def outage_then_recovery(app, pd, backlog: int, seconds: float = OUTAGE_SECONDS):
    """Take PagerDuty down with a backlog waiting, bring it back; return (requests during the outage, when it was
    declared down, when it came back)."""
    pd.set_outage("503")
    keys = [f"{n:032x}" for n in range(4)]
    store_events(app, [trigger_event(keys[n % 4], f"alert-{n}") for n in range(backlog)])
    wait_until(lambda: endpoint_down(app), timeout=5, message="the endpoint declared down")
    declared_at = time.time()
    time.sleep(seconds)
    during = len(pd.received())
    pd.set_outage(None)
    return during, declared_at, time.time()


def test_a_down_endpoint_is_probed_one_event_at_a_time_and_the_backlog_goes_when_it_is_back(delivering, pd):
    app = delivering(**SETTINGS)
    during, _, back_at = outage_then_recovery(app, pd, backlog=200)
    # The failures that declared it down, the sends already in flight then, and the probes: not every row's retries.
    assert during <= endpoints.DOWN_AFTER + SETTINGS["RELAY_DELIVERY_CONCURRENCY"] + probe_bound(OUTAGE_SECONDS)
    wait_until(lambda: len(pd.accepted()) == 200, timeout=10, message="the whole backlog delivered")
    accepted = sorted(r["received_at"] for r in pd.received() if r["outcome"] == "accepted")
    assert accepted[0] - back_at <= SETTINGS["RELAY_OUTAGE_PROBE_MAX_SECONDS"] + 0.5  # the next probe got through
    assert accepted[-1] - accepted[0] < 2.0  # the rest at once: 50 per key is within each key's budget
    assert not endpoint_down(app)


def test_without_probing_every_row_retries_on_its_own(delivering, pd):
    app = delivering(RELAY_OUTAGE_PROBING=False, RELAY_RATE_LIMIT_PER_MINUTE=0, **SETTINGS)
    pd.set_outage("503")
    store_events(app, [trigger_event("k" * 32, f"alert-{n}") for n in range(50)])
    time.sleep(1.0)
    assert len(pd.received()) > 3 * 50  # the knocking the probes spare PagerDuty
    with app.app_context():
        assert db.session.execute(select(EndpointState)).first() is None


def test_a_429_holds_its_own_key_only(delivering, pd):
    app = delivering(**{**SETTINGS, "RELAY_RETRY_MAX_SECONDS": 5})  # a Retry-After is honoured up to this
    limited, other = "a" * 32, "b" * 32
    pd.inject(429, count=1, retry_after=2)
    store_events(app, [trigger_event(limited, "first")])
    wait_until(lambda: pd.received(), timeout=5, message="the 429")
    limited_at = time.time()
    store_events(app, [trigger_event(limited, "second"), trigger_event(other, "unrelated")])
    wait_until(lambda: len(pd.accepted()) == 3, timeout=10, message="all three delivered")
    at = {r["body"]["dedup_key"]: r["received_at"] for r in pd.received() if r["outcome"] == "accepted"}
    assert at["unrelated"] - limited_at < 1.0
    assert at["second"] - limited_at >= 1.5  # waited out the key's Retry-After (less the time it took to store)
    assert not endpoint_down(app)  # one key's limit is no outage


def test_two_instances_probe_one_at_a_time_and_lose_nothing(make_app, backend, pd):
    if backend != "postgresql":
        pytest.skip("instances share a store on PostgreSQL")
    app, other = make_app(**SETTINGS), make_app(**SETTINGS)
    pd.set_latency(0.2)  # a probe in flight for a while: a second instance's probe would overlap it
    workers = [DeliveryWorker(app, registered=False).start(), DeliveryWorker(other, registered=False).start()]
    try:
        during, declared_at, back_at = outage_then_recovery(app, pd, backlog=100, seconds=3.0)
        wait_until(lambda: len(pd.accepted()) >= 100, timeout=15, message="the whole backlog delivered")
        time.sleep(0.5)
    finally:
        for running in workers:
            running.stop()
    received = pd.received()
    # Once the sends in flight when it was declared down have ended, every request is a probe, and the next only
    # follows the last one's answer (0.2 s later), whichever instance sends it.
    probes = sorted(r["received_at"] for r in received[:during] if declared_at + 0.5 < r["received_at"] < back_at)
    assert all(later - earlier >= 0.15 for earlier, later in zip(probes, probes[1:])), probes
    assert during <= endpoints.DOWN_AFTER + 2 * SETTINGS["RELAY_DELIVERY_CONCURRENCY"] + probe_bound(3.0)
    delivered = Counter(r["body"]["dedup_key"] for r in received if r["outcome"] == "accepted")
    assert set(delivered) == {f"alert-{n}" for n in range(100)} and set(delivered.values()) == {1}


def test_an_outage_is_shown_in_metrics_readyz_and_the_log_page(delivering, pd):
    app = delivering(**SETTINGS)
    client = app.test_client()
    pd.set_outage("refuse")
    store_events(app, [trigger_event("c" * 32, f"alert-{n}") for n in range(5)])
    wait_until(lambda: endpoint_down(app), timeout=5, message="the endpoint declared down")
    url = pd.events_url
    metrics = client.get("/metrics").get_data(as_text=True)
    assert f'relay_pagerduty_endpoint_up{{events_url="{url}"}} 0.0' in metrics
    assert f'relay_pagerduty_endpoint_waiting{{events_url="{url}"}} 5.0' in metrics
    (shown,) = client.get("/readyz").get_json()["checks"]["pagerduty"]["endpoints"]
    assert shown["url"] == url and shown["state"] == "down, probing" and shown["waiting"] == 5
    page = client.get("/").get_data(as_text=True)
    assert "PagerDuty is unreachable" in page and "<b>5</b>" in page and url in page
    pd.set_outage(None)
    wait_until(lambda: len(pd.accepted()) == 5, timeout=5, message="the backlog delivered")
    wait_until(lambda: not endpoint_down(app), timeout=5, message="the endpoint up again")
    assert f'relay_pagerduty_endpoint_up{{events_url="{url}"}} 1.0' in client.get("/metrics").get_data(as_text=True)
    assert "relay_pagerduty_seconds_since_last_answer" in client.get("/metrics").get_data(as_text=True)
    assert "PagerDuty is unreachable" not in client.get("/").get_data(as_text=True)
    assert client.get("/readyz").get_json()["checks"]["pagerduty"]["endpoints"][0]["state"] == "up"


def test_a_down_endpoint_gives_one_claim_its_oldest_row_and_puts_the_rest_off(make_app, pd):
    app = make_app()
    rule = endpoints.OutageRule(pd.events_url, 0.05, 0.4)
    ids = store_events(app, [trigger_event("d" * 32, f"alert-{n}") for n in range(3)])
    now = utcnow()
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(insert(EndpointState).values(events_url=pd.events_url, failures=3, down_since=now,
                                                  probe_at=now, probe_delay=0.05))

    def claim():
        with app.app_context(), outbox.writer_connection(db.engine) as conn, conn.begin():
            return claim_rows(conn, "w1", 10, now, 30, 0, rule)

    (probe,) = claim()
    assert probe.log_id == ids[0]
    assert claim() == []  # a probe in flight: no second one, from this worker or any other
    with app.app_context():
        held = {db.session.get(IncidentLog, log_id).next_attempt_at for log_id in ids[1:]}
    assert held == {now + endpoints.HELD_WHILE_DOWN}  # not read again at every probe
    with app.app_context(), outbox.writer_connection(db.engine) as conn, conn.begin():
        complete_rows(conn, "w1", [(probe, Delivery(states.DELIVERED, 202))], now, RetryPolicy(), rule)
    with app.app_context():
        assert {db.session.get(IncidentLog, log_id).next_attempt_at for log_id in ids[1:]} == {now}  # all due
    assert not endpoint_down(app)
