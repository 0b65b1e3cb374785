"""The drop-in PagerDuty endpoint: /v2/enqueue, the legacy v1 create_event.json and /v2/change/enqueue take what
PagerDuty takes, refuse what it refuses in its own shape, and deliver through the outbox to the simulator."""
import json
import logging
import re
import secrets

import pytest
import requests

from relay.intake.routing import ConfigError
from relay.startup.process import announce
from relay.startup.settings import Environment
from relay.store.models import IncidentLog, db
from tests.helpers import wait_until

REMOTE = {"REMOTE_ADDR": "203.0.113.9"}  # a caller from the network, not this machine
V1_PATH = "/generic/2010-04-15/create_event.json"
FAST_RECOVERY = {"RELAY_OUTAGE_PROBE_MAX_SECONDS": 0.3, "RELAY_RETRY_MAX_SECONDS": 0.3}
http = requests.Session()
http.trust_env = False


def key() -> str:
    """A fresh 32-character integration key."""
    return secrets.token_hex(16)


def trigger(routing_key: str, **extra) -> dict:
    """A complete Events API v2 trigger, every optional field set."""
    return {
        "routing_key": routing_key, "event_action": "trigger",
        "payload": {"summary": "Replica lag over 60 s on db-1", "source": "db-1.example", "severity": "warning",
                    "timestamp": "2026-12-07T08:00:00.000+00:00", "component": "postgres", "group": "prod-db",
                    "class": "replication", "custom_details": {"team": "db", "lag_seconds": 74,
                                                               "nested": {"replica": "db-2"}}},
        "images": [{"src": "https://graphs.example/lag.png", "href": "https://graphs.example/", "alt": "lag"}],
        "links": [{"href": "https://runbooks.example/lag", "text": "Runbook"}],
        "client": "Nagios", "client_url": "https://nagios.example/",
        **extra,
    }


def quoted_fields(errors: list[str]) -> set[str]:
    """The field names PagerDuty's error texts quote: 'payload.summary' and the like."""
    return {found for error in errors for found in re.findall(r"'([^']+)'", error)}


def rows(app) -> list[IncidentLog]:
    with app.app_context():
        found = db.session.query(IncidentLog).order_by(IncidentLog.id).all()
        db.session.expunge_all()
        db.session.commit()
        return found


def delivered(app, count: int) -> list[IncidentLog]:
    return wait_until(lambda: (found := rows(app)) and len(found) == count
                      and all(row.status == "delivered" for row in found) and found,
                      message=f"{count} rows delivered")


# Each rule of PagerDuty's Events API v2 (01-Overview.md, 02-Trigger-Events.md): the event, and the fields its
# 400 names. The simulator, which validates as PagerDuty does, must refuse the same event for the same fields.
GOOD = trigger("0" * 32)
INVALID_EVENTS = {
    "no routing_key": ({k: v for k, v in GOOD.items() if k != "routing_key"}, {"routing_key"}),
    "short routing_key": ({**GOOD, "routing_key": "0" * 31}, {"routing_key"}),
    "no event_action": ({k: v for k, v in GOOD.items() if k != "event_action"}, {"event_action"}),
    "capitalised event_action": ({**GOOD, "event_action": "Trigger"}, {"event_action"}),
    "trigger without payload": ({k: v for k, v in GOOD.items() if k != "payload"}, {"payload"}),
    "no summary": ({**GOOD, "payload": {"source": "x", "severity": "info"}}, {"payload.summary"}),
    "blank summary": ({**GOOD, "payload": {**GOOD["payload"], "summary": "   "}}, {"payload.summary"}),
    "summary over 1024": ({**GOOD, "payload": {**GOOD["payload"], "summary": "x" * 1025}}, {"payload.summary"}),
    "no source": ({**GOOD, "payload": {"summary": "x", "severity": "info"}}, {"payload.source"}),
    "no severity": ({**GOOD, "payload": {"summary": "x", "source": "y"}}, {"payload.severity"}),
    "upper-case severity": ({**GOOD, "payload": {**GOOD["payload"], "severity": "CRITICAL"}}, {"payload.severity"}),
    "bad timestamp": ({**GOOD, "payload": {**GOOD["payload"], "timestamp": "yesterday"}}, {"payload.timestamp"}),
    "custom_details not an object": ({**GOOD, "payload": {**GOOD["payload"], "custom_details": "text"}},
                                     {"payload.custom_details"}),
    "resolve without dedup_key": ({"routing_key": "0" * 32, "event_action": "resolve"}, {"dedup_key"}),
    "acknowledge without dedup_key": ({"routing_key": "0" * 32, "event_action": "acknowledge"}, {"dedup_key"}),
    "dedup_key over 255": ({**GOOD, "dedup_key": "k" * 256}, {"dedup_key"}),
    "http image": ({**GOOD, "images": [{"src": "http://graphs.example/lag.png"}]}, {"images[0].src"}),
    "link without href": ({**GOOD, "links": [{"text": "Runbook"}]}, {"links[0].href"}),
    "links not an array": ({**GOOD, "links": {"href": "https://x.example"}}, {"links"}),
}


