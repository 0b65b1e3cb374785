"""POST /api/v1/incidents and its follow-ups, end to end to the simulator, on both stores."""
import time

import pytest

from relay.store.models import DeliveryAttempt, IncidentLog, db
from tests.helpers import wait_until


def create(client, **fields):
    return client.post("/api/v1/incidents", json=fields)


def log_row(app, log_id):
    with app.app_context():
        row = db.session.get(IncidentLog, log_id)
        db.session.expunge(row)
        return row


def test_create_incident_sends_trigger_and_logs_it(app, client, pd, routing_key):
    response = create(client, title="Checkout is down", service_key=routing_key, urgency="high", body="5xx > 50%")
    assert response.status_code == 200
    body = response.get_json()
    assert body["success"] is True and body["status"] == "success" and body["message"] == "Event processed"
    sent = pd.accepted()[0]
    assert sent["routing_key"] == routing_key and sent["event_action"] == "trigger"
    assert sent["payload"]["summary"] == "Checkout is down"
    assert sent["payload"]["severity"] == "critical"
    assert sent["payload"]["custom_details"]["body"] == "5xx > 50%"
    assert body["dedup_key"] == sent.get("dedup_key", body["dedup_key"]) and len(body["dedup_key"]) == 32
    row = log_row(app, body["log_id"])
    assert (row.status, row.http_status, row.attempts, row.source) == ("delivered", 202, 1, "api")
    assert row.dedup_key == body["dedup_key"] and row.routing_key_masked == "…" + routing_key[-4:]
    assert "routing_key" not in row.event and row.delivered_at is not None


def test_low_urgency_maps_to_warning_and_defaults_apply(client, pd, routing_key):
    assert create(client, title="Disk 80%", service_key=routing_key, urgency="low").status_code == 200
    payload = pd.accepted()[0]["payload"]
    assert payload["severity"] == "warning" and payload["custom_details"]["body"] == ""
    assert payload["source"] == "relay"


def test_given_dedup_key_is_used(client, pd, routing_key):
    body = create(client, title="t", service_key=routing_key, dedup_key="db/primary").get_json()
    assert body["dedup_key"] == "db/primary" and pd.accepted()[0]["dedup_key"] == "db/primary"


def test_acknowledge_and_resolve_follow_the_trigger(client, pd, routing_key):
    dedup_key = create(client, title="t", service_key=routing_key).get_json()["dedup_key"]
    ack = client.post(f"/api/v1/incidents/{dedup_key}/acknowledge", json={"service_key": routing_key})
    assert ack.status_code == 200 and ack.get_json()["dedup_key"] == dedup_key
    assert pd.alerts()[0]["status"] == "acknowledged"
    res = client.post(f"/api/v1/incidents/{dedup_key}/resolve", json={"service_key": routing_key})
    assert res.status_code == 200
    assert [e["event_action"] for e in pd.accepted()] == ["trigger", "acknowledge", "resolve"]
    assert pd.alerts()[0]["status"] == "resolved"


def test_pagerduty_refusal_is_a_422_pagerduty_error_with_its_key_and_logged(app, client, pd, routing_key):
    pd.set_routing_keys(["f" * 32])
    response = create(client, title="t", service_key=routing_key)
    assert response.status_code == 422
    body = response.get_json()
    assert body["name"] == "PagerDutyError"
    assert body["value"] == "PagerDuty API error: Event object is invalid: Invalid routing key"
    row = log_row(app, body["log_id"])
    assert (row.status, row.http_status, row.pd_errors) == ("failed", 400, ["Invalid routing key"])
    assert body["dedup_key"] == row.dedup_key == pd.received()[0]["body"]["dedup_key"]
    assert routing_key not in response.get_data(as_text=True)


