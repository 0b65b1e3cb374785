"""GET /api/v1/log and /api/v1/log/<id>: filters, pagination, masked keys, attempts."""
import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from relay.store.models import IncidentLog, db

FIXTURES = Path(__file__).parent / "fixtures"
KEY = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def filled(make_app):
    """An app whose log holds 2 Alertmanager events, 1 unrouted generic event and 3 job rows."""
    app = make_app(DEFAULT_ROUTE=None, ROUTES=[
        {"name": "infra", "matchers": ['alertname=~".+"'], "routing_key": KEY}])
    client = app.test_client()
    client.post("/webhooks/alertmanager", data=(FIXTURES / "alertmanager_firing_v4.json").read_bytes(),
                content_type="application/json")
    client.post("/webhooks/generic", json={"summary": "no route for me", "labels": {"team": "x"}})
    return app, client


def items(client, **query):
    response = client.get("/api/v1/log", query_string=query)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_lists_newest_first_with_masked_keys(filled):
    _, client = filled
    body = items(client)
    assert [i["source"] for i in body["items"]] == ["generic", "alertmanager", "alertmanager"]
    assert body["next_before_id"] is None
    assert {i["routing_key"] for i in body["items"]} == {"", "…cdef"}
    assert KEY not in json.dumps(body)


@pytest.mark.parametrize("query, sources", [
    ({"status": "unrouted"}, ["generic"]),
    ({"status": "pending"}, ["alertmanager", "alertmanager"]),
    ({"source": "alertmanager"}, ["alertmanager", "alertmanager"]),
    ({"route": "infra"}, ["alertmanager", "alertmanager"]),
    ({"since": "1h"}, ["generic", "alertmanager", "alertmanager"]),
    ({"until": "1h"}, []),
    ({"since": "2000-01-01T00:00:00Z", "until": "2000-01-02T00:00:00Z"}, []),
])
def test_filters(filled, query, sources):
    assert [i["source"] for i in items(filled[1], **query)["items"]] == sources


def test_dedup_key_filter(filled):
    _, client = filled
    key = items(client, source="alertmanager")["items"][0]["dedup_key"]
    assert {i["dedup_key"] for i in items(client, dedup_key=key)["items"]} == {key}


def test_keyset_pagination_walks_every_row_once(filled):
    _, client = filled
    first = items(client, limit=2)
    second = items(client, limit=2, before_id=first["next_before_id"])
    ids = [i["id"] for i in first["items"] + second["items"]]
    assert len(ids) == 3 == len(set(ids)) and ids == sorted(ids, reverse=True)
    assert second["next_before_id"] is None


@pytest.mark.parametrize("query, field", [({"status": "exploded"}, "status"), ({"limit": "0"}, "limit"),
                                          ({"limit": "501"}, "limit"), ({"since": "yesterday"}, "since"),
                                          ({"since": "99999999999d"}, "since"), ({"since": "999999w"}, "since"),
                                          ({"before_id": "x"}, "before_id")])
def test_bad_filters_are_400_naming_the_field(filled, query, field):
    response = filled[1].get("/api/v1/log", query_string=query)
    assert response.status_code == 400 and field in response.get_json()["error"]["fields"]


def test_detail_shows_event_alert_and_attempts(app, client, pd, routing_key):
    log_id = client.post("/api/v1/incidents", json={"title": "Detail me", "service_key": routing_key}) \
        .get_json()["log_id"]
    detail = client.get(f"/api/v1/log/{log_id}").get_json()
    assert detail["event"]["payload"]["summary"] == "Detail me"
    assert detail["event"]["routing_key"] == "…" + routing_key[-4:]
    assert [(a["outcome"], a["http_status"]) for a in detail["attempt_log"]] == [("delivered", 202)]
    assert detail["pagerduty"]["message"] == "Event processed"
    assert routing_key not in json.dumps(detail)


def test_detail_of_a_webhook_row_keeps_the_inbound_alert(filled):
    _, client = filled
    log_id = items(client, source="alertmanager")["items"][0]["id"]
    alert = client.get(f"/api/v1/log/{log_id}").get_json()["alert"]
    assert alert["labels"]["alertname"] == "High CPU Temperature" and alert["status"] == "firing"


def test_detail_of_unknown_row_is_404(client):
    response = client.get("/api/v1/log/987654")
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"


def test_detail_masks_a_routing_key_taken_from_a_label(make_app):
    key = "fedcba9876543210fedcba9876543210"
    app = make_app(DEFAULT_ROUTE={"name": "by-label", "routing_key_template": "{{ labels.pd_key }}"})
    client = app.test_client()
    body = {"summary": "keyed by label", "labels": {"pd_key": key, "team": "db"}}
    log_id = client.post("/webhooks/generic", json=body).get_json()["events"][0]["log_id"]
    detail = client.get(f"/api/v1/log/{log_id}")
    assert detail.status_code == 200 and key not in detail.get_data(as_text=True)
    assert detail.get_json()["alert"]["labels"] == {"pd_key": "…3210", "team": "db"}