@pytest.mark.parametrize("name", list(INVALID_EVENTS))
def test_refuses_what_pagerduty_refuses_in_its_shape(make_app, pd, name):
    event, fields = INVALID_EVENTS[name]
    app = make_app()
    answer = app.test_client().post("/v2/enqueue", json=event)
    assert answer.status_code == 400
    body = answer.get_json()
    assert body["status"] == "invalid event" and body["message"] == "Event object is invalid"
    assert quoted_fields(body["errors"]) == fields, body["errors"]
    assert "0" * 31 not in json.dumps(body)  # never a key, not even a wrong one
    pagerduty = http.post(pd.events_url, json=event, timeout=5)
    assert pagerduty.status_code == 400 and quoted_fields(pagerduty.json()["errors"]) == fields
    assert rows(app) == []


def test_refuses_an_event_over_512_kb_and_a_body_that_is_no_object(make_app, pd):
    """Over 512 KiB PagerDuty refuses an event; a little less is taken and fitted under the relay's bound."""
    client = make_app().test_client()
    huge = trigger(key(), payload={**GOOD["payload"], "custom_details": {"blob": "x" * 530_000}})
    answer = client.post("/v2/enqueue", json=huge)
    assert answer.status_code == 400 and quoted_fields(answer.get_json()["errors"]) == {"event"}
    assert http.post(pd.events_url, json=huge, timeout=5).status_code == 400
    # Under PagerDuty's limit but over the relay's safe reading of it: taken, and fitted rather than refused.
    heavy = trigger(key(), payload={**GOOD["payload"], "custom_details": {"blob": "x" * 515_000}})
    assert client.post("/v2/enqueue", json=heavy).status_code == 202
    answer = client.post("/v2/enqueue", json=[GOOD])
    assert answer.status_code == 400 and answer.get_json()["status"] == "invalid event"
    answer = client.post("/v2/enqueue", data="routing_key=x", content_type="application/x-www-form-urlencoded")
    assert answer.status_code == 415 and answer.get_json()["errors"]


def test_an_event_sent_to_a_webhook_is_told_where_it_belongs(make_app):
    answer = make_app().test_client().post("/webhooks/alertmanager", json=trigger(key()))
    assert answer.status_code == 400
    assert "looks meant for /webhooks/pagerduty" in answer.get_json()["error"]["message"]


def test_a_trigger_reaches_pagerduty_as_sent_with_the_dedup_key_answered(client, app, pd):
    routing_key = key()
    event = trigger(routing_key)
    answer = client.post("/v2/enqueue", json=event)
    assert answer.status_code == 202
    body = answer.get_json()
    assert body["status"] == "success" and body["message"] == "Event processed"
    assert re.fullmatch(r"[0-9a-f]{32}", body["dedup_key"])
    [row] = delivered(app, 1)
    assert row.route == "proxy" and row.source == "pagerduty"
    assert pd.accepted() == [{**event, "dedup_key": body["dedup_key"]}]


def test_follow_ups_keep_the_senders_dedup_key_in_order(client, app, pd):
    """A follow-up keeps its key; what PagerDuty ignores on it (a null payload, as Alertmanager sends) is dropped."""
    routing_key = key()
    answers = [client.post("/v2/enqueue", json=trigger(routing_key, dedup_key="db-1/lag")),
               client.post("/v2/enqueue", json={"routing_key": routing_key, "event_action": "acknowledge",
                                                "dedup_key": "db-1/lag"}),
               client.post("/v2/enqueue", json={"routing_key": routing_key, "event_action": "resolve",
                                                "dedup_key": "db-1/lag", "payload": None, "links": None})]
    assert [a.status_code for a in answers] == [202] * 3
    assert {a.get_json()["dedup_key"] for a in answers} == {"db-1/lag"}
    delivered(app, 3)
    assert [e["event_action"] for e in pd.accepted()] == ["trigger", "acknowledge", "resolve"]
    assert pd.accepted()[2] == {"routing_key": routing_key, "event_action": "resolve", "dedup_key": "db-1/lag"}
    [alert] = pd.alerts()
    assert alert["status"] == "resolved" and alert["dedup_key"] == "db-1/lag"


