"""Collapsing what need not be sent (relay/store/collapse.py): repeats, a trigger and its resolve both unsent, HA
pairs; on SQLite and PostgreSQL, delivered to the simulator over its socket."""
import json
import threading
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from relay.intake.routing import ConfigError, load_route
from relay.store import collapse, outbox
from relay.store.models import DeliveryAttempt, IncidentLog, db, utcnow
from relay.store.requeue import requeue
from tests.helpers import alertmanager_notification, firing, wait_until

KEY = "c0ffee00c0ffee00c0ffee00c0ffee00"
FLAPPING_KEY = "f1a9f1a9f1a9f1a9f1a9f1a9f1a9f1a9"
ROUTES = [{"name": "flappy", "matchers": ['team="flappy"'], "routing_key": FLAPPING_KEY, "send_flapping": True}]
DEFAULT_ROUTE = {"name": "default", "routing_key": KEY}


def alert(name: str, status: str = "firing", summary: str = "disk full", **labels) -> dict:
    """One Alertmanager alert, firing since 10:00, or resolved at 10:05."""
    entry = firing(name, {"summary": summary}, **labels)
    if status == "resolved":
        entry.update(status="resolved", endsAt="2026-11-26T10:05:00Z")
    return entry


def post(client, *alerts) -> list[dict]:
    """Post one notification carrying the alerts and return its events."""
    response = client.post("/webhooks/alertmanager", json=alertmanager_notification(list(alerts)))
    assert response.status_code == 202, response.get_data(as_text=True)
    return response.get_json()["events"]


def rows(app) -> list[tuple]:
    """(event_action, status, superseded_by) of every row, oldest first."""
    with app.app_context():
        found = [(row.event_action, row.status, row.superseded_by)
                 for row in db.session.query(IncidentLog).order_by(IncidentLog.id)]
        db.session.commit()
        return found


def set_row(app, log_id: int, **values) -> None:
    with app.app_context():
        db.session.execute(update(IncidentLog).where(IncidentLog.id == log_id).values(**values))
        db.session.commit()


def add_attempt(app, log_id: int, outcome: str, http_status: int | None) -> None:
    """Record an attempt on a row as the delivery worker does, and leave the row retrying."""
    with app.app_context():
        db.session.add(DeliveryAttempt(log_id=log_id, outcome=outcome, http_status=http_status,
                                       error=None if http_status else "timeout"))
        db.session.execute(update(IncidentLog).where(IncidentLog.id == log_id).values(status="retrying", attempts=1))
        db.session.commit()


@pytest.fixture
def relay(make_app):
    """An app whose rows nobody sends: what is stored, and how, is all there is to see."""
    return make_app(ROUTES=ROUTES, DEFAULT_ROUTE=DEFAULT_ROUTE)


@pytest.fixture
def http(relay):
    return relay.test_client()


# --- what is stored ------------------------------------------------------------------------------------------

def test_a_repeat_waits_behind_its_first_copy_and_says_which(relay, http):
    (first,) = post(http, alert("DiskFull"))
    (repeat,) = post(http, alert("DiskFull"))
    assert "status" not in first
    assert repeat["status"] == "superseded" and repeat["superseded_by"] == first["log_id"]
    assert repeat["problem"] == f"superseded: a repeat of the trigger waiting in row {first['log_id']}; not sent"
    assert rows(relay) == [("trigger", "pending", None), ("trigger", "superseded", first["log_id"])]


def test_a_trigger_whose_content_changed_is_sent_after_the_first(relay, http):
    post(http, alert("DiskFull", summary="disk 91% full"))
    (changed,) = post(http, alert("DiskFull", summary="disk 99% full"))
    severity = post(http, alert("DiskFull", summary="disk 99% full", severity="critical"))
    assert "status" not in changed and "status" not in severity[0]
    assert [status for _, status, _ in rows(relay)] == ["pending", "pending", "pending"]