# --- no key taken from a label, and no key in a summary, ever reaches the API or the CLI (Hardening 10) ----

LABEL_KEY = "fedcba9876543210fedcba9876543210"


def test_a_key_from_a_label_never_shows_on_another_routes_rows(make_app):
    app = make_app(DEFAULT_ROUTE=None, ROUTES=[
        {"name": "by-label", "routing_key_template": "{{ labels.pd_service_key }}", "continue": True},
        {"name": "infra", "matchers": ['alertname=~".+"'], "routing_key": KEY}])
    client = app.test_client()
    alert = {"status": "firing", "labels": {"alertname": "DiskFull", "pd_service_key": LABEL_KEY},
             "annotations": {"summary": f"page {LABEL_KEY}"}, "startsAt": "2024-05-01T10:00:00Z"}
    answer = client.post("/webhooks/alertmanager", json={"version": "4", "status": "firing", "alerts": [alert]})
    assert answer.status_code == 202 and LABEL_KEY not in answer.get_data(as_text=True)
    listed = items(client)
    assert [i["route"] for i in listed["items"]] == ["infra", "by-label"]
    shown = [json.dumps(listed)] + [client.get(f"/api/v1/log/{i['id']}").get_data(as_text=True)
                                    for i in listed["items"]]
    shown += [app.test_cli_runner().invoke(args=["relay", "log"]).output]
    shown += [app.test_cli_runner().invoke(args=["relay", "log", "--id", str(i["id"])]).output
              for i in listed["items"]]
    assert all(LABEL_KEY not in text for text in shown)


def test_a_summary_holding_its_rows_key_is_masked_in_the_api_and_cli(make_app):
    app = make_app(RELAY_SYNC_WAIT_SECONDS=0.1)
    client = app.test_client()
    client.post("/api/v1/incidents", json={"title": f"rotate {KEY} now", "service_key": KEY})
    (item,) = items(client)["items"]
    assert item["summary"] == "rotate …cdef now"
    detail = client.get(f"/api/v1/log/{item['id']}").get_json()
    assert detail["summary"] == "rotate …cdef now" and KEY not in json.dumps(detail)
    for args in (["relay", "log"], ["relay", "log", "--id", str(item["id"])]):
        output = app.test_cli_runner().invoke(args=args).output
        assert "rotate …cdef now" in output and KEY not in output


# --- unknown parameters, text search, a follow-up's summary, why a row is so (issue 13, items 10 and 12) -------

def test_an_unknown_parameter_is_a_400_naming_it(filled):
    response = filled[1].get("/api/v1/log", query_string={"stauts": "failed", "source": "generic"})
    error = response.get_json()["error"]
    assert response.status_code == 400 and list(error["fields"]) == ["stauts"]
    assert "status" in error["fields"]["stauts"][0]  # names the ones it knows


@pytest.fixture
def searchable(make_app):
    """A log of three generic alerts with their own texts, dedup keys and labels."""
    app = make_app(DEFAULT_ROUTE={"name": "catch-all", "routing_key": KEY})
    client = app.test_client()
    for body in ({"summary": "Disk FULL on db-1", "dedup_key": "disk-db-1", "labels": {"team": "storage"}},
                 {"summary": "Queue backlog", "dedup_key": "mq-2_backlog", "labels": {"queue": 'orders "EU"'}},
                 {"summary": "50% packet loss", "dedup_key": "net-7", "labels": {"Zone": "eu-west-1b"}}):
        assert client.post("/webhooks/generic", json=body).status_code == 202
    return client


@pytest.mark.parametrize("q, found", [
    ("disk full", ["Disk FULL on db-1"]),  # each word, any letter case, in the summary
    ("MQ-2", ["Queue backlog"]),  # in the dedup key
    ("storage", ["Disk FULL on db-1"]),  # a label's value
    ("zone", ["50% packet loss"]),  # a label's name
    ('"eu"', ["Queue backlog"]),  # quotes in a label's value
    ("eu", ["50% packet loss", "Queue backlog"]),
    ("50%", ["50% packet loss"]),  # the wildcards of LIKE are plain characters
    ("%", ["50% packet loss"]),
    ("2_b", ["Queue backlog"]),
    ("_", ["Queue backlog"]),
    ("disk backlog", []),  # every word must be found
])
def test_text_search_over_summary_dedup_key_and_labels(searchable, q, found):
    assert [i["summary"] for i in items(searchable, q=q)["items"]] == found