def test_the_senders_routing_key_is_never_shown(client, app, pd, caplog):
    routing_key = key()
    answer = client.post("/v2/enqueue", json=trigger(routing_key, dedup_key="shown"))
    delivered(app, 1)
    shown = [answer.get_data(as_text=True), client.get("/api/v1/log").get_data(as_text=True),
             client.get(f"/api/v1/log/{rows(app)[0].id}").get_data(as_text=True), client.get("/").get_data(as_text=True),
             caplog.text]
    assert all(routing_key not in text for text in shown)
    stored = client.get(f"/api/v1/log/{rows(app)[0].id}").get_json()["alert"]
    assert stored["labels"]["routing_key"] == "…" + routing_key[-4:]  # the label, masked
    assert pd.accepted()[0]["routing_key"] == routing_key


def test_v1_events_are_translated_to_v2(client, app, pd):
    routing_key = key()
    v1 = {"service_key": routing_key, "event_type": "trigger", "incident_key": "srv-9/disk",
          "description": "Disk 95% on srv-9", "client": "Zabbix", "client_url": "https://zabbix.example/",
          "details": {"free": "5%"}, "contexts": [{"type": "link", "href": "https://zabbix.example/9", "text": "srv-9"},
                                                 {"type": "image", "src": "https://zabbix.example/9.png"}]}
    answer = client.post(V1_PATH, json=v1)
    assert answer.status_code == 200
    assert answer.get_json() == {"status": "success", "message": "Event processed", "incident_key": "srv-9/disk"}
    delivered(app, 1)  # a resolve stored while its trigger is unsent would supersede both (nothing to page)
    resolved = client.post(V1_PATH, json={"service_key": routing_key, "event_type": "resolve",
                                          "incident_key": "srv-9/disk"})
    assert resolved.status_code == 200
    delivered(app, 2)
    sent, resolve = pd.accepted()
    assert sent == {"routing_key": routing_key, "event_action": "trigger", "dedup_key": "srv-9/disk",
                    "payload": {"summary": "Disk 95% on srv-9", "source": "Zabbix", "severity": "error",
                                "custom_details": {"free": "5%"}},
                    "client": "Zabbix", "client_url": "https://zabbix.example/",
                    "links": [{"href": "https://zabbix.example/9", "text": "srv-9"}],
                    "images": [{"src": "https://zabbix.example/9.png"}]}
    assert resolve == {"routing_key": routing_key, "event_action": "resolve", "dedup_key": "srv-9/disk"}


def test_v1_errors_name_the_v1_fields(make_app):
    client = make_app().test_client()
    answer = client.post(V1_PATH, json={"event_type": "resolve"})
    assert answer.status_code == 400 and answer.get_json()["status"] == "invalid event"
    assert quoted_fields(answer.get_json()["errors"]) == {"service_key", "incident_key"}
    answer = client.post(V1_PATH, json={"service_key": key(), "event_type": "trigger"})
    assert quoted_fields(answer.get_json()["errors"]) == {"description"}


def test_routes_re_key_re_map_severity_and_fan_out(delivering, pd):
    sender, database, audit = key(), key(), key()
    app = delivering(ROUTES=[
        {"name": "db", "matchers": ['team="db"'], "routing_key": database, "severity_map": {"warning": "critical"},
         "continue": True},
        {"name": "audit", "matchers": [f'routing_key="{sender}"'], "routing_key": audit},
    ], DEFAULT_ROUTE={"name": "default", "routing_key": key()})
    client = app.test_client()
    answer = client.post("/v2/enqueue", json=trigger(sender))
    assert answer.status_code == 202
    other = key()
    not_db = trigger(other, dedup_key="own", payload={**GOOD["payload"], "custom_details": {"team": "web"}})
    assert client.post("/v2/enqueue", json=not_db).status_code == 202  # no route takes it: the proxy
    delivered(app, 3)
    by_key = {event["routing_key"]: event for event in pd.accepted()}
    assert set(by_key) == {database, audit, other}  # the sender's own key never reaches PagerDuty, nor the default
    assert by_key[database]["payload"]["severity"] == "critical" and by_key[audit]["payload"]["severity"] == "warning"
    assert by_key[database]["dedup_key"] == by_key[audit]["dedup_key"] == answer.get_json()["dedup_key"]
    assert by_key[database]["payload"]["summary"] == trigger(sender)["payload"]["summary"]
    assert [row.route for row in rows(app)] == ["db", "audit", "proxy"]

    # The resolve carries no payload, yet takes the routes its trigger took: the same two keys, not the sender's.
    resolve = {"routing_key": sender, "event_action": "resolve", "dedup_key": answer.get_json()["dedup_key"]}
    assert client.post("/v2/enqueue", json=resolve).status_code == 202
    delivered(app, 5)
    resolves = [event for event in pd.accepted() if event["event_action"] == "resolve"]
    assert sorted(event["routing_key"] for event in resolves) == sorted([database, audit])
    assert {alert["status"] for alert in pd.alerts() if alert["routing_key"] in (database, audit)} == {"resolved"}