def test_a_trigger_and_its_resolve_both_unsent_are_both_superseded(relay, http):
    (trigger,) = post(http, alert("DiskFull"))
    (resolve,) = post(http, alert("DiskFull", "resolved"))
    assert resolve["status"] == "superseded" and resolve["superseded_by"] == trigger["log_id"]
    assert "neither is sent" in resolve["problem"]
    assert rows(relay) == [("trigger", "superseded", resolve["log_id"]), ("resolve", "superseded", trigger["log_id"])]
    with relay.app_context():
        row = db.session.get(IncidentLog, trigger["log_id"])
        assert row.error == f"superseded by row {resolve['log_id']}: resolved before it was sent; not sent"
    # The other replica's resolve is over too; a new firing (later startsAt) is sent.
    (again,) = post(http, alert("DiskFull", "resolved"))
    assert again["status"] == "superseded" and again["superseded_by"] == resolve["log_id"]
    refire = alert("DiskFull")
    refire["startsAt"] = "2026-11-26T10:10:00Z"
    assert "status" not in post(http, refire)[0]


def test_a_resolve_behind_more_unsent_triggers_than_it_reads_back_is_sent_and_supersedes_nothing(relay, http):
    over, within = collapse.WALK_LIMIT + 1, collapse.WALK_LIMIT - 1
    # Every trigger changed (its summary), so none is a repeat: each waits, unsent, in one notification per alert.
    post(http, *(alert("DiskFull", summary=f"disk {n}% full") for n in range(over)))
    cpu = post(http, *(alert("CpuHot", summary=f"cpu at {n}%") for n in range(within)))
    (resolve,) = post(http, alert("DiskFull", "resolved"))
    assert "status" not in resolve  # past the rows it reads back the relay cannot tell what PagerDuty has: it sends
    (collapsed,) = post(http, alert("CpuHot", "resolved"))  # within them, the usual collapse
    assert collapsed["status"] == "superseded"
    assert rows(relay) == [("trigger", "pending", None)] * over + \
        [("trigger", "superseded", collapsed["log_id"])] * within + \
        [("resolve", "pending", None), ("resolve", "superseded", cpu[-1]["log_id"])]


def test_a_route_with_send_flapping_sends_both(relay, http):
    post(http, alert("Flap", team="flappy"))
    post(http, alert("Flap", "resolved", team="flappy"))
    assert rows(relay) == [("trigger", "pending", None), ("resolve", "pending", None)]


def test_send_flapping_must_be_a_boolean():
    with pytest.raises(ConfigError, match="route 'r', field 'send_flapping': Not a valid boolean."):
        load_route({"name": "r", "routing_key": KEY, "send_flapping": "sometimes"})
    assert load_route({"name": "r", "routing_key": KEY}).send_flapping is False


def test_a_trigger_pagerduty_refused_for_now_still_collapses(relay, http):
    (trigger,) = post(http, alert("DiskFull"))
    add_attempt(relay, trigger["log_id"], "retry", 503)
    assert post(http, alert("DiskFull", "resolved"))[0]["status"] == "superseded"
    assert [status for _, status, _ in rows(relay)] == ["superseded", "superseded"]


def test_a_trigger_pagerduty_may_have_received_is_resolved(relay, http):
    """A timeout may come after PagerDuty took the event: the resolve must follow it."""
    (trigger,) = post(http, alert("DiskFull"))
    add_attempt(relay, trigger["log_id"], "retry", None)
    assert "status" not in post(http, alert("DiskFull", "resolved"))[0]
    assert rows(relay) == [("trigger", "retrying", None), ("resolve", "pending", None)]


def test_a_trigger_being_sent_is_never_unsent(relay, http):
    (trigger,) = post(http, alert("DiskFull"))
    set_row(relay, trigger["log_id"], claimed_by="worker-1", claimed_until=utcnow() + timedelta(seconds=30))
    assert "status" not in post(http, alert("DiskFull", "resolved"))[0]
    assert rows(relay) == [("trigger", "pending", None), ("resolve", "pending", None)]