@pytest.mark.parametrize("q", ["", "x" * 201])
def test_a_search_of_no_or_too_many_characters_is_a_400(searchable, q):
    response = searchable.get("/api/v1/log", query_string={"q": q})
    assert response.status_code == 400 and "q" in response.get_json()["error"]["fields"]


def test_a_resolve_from_a_webhook_keeps_its_alerts_summary(make_app):
    app = make_app(DEFAULT_ROUTE=None, ROUTES=[
        {"name": "templated", "matchers": ['team="db"'], "routing_key": KEY,
         "templates": {"summary": "[{{ labels.env }}] {{ annotations.summary }}"}},
        {"name": "default-texts", "matchers": ['alertname=~".+"'], "routing_key": KEY}])
    client = app.test_client()
    example = Path(__file__).parents[1] / "examples"
    for path in (example / "alertmanager-firing.json", example / "alertmanager-resolved.json",
                 FIXTURES / "alertmanager_resolved_v4.json"):  # a resolve whose trigger the relay never saw
        assert client.post("/webhooks/alertmanager", data=path.read_bytes(),
                           content_type="application/json").status_code == 202
    orphan, resolved, trigger = items(client)["items"]
    assert (trigger["event_action"], resolved["event_action"]) == ("trigger", "resolve")
    assert resolved["summary"] == trigger["summary"] == "[prod] Replica is 95 s behind the primary"
    assert orphan["route"] == "default-texts" and orphan["summary"].startswith("Deployment: ")
    detail = client.get(f"/api/v1/log/{resolved['id']}").get_json()
    assert "payload" not in detail["event"]  # the event itself carries none: PagerDuty keeps the trigger's
    assert [i["id"] for i in items(client, q="behind the primary")["items"]] == [resolved["id"], trigger["id"]]


def test_a_follow_up_by_dedup_key_shows_its_triggers_summary(app, client, pd, routing_key):
    def job(path, **body):
        return client.post(path, json={"service_key": routing_key, **body}).get_json()["log_id"]

    job("/api/v1/incidents", title="First text", dedup_key="db-1")
    job("/api/v1/incidents", title="Disk full on db-1", dedup_key="db-1")
    acknowledged = job("/api/v1/incidents/db-1/acknowledge")
    resolved = job("/api/v1/incidents/db-1/resolve")
    orphan = job("/api/v1/incidents/never-triggered/resolve")
    other_key = client.post("/api/v1/incidents/db-1/resolve", json={"service_key": "b" * 32}).get_json()["log_id"]
    summaries = {i["id"]: i["summary"] for i in items(client)["items"]}
    assert summaries[acknowledged] == summaries[resolved] == "Disk full on db-1"  # the latest trigger before it
    assert summaries[orphan] is None and summaries[other_key] is None  # another routing key is another alert
    assert client.get(f"/api/v1/log/{resolved}").get_json()["summary"] == "Disk full on db-1"


def test_a_failed_row_says_why(app, client, pd, routing_key):
    pd.inject(400)
    log_id = client.post("/api/v1/incidents", json={"title": "Refused", "service_key": routing_key}) \
        .get_json()["log_id"]
    (item,) = items(client)["items"]
    assert item["id"] == log_id and item["status"] == "failed"
    assert item["reason"].startswith("HTTP 400: ") and item["reason"] == "HTTP 400: " + "; ".join(
        [item["pagerduty"]["message"], *item["pagerduty"]["errors"]])
    delivered = client.post("/api/v1/incidents", json={"title": "Taken", "service_key": routing_key}).get_json()
    assert client.get(f"/api/v1/log/{delivered['log_id']}").get_json()["reason"] is None


def test_a_resolves_summary_never_carries_a_key_from_a_label(make_app):
    app = make_app(DEFAULT_ROUTE=None, ROUTES=[
        {"name": "by-label", "routing_key_template": "{{ labels.pd_service_key }}", "continue": True},
        {"name": "infra", "matchers": ['alertname=~".+"'], "routing_key": KEY}])
    client = app.test_client()
    alert = {"status": "resolved", "labels": {"alertname": "DiskFull", "pd_service_key": LABEL_KEY},
             "annotations": {"summary": f"page {LABEL_KEY}"}, "startsAt": "2024-05-01T10:00:00Z",
             "endsAt": "2024-05-01T11:00:00Z"}
    answer = client.post("/webhooks/alertmanager", json={"version": "4", "status": "resolved", "alerts": [alert]})
    assert answer.status_code == 202
    with app.app_context():
        stored = db.session.scalars(sa.select(IncidentLog.summary).order_by(IncidentLog.id)).all()
    assert stored == ["DiskFull: page …3210", "DiskFull: page …3210"]  # masked before it was stored, on both routes