@pytest.mark.parametrize("path, body", [
    ("/v2/enqueue", lambda routing_key: trigger(routing_key)),
    ("/v2/change/enqueue", lambda routing_key: {"routing_key": routing_key, "payload": {"summary": "deploy"}}),
])
def test_the_allow_list_admits_listed_keys_from_anywhere_and_refuses_others(make_app, path, body):
    allowed = key()
    client = make_app(PAGERDUTY_WEBHOOK={"routing_keys": [allowed]}).test_client()
    assert client.post(path, json=body(allowed), environ_base=REMOTE).status_code == 202
    refused = client.post(path, json=body(key()), environ_base=REMOTE)
    assert refused.status_code == 403
    assert refused.get_json()["status"] == "forbidden" and refused.get_json()["errors"]
    assert allowed not in refused.get_data(as_text=True)


def test_a_v1_event_outside_the_allow_list_is_told_so_in_v1_words(make_app):
    client = make_app(PAGERDUTY_WEBHOOK={"routing_keys": [key()]}).test_client()
    refused = client.post(V1_PATH, json={"service_key": key(), "event_type": "trigger", "description": "disk full"},
                          environ_base=REMOTE)
    assert refused.status_code == 403
    assert refused.get_json()["errors"] == [
        "'service_key' is not one this relay accepts (RELAY_PAGERDUTY_ROUTING_KEYS)"]


def test_an_allow_list_entry_that_is_no_routing_key_stops_start_up_without_echoing_it(make_app):
    typo = key()[:31]  # one character lost in copying: it would refuse every event
    with pytest.raises(ConfigError) as refused:
        make_app(PAGERDUTY_WEBHOOK={"routing_keys": [key(), typo]})
    assert str(refused.value) == ("PAGERDUTY_WEBHOOK: routing_keys: 1: not a routing key: a PagerDuty routing key "
                                  "has 32 characters (RELAY_PAGERDUTY_ROUTING_KEYS, counted from 0)")
    assert typo not in str(refused.value)


def test_the_start_up_line_counts_the_allow_list_as_the_endpoints_credential(make_app, caplog):
    app = make_app(PAGERDUTY_WEBHOOK={"routing_keys": [key()]})
    with caplog.at_level(logging.INFO, logger="relay.startup"):
        announce(app)
    (started,) = [record for record in caplog.records if "starting" in record.getMessage()]
    assert started.getMessage().endswith("webhook credentials for pagerduty")
    assert not [record for record in caplog.records if "webhooks for pagerduty" in record.getMessage()]


def test_drop_in_requests_are_counted_as_the_pagerduty_sources_webhooks(make_app):
    client = make_app().test_client()

    def counted(outcome):
        found = re.search(rf'relay_webhooks_received_total{{outcome="{outcome}",source="pagerduty"}} (\S+)',
                          client.get("/metrics").get_data(as_text=True))
        return float(found[1]) if found else 0.0

    before = counted("accepted"), counted("invalid")
    assert client.post("/v2/enqueue", json=trigger(key())).status_code == 202
    assert client.post("/v2/enqueue", json={"event_action": "trigger"}).status_code == 400
    assert (counted("accepted"), counted("invalid")) == (before[0] + 1, before[1] + 1)


def test_the_allow_list_is_read_from_the_environment():
    assert Environment({"RELAY_PAGERDUTY_ROUTING_KEYS": " a1, b2 c3,"}).words("RELAY_PAGERDUTY_ROUTING_KEYS") == [
        "a1", "b2", "c3"]
    assert Environment({}).words("RELAY_PAGERDUTY_ROUTING_KEYS") == []