def test_the_dedup_key_is_chosen_when_stored_so_a_queued_incident_can_be_resolved(app, client, pd, routing_key):
    """Issue 13, item 3: PagerDuty keeps a key it is given, so the one the relay answers is the incident's."""
    app.config["RELAY_SYNC_WAIT_SECONDS"] = 0.3
    pd.set_outage("503")
    queued = create(client, title="t", service_key=routing_key)
    assert queued.status_code == 202
    dedup_key = queued.get_json()["dedup_key"]
    assert len(dedup_key) == 32 and log_row(app, queued.get_json()["log_id"]).dedup_key == dedup_key
    resolve = client.post(f"/api/v1/incidents/{dedup_key}/resolve", json={"service_key": routing_key})
    assert resolve.status_code == 202 and resolve.get_json()["dedup_key"] == dedup_key
    pd.set_outage(None)
    wait_until(lambda: len(pd.accepted()) == 2, 5, "both events at PagerDuty once it is back")
    assert [(e["event_action"], e["dedup_key"]) for e in pd.accepted()] == [("trigger", dedup_key),
                                                                          ("resolve", dedup_key)]
    assert [(a["dedup_key"], a["status"]) for a in pd.alerts()] == [(dedup_key, "resolved")]


def test_a_given_up_event_is_a_502_pagerduty_error_saying_what_was_answered(delivering, pd, routing_key):
    app = delivering(RELAY_GIVE_UP_AFTER_SECONDS=0.3)
    pd.set_outage("503")
    response = create(app.test_client(), title="t", service_key=routing_key)
    body = response.get_json()
    assert response.status_code == 502 and body["name"] == "PagerDutyError"
    row = log_row(app, body["log_id"])
    assert row.status == "dead" and body["dedup_key"] == row.dedup_key
    assert body["value"].startswith(f"PagerDuty API error: gave up after {row.attempts} attempt(s); the last "
                                    "answer: HTTP 503")


@pytest.mark.parametrize("give_up, status, outcome", [(86400, 202, "retrying"), (0.3, 502, "dead")])
def test_a_wrong_events_url_is_never_answered_as_the_relays_own_404(delivering, pd, routing_key, give_up, status,
                                                                     outcome):
    """PagerDuty's 404 means the events URL is wrong: retried until the give-up age, then dead; never our 404."""
    app = delivering(RELAY_SYNC_WAIT_SECONDS=1.0, RELAY_GIVE_UP_AFTER_SECONDS=give_up)
    pd.inject(404, count=1000)
    response = create(app.test_client(), title="t", service_key=routing_key)
    body = response.get_json()
    assert response.status_code == status and log_row(app, body["log_id"]).status == outcome
    assert body["dedup_key"] and "HTTP 404 is no Events API answer" in (body.get("message") or body.get("value"))


def test_an_answer_that_ends_delivery_without_refusing_the_event_is_a_502(app, client, pd, routing_key):
    pd.inject(410)
    response = create(client, title="t", service_key=routing_key)
    body = response.get_json()
    assert response.status_code == 502 and body["name"] == "PagerDutyError"
    assert log_row(app, body["log_id"]).status == "failed"
    assert body["value"].startswith("PagerDuty API error: the answer ends delivery for good: HTTP 410")


@pytest.mark.parametrize("fault", [503, 500, 429])
def test_transient_pagerduty_trouble_is_retried_within_the_wait(app, client, pd, routing_key, fault):
    pd.inject(fault, count=2)
    response = create(client, title="t", service_key=routing_key)
    assert response.status_code == 200 and response.get_json()["success"] is True
    with app.app_context():
        attempts = db.session.query(DeliveryAttempt).filter_by(log_id=response.get_json()["log_id"]) \
            .order_by(DeliveryAttempt.id).all()
        assert [(a.outcome, a.http_status) for a in attempts] == [("retry", fault), ("retry", fault),
                                                                  ("delivered", 202)]
    assert len(pd.accepted()) == 1