def test_a_claim_committed_while_the_resolve_is_stored_keeps_the_trigger_sent(relay, http):
    """A claimer takes the trigger while the resolve's webhook is deciding: the webhook waits for the claim (the
    row lock on PostgreSQL, the write lock on SQLite), then sees the trigger claimed and sends the resolve too."""
    (trigger,) = post(http, alert("DiskFull"))
    answers = []
    with relay.app_context(), outbox.writer_connection(db.engine) as conn, outbox.write_transaction(conn):
        conn.execute(select(IncidentLog.id).where(IncidentLog.id == trigger["log_id"]).with_for_update())
        webhook = threading.Thread(target=lambda: answers.append(post(relay.test_client(),
                                                                       alert("DiskFull", "resolved"))))
        webhook.start()
        webhook.join(0.5)
        assert webhook.is_alive(), "the webhook should wait for the claim"
        conn.execute(update(IncidentLog).where(IncidentLog.id == trigger["log_id"]).values(
            claimed_by="worker-1", claimed_until=utcnow() + timedelta(seconds=30)))
    webhook.join(10)
    assert "status" not in answers[0][0]
    assert rows(relay) == [("trigger", "pending", None), ("resolve", "pending", None)]


def test_with_the_incident_open_at_pagerduty_only_the_resolve_is_sent(relay, http):
    (delivered,) = post(http, alert("DiskFull", summary="disk 91% full"))
    set_row(relay, delivered["log_id"], status="delivered", created_at=utcnow() - timedelta(minutes=5))
    (update_,) = post(http, alert("DiskFull", summary="disk 99% full"))
    (resolve,) = post(http, alert("DiskFull", "resolved"))
    assert "status" not in resolve
    assert rows(relay) == [("trigger", "delivered", None), ("trigger", "superseded", resolve["log_id"]),
                           ("resolve", "pending", None)]


def test_a_copy_moments_after_delivery_is_superseded_a_later_repeat_is_sent(relay, http):
    (first,) = post(http, alert("DiskFull"))
    set_row(relay, first["log_id"], status="delivered")
    (copy,) = post(http, alert("DiskFull"))
    assert copy["status"] == "superseded" and copy["superseded_by"] == first["log_id"]
    assert "delivered moments before" in copy["problem"]
    set_row(relay, first["log_id"], created_at=utcnow() - timedelta(minutes=5))
    (repeat,) = post(http, alert("DiskFull"))  # repeat_interval: PagerDuty reopens what someone resolved by hand
    assert "status" not in repeat


def test_replay_is_not_blocked_by_repeats_of_the_row_but_by_a_later_resolve(relay, http):
    (trigger,) = post(http, alert("DiskFull"))
    post(http, alert("DiskFull"))  # superseded by the trigger
    set_row(relay, trigger["log_id"], status="failed")
    with relay.app_context():
        assert requeue(db.session, utcnow(), IncidentLog.id == trigger["log_id"]) == [trigger["log_id"]]
        db.session.rollback()
    set_row(relay, trigger["log_id"], status="dead")
    refire = alert("DiskFull")
    refire["startsAt"] = "2026-11-26T10:10:00Z"
    post(http, refire)
    post(http, alert("DiskFull", "resolved"))  # with the refire: both superseded, the alert is over
    with relay.app_context():
        assert requeue(db.session, utcnow(), IncidentLog.id == trigger["log_id"], statuses=("dead",)) == []
        db.session.rollback()


def test_the_api_the_cli_and_the_page_name_the_superseding_row(relay, http):
    (first,) = post(http, alert("DiskFull"))
    (repeat,) = post(http, alert("DiskFull"))
    detail = http.get(f"/api/v1/log/{repeat['log_id']}").get_json()
    assert detail["status"] == "superseded" and detail["superseded_by"] == first["log_id"]
    assert detail["reason"] == repeat["problem"]
    listed = http.get("/api/v1/log", query_string={"status": "superseded"}).get_json()["items"]
    assert [(item["id"], item["superseded_by"]) for item in listed] == [(repeat["log_id"], first["log_id"])]
    shown = relay.test_cli_runner().invoke(args=["relay", "log", "--json", "--status", "superseded"])
    assert [json.loads(line)["superseded_by"] for line in shown.output.splitlines()] == [first["log_id"]]
    page = http.get(f"/log/{repeat['log_id']}").get_data(as_text=True)
    assert f'Superseded by</dt><dd><a href="/log/{first["log_id"]}">row {first["log_id"]}</a>' in page
    assert f'by <a href="/log/{first["log_id"]}">row {first["log_id"]}</a>' in http.get("/").get_data(as_text=True)