def test_credentials_guard_the_endpoint_like_the_other_sources(make_app):
    open_app = make_app().test_client()
    refused = open_app.post("/v2/enqueue", json=trigger(key()), environ_base=REMOTE)
    assert refused.status_code == 403 and refused.get_json()["status"] == "forbidden"  # loopback only
    secured = make_app(WEBHOOK_AUTH={"pagerduty": {"bearer_token": "pd-token"}}).test_client()
    assert secured.post("/v2/enqueue", json=trigger(key()), environ_base=REMOTE).status_code == 401
    assert secured.post("/v2/enqueue", json=trigger(key()), environ_base=REMOTE,
                        headers={"Authorization": "Bearer pd-token"}).status_code == 202


def test_change_events_reach_the_change_endpoint_beside_alert_events(client, app, pd):
    routing_key = key()
    change = {"routing_key": routing_key, "links": [{"href": "https://ci.example/build/7", "text": "build 7"}],
              "payload": {"summary": "Deployed api v2.3", "source": "ci", "timestamp": "2026-12-07T08:00:00Z",
                          "custom_details": {"commit": "abc123"}}}
    answer = client.post("/v2/change/enqueue", json=change)
    assert answer.status_code == 202
    assert answer.get_json() == {"status": "success", "message": "Change event processed"}
    assert client.post("/v2/enqueue", json=trigger(routing_key)).status_code == 202
    change_row, alert_row = delivered(app, 2)
    assert change_row.event_action == "change" and change_row.dedup_key is None
    assert change_row.events_url == pd.url + "/v2/change/enqueue" and alert_row.events_url == pd.events_url
    [received] = [record for record in pd.received() if record["path"] == "/v2/change/enqueue"]
    assert received["status"] == 202 and received["body"] == change
    assert pd.alerts()[0]["routing_key"] == routing_key  # the change event opened nothing; the trigger did
    shown = client.get(f"/api/v1/log/{change_row.id}").get_json()
    assert shown["event_action"] == "change" and shown["status"] == "delivered"
    page = client.get("/")
    assert page.status_code == 200 and "Deployed api v2.3" in page.get_data(as_text=True)


def test_change_events_are_checked_by_pagerdutys_rules(make_app, pd):
    app = make_app()
    answer = app.test_client().post("/v2/change/enqueue", json={"routing_key": key(), "payload": {"source": "ci"}})
    assert answer.status_code == 400 and answer.get_json()["status"] == "invalid event"
    assert quoted_fields(answer.get_json()["errors"]) == {"payload.summary"}
    pagerduty = http.post(pd.url + "/v2/change/enqueue", json={"routing_key": key(), "payload": {"source": "ci"}},
                          timeout=5)
    assert pagerduty.status_code == 400 and quoted_fields(pagerduty.json()["errors"]) == {"payload.summary"}
    assert rows(app) == []


def test_pagerduty_down_loses_nothing(delivering, pd):
    app = delivering(**FAST_RECOVERY)
    pd.set_outage("503")
    routing_key = key()
    answer = app.test_client().post("/v2/enqueue", json=trigger(routing_key, dedup_key="during-outage"))
    assert answer.status_code == 202
    wait_until(lambda: any(r["outcome"] == "injected-fault" for r in pd.received()), message="a refused attempt")
    assert rows(app)[0].status in ("pending", "retrying")
    pd.set_outage(None)
    delivered(app, 1)
    assert pd.accepted() == [{**trigger(routing_key), "dedup_key": "during-outage"}]


def test_the_change_events_url_follows_the_events_url_unless_set(make_app):
    app = make_app(PAGERDUTY_EVENTS_URL="https://events.eu.pagerduty.com/v2/enqueue")
    assert app.config["PAGERDUTY_CHANGE_EVENTS_URL"] == "https://events.eu.pagerduty.com/v2/change/enqueue"
    app = make_app(PAGERDUTY_CHANGE_EVENTS_URL="https://changes.example/v2/change/enqueue")
    assert app.config["PAGERDUTY_CHANGE_EVENTS_URL"] == "https://changes.example/v2/change/enqueue"
    with pytest.raises(ConfigError, match="PAGERDUTY_CHANGE_EVENTS_URL"):
        make_app(PAGERDUTY_CHANGE_EVENTS_URL="changes.example")
    with pytest.raises(ConfigError, match="PAGERDUTY_WEBHOOK"):
        make_app(PAGERDUTY_WEBHOOK={"routing_key": ["x"]})