@pytest.mark.parametrize("trouble", ["refuse", "timeout"])
def test_unreachable_pagerduty_answers_queued_after_the_bounded_wait(app, client, pd, routing_key, trouble):
    app.config["RELAY_SYNC_WAIT_SECONDS"] = 0.5 if trouble == "refuse" else 2.5
    if trouble == "refuse":
        pd.set_outage("refuse")
    else:
        pd.set_latency(2.2)  # past the 2 s read timeout
    response = create(client, title="t", service_key=routing_key)
    body = response.get_json()
    assert response.status_code == 202 and body["status"] == "queued" and body["success"] is False
    assert "relay keeps trying" in body["message"] and len(body["dedup_key"]) == 32
    assert routing_key not in response.get_data(as_text=True)
    pd.set_outage(None)
    pd.set_latency(0)
    row = wait_until(lambda: (found := log_row(app, body["log_id"])).status == "delivered" and found, 5,
                     "delivery once PagerDuty is back")
    assert row.status == "delivered" and row.attempts >= 2


def test_sync_wait_is_bounded(app, client, pd, routing_key):
    app.config["RELAY_SYNC_WAIT_SECONDS"] = 0.3
    pd.set_outage("503")
    started = time.monotonic()
    response = create(client, title="t", service_key=routing_key)
    assert response.status_code == 202 and time.monotonic() - started < 1.5


@pytest.mark.parametrize("fields, bad", [
    ({"service_key": "k" * 32}, {"title"}),
    ({"title": "t"}, {"service_key"}),
    ({"title": "t", "service_key": "k" * 32, "urgency": "urgent"}, {"urgency"}),
    ({"title": "", "service_key": "k" * 32}, {"title"}),
    ({"title": 5, "service_key": ["x"]}, {"title", "service_key"}),
    ({"title": "t", "service_key": "has space"}, {"service_key"}),
    ({"title": "t", "service_key": "k" * 32, "dedup_key": "d" * 256}, {"dedup_key"}),
    ({"title": "t", "service_key": "k" * 32, "body": {"nested": 1}}, {"body"}),
    ({"title": "t", "service_key": "k" * 32, "severity": "low", "Urgency": "low"}, {"severity", "Urgency"}),
])
def test_invalid_input_is_400_naming_each_field(client, pd, fields, bad):
    response = create(client, **fields)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "invalid_input" and set(error["fields"]) == bad
    assert pd.received() == []