# --- what PagerDuty receives (the simulator, over its socket) ---------------------------------------------------

def triggers_received(pd) -> list[str]:
    return [body["dedup_key"] for body in pd.accepted() if body["event_action"] == "trigger"]


def settled(app):
    """Wait until no row is open, and return the rows."""
    def done():
        found = rows(app)
        return found if all(status not in ("pending", "retrying") for _, status, _ in found) else None
    return wait_until(done, 20, message="every row settled")


def test_an_ha_pair_posted_at_once_reaches_pagerduty_once(delivering, pd):
    app = delivering(ROUTES=ROUTES, DEFAULT_ROUTE=DEFAULT_ROUTE)
    notification = [alert(f"Ha{index:02d}") for index in range(20)]
    start = threading.Barrier(2)
    answers = []

    def replica():
        client = app.test_client()
        start.wait()
        answers.append(post(client, *notification))

    replicas = [threading.Thread(target=replica) for _ in range(2)]
    for thread in replicas:
        thread.start()
    for thread in replicas:
        thread.join()
    assert len(answers) == 2 and all(len(events) == 20 for events in answers)
    found = settled(app)
    assert sorted(status for _, status, _ in found) == ["delivered"] * 20 + ["superseded"] * 20
    received = triggers_received(pd)
    assert len(received) == 20 and len(set(received)) == 20


def test_fire_then_resolve_during_an_outage_sends_nothing_after_it(delivering, pd):
    # Backoff grown long, as in an outage of minutes: the trigger waits between tries rather than being in flight.
    app = delivering(ROUTES=ROUTES, DEFAULT_ROUTE=DEFAULT_ROUTE, RELAY_RETRY_BASE_SECONDS=30.0,
                    RELAY_RETRY_MAX_SECONDS=30.0)
    pd.set_outage("503")
    post(app.test_client(), alert("DiskFull"))
    wait_until(lambda: rows(app)[0][1] == "retrying", 10, message="the trigger retried")
    post(app.test_client(), alert("DiskFull", "resolved"))
    pd.set_outage(None)
    found = settled(app)
    assert [status for _, status, _ in found] == ["superseded", "superseded"]
    assert pd.accepted() == []
    assert {record["status"] for record in pd.received()} == {503}  # only the trigger's tries during the outage


def test_with_send_flapping_both_are_sent_in_order_after_the_outage(delivering, pd):
    app = delivering(ROUTES=ROUTES, DEFAULT_ROUTE=DEFAULT_ROUTE)
    pd.set_outage("503")
    post(app.test_client(), alert("Flap", team="flappy"))
    wait_until(lambda: rows(app)[0][1] == "retrying", 10, message="the trigger retried")
    post(app.test_client(), alert("Flap", "resolved", team="flappy"))
    pd.set_outage(None)
    assert [status for _, status, _ in settled(app)] == ["delivered", "delivered"]
    assert [body["event_action"] for body in pd.accepted()] == ["trigger", "resolve"]
    assert [alert_["status"] for alert_ in pd.alerts()] == ["resolved"]


def test_changed_content_is_sent_once_after_the_first_trigger(delivering, pd):
    app = delivering(ROUTES=ROUTES, DEFAULT_ROUTE=DEFAULT_ROUTE)
    pd.set_outage("503")
    client = app.test_client()
    post(client, alert("DiskFull", summary="disk 91% full"))
    wait_until(lambda: rows(app)[0][1] == "retrying", 10, message="the trigger retried")
    for _ in range(3):  # each replica, and a repeat_interval re-send, while PagerDuty is down
        post(client, alert("DiskFull", summary="disk 99% full"))
    pd.set_outage(None)
    found = settled(app)
    assert [status for _, status, _ in found] == ["delivered", "delivered", "superseded", "superseded"]
    assert [body["payload"]["summary"] for body in pd.accepted()] == ["DiskFull: disk 91% full",
                                                                       "DiskFull: disk 99% full"]