@pytest.mark.parametrize("data, message", [
    ("not json", "the request body is not valid JSON: Expecting value: line 1 column 1 (char 0)"),
    ("[1, 2]", "the request body must be a JSON object"),
    ("", "the request body is empty; send a JSON object"),
    ("\"title\"", "the request body must be a JSON object"),
    (b"\xff\xfe{}", "the request body is not valid JSON: not UTF-8"),
    ("[" * 100_000 + "]" * 100_000, "the request body is not valid JSON: nested too deeply"),
    ('{"title": ' + "[" * 70 + "]" * 70 + "}", "the request body nests deeper than 64 levels"),
])
def test_unreadable_body_is_400_saying_why(client, data, message):
    response = client.post("/api/v1/incidents", data=data, content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["error"]["message"] == message


def test_oversized_body_is_413_in_the_error_shape(app, client):
    app.config["MAX_CONTENT_LENGTH"] = 1000
    response = client.post("/api/v1/incidents", data="x" * 2000, content_type="application/json")
    assert response.status_code == 413 and response.get_json()["error"]["code"] == "request_entity_too_large"


def test_unknown_route_and_method_use_the_error_shape(client):
    assert client.get("/api/v1/nope").get_json()["error"]["code"] == "not_found"
    response = client.get("/api/v1/incidents")
    assert response.status_code == 405 and response.get_json()["error"]["code"] == "method_not_allowed"


def test_follow_up_requires_service_key(client):
    response = client.post("/api/v1/incidents/abc/resolve", json={})
    assert response.status_code == 400 and "service_key" in response.get_json()["error"]["fields"]


def test_follow_up_addresses_any_dedup_key_a_trigger_may_carry(client, pd, routing_key):
    dedup_key = "db/primary\nline two"
    assert create(client, title="t", service_key=routing_key, dedup_key=dedup_key).status_code == 200
    response = client.post("/api/v1/incidents/db/primary%0Aline%20two/resolve", json={"service_key": routing_key})
    assert response.status_code == 200 and response.get_json()["dedup_key"] == dedup_key
    assert [(a["dedup_key"], a["status"]) for a in pd.alerts()] == [(dedup_key, "resolved")]


@pytest.mark.parametrize("action", ["acknowledge", "resolve"])
def test_follow_up_names_unknown_fields(client, pd, routing_key, action):
    response = client.post(f"/api/v1/incidents/abc/{action}", json={"service_key": routing_key, "note": "done"})
    assert response.status_code == 400
    assert response.get_json()["error"]["fields"] == {"note": ["Unknown field."]}
    assert pd.received() == []


def test_healthz(client):
    assert client.get("/healthz").status_code == 200


def test_retry_endpoint_sends_a_failed_row_again(app, client, pd, routing_key):
    pd.set_routing_keys(["f" * 32])
    log_id = create(client, title="t", service_key=routing_key).get_json()["log_id"]
    assert log_row(app, log_id).status == "failed"
    pd.set_routing_keys([routing_key])  # the key now exists: the same event goes through
    response = client.post(f"/api/v1/log/{log_id}/retry")
    assert response.status_code == 202 and response.get_json() == {"log_id": log_id, "status": "pending"}
    wait_until(lambda: log_row(app, log_id).status == "delivered", 5, "delivery of the retried row")
    assert log_row(app, log_id).status == "delivered" and log_row(app, log_id).attempts == 2


def test_retry_endpoint_refuses_rows_that_are_not_failed(app, client, pd, routing_key):
    log_id = create(client, title="t", service_key=routing_key).get_json()["log_id"]
    response = client.post(f"/api/v1/log/{log_id}/retry")
    assert response.status_code == 409 and "is delivered" in response.get_json()["error"]["message"]
    missing = client.post("/api/v1/log/999999/retry")
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"


def test_nul_characters_never_reach_the_store(app, client, pd, routing_key):
    response = client.post("/api/v1/incidents", data='{"title": "disk\\u0000full", "service_key": "%s"}'
                           % routing_key, content_type="application/json")
    assert response.status_code == 200
    assert pd.accepted()[0]["payload"]["summary"] == "disk\ufffdfull"
    assert client.get("/api/v1/log", query_string={"source": "a\x00b"}).status_code == 400
    assert client.post("/api/v1/incidents/a%00b/resolve", json={"service_key": routing_key}).status_code == 400


def test_retry_endpoint_refuses_a_trigger_its_delivered_resolve_supersedes(app, client, pd, routing_key):
    """Issue 18, item 7: retrying the failed trigger after its resolve went through would open an incident that
    nothing closes."""
    pd.set_routing_keys(["f" * 32])
    trigger = create(client, title="t", service_key=routing_key, dedup_key="outage-1").get_json()["log_id"]
    assert log_row(app, trigger).status == "failed"
    pd.set_routing_keys([routing_key])
    resolved = client.post("/api/v1/incidents/outage-1/resolve", json={"service_key": routing_key}).get_json()
    response = client.post(f"/api/v1/log/{trigger}/retry")
    assert response.status_code == 409 and response.get_json()["error"] == {
        "code": "superseded",
        "message": f"row {trigger} (trigger) was not sent again: row {resolved['log_id']} (resolve, delivered) is "
                   "newer for the same alert, and sending the older event would undo it"}
    assert log_row(app, trigger).status == "failed"
    time.sleep(0.3)  # a requeued row would have been sent by now
    assert [e["event_action"] for e in pd.accepted()] == [] and pd.alerts() == []
