"""What a page says: default texts that name the rule, the place or the labels that tell alerts apart, the sender's
host as source; Grafana test notifications; notifications their sender truncated."""
import json
import logging
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.intake.alert import FIRING, Alert, Link
from relay.intake.mapping import plan
from relay.intake.render import DEFAULTS, alert_context, render_macros
from relay.intake.routing import ConfigError, load_route, load_routing
from relay.intake.sources import get_source
from relay.pagerduty.event import SUMMARY_MAX
from relay.store.models import IncidentLog, db
from tests.helpers import wait_until
from tests.test_metrics import delta, scrape

KEY = "0123456789abcdef0123456789abcdef"
UPSTREAM_TEST = Path(__file__).parent / "upstream" / "grafana-pytorch-test-notification.json"


def routing(**options):
    return load_routing([], {"name": "default", "routing_key": KEY, **options}, environ={})


def pages(source: str, payload: dict, **options) -> list[dict]:
    """The events a payload makes on a default route with these options."""
    return [item.event for item in plan(get_source(source).to_alerts(payload), routing(**options))]


def payloads(*events) -> list[dict]:
    return [event["payload"] for event in events]


def alert(labels: dict, annotations: dict | None = None, status="firing", **fields) -> dict:
    return {"status": status, "labels": labels, "annotations": annotations or {},
            "startsAt": "2026-11-26T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z", **fields}


def notification(*alerts, version="4", external_url="http://am.example.com:9093/am", **fields) -> dict:
    return {"version": version, "groupKey": "{}:{}", "status": "firing", "receiver": "relay",
            "externalURL": external_url, "alerts": list(alerts), **fields}


def grafana_test_notification() -> dict:
    return json.loads(UPSTREAM_TEST.read_bytes())


# --- the rule, the place, the text --------------------------------------------------------------------------------

def test_grafana_no_data_and_error_alerts_name_their_rule_and_say_what_failed():
    body = notification(
        alert({"alertname": "DatasourceNoData", "rulename": "Queue depth", "datasource_uid": "prom"},
              {"summary": "Orders queue is backing up"}),
        alert({"alertname": "DatasourceError", "rulename": "API down"}, {"summary": "The API is down"}),
        version="1")
    summaries = [payload["summary"] for payload in payloads(*pages("grafana", body))]
    assert summaries == ["Queue depth: no data (datasource prom) — rule checks: Orders queue is backing up",
                         "API down: query failed — rule checks: The API is down"]


def test_alerts_of_one_notification_are_told_apart_by_the_labels_that_differ():
    body = notification(alert({"alertname": "test", "lbl": "v1", "team": "db"}),
                        alert({"alertname": "test", "lbl": "v2", "team": "db"}),
                        alert({"alertname": "test", "team": "db"}, {"summary": "no lbl"}))
    assert [payload["summary"] for payload in payloads(*pages("alertmanager", body))] == [
        "test (lbl=v1)", "test (lbl=v2)", "test: no lbl"]


def test_a_place_label_comes_before_the_differing_labels_and_is_not_repeated():
    body = notification(alert({"alertname": "Down", "instance": "db1:9100", "zone": "a"}, {"summary": "db1:9100 down"}),
                        alert({"alertname": "Down", "instance": "db2:9100", "zone": "b"}))
    assert [payload["summary"] for payload in payloads(*pages("alertmanager", body))] == [
        "Down: db1:9100 down", "Down (db2:9100)"]


def test_a_lone_alert_without_a_name_or_text_names_its_labels():
    (event,) = pages("alertmanager", notification(alert({"b": "2", "a": "1", "c": "3", "d": "4"})))
    assert event["payload"]["summary"] == "Alert (a=1, b=2, c=3)"


@pytest.mark.parametrize("labels, external_url, source", [
    ({"alertname": "A", "hostname": "db1"}, "http://am:9093", "db1"),
    ({"alertname": "A", "node": "k8s-node-1", "job": "kubelet"}, "http://am:9093", "k8s-node-1"),
    ({"alertname": "A", "job": "node"}, "https://am.example.com:9093/alertmanager?x=1", "am.example.com"),
    ({"alertname": "A"}, "ops1:9093", "ops1"),  # a sender that leaves out the scheme
])
def test_the_source_is_the_place_or_the_senders_host_never_a_url(labels, external_url, source):
    (event,) = pages("alertmanager", notification(alert(labels), external_url=external_url))
    assert event["payload"]["source"] == source


_URLS = st.one_of(st.none(), st.text(max_size=12), st.sampled_from(
    ["http://am:9093", "https://grafana.example.com/grafana/", "http://[::1]:9093/", "http://user:pw@am/x?y=1",
     "ops1:9093", "my.prometheusalertmanager.url", "http://", "mailto:x@example.com"]))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["alertname", "job", "team", "cluster"]), st.text(max_size=6), max_size=3),
       _URLS, _URLS)
def test_a_source_from_the_senders_urls_is_never_a_url(labels, external_url, generator_url):
    links = [Link(generator_url, "Source")] if generator_url else []
    alert = Alert(source="alertmanager", status=FIRING, labels=labels, external_url=external_url, links=links)
    source = render_macros(DEFAULTS, alert_context(alert))["source"]
    assert source and "/" not in source and "@" not in source


def test_without_an_external_url_the_source_is_the_host_of_the_rules_link():
    body = notification(alert({"alertname": "A"}, generatorURL="http://prometheus.example.com:9090/graph?g0.expr=up"),
                        external_url="")
    (event,) = pages("alertmanager", body)
    assert event["payload"]["source"] == "prometheus.example.com"


def test_group_and_component_come_from_the_usual_labels():
    body = notification(alert({"alertname": "A", "grafana_folder": "Payments", "container": "api"}),
                        alert({"alertname": "B", "namespace": "shop", "cluster": "eu", "service": "cart", "job": "x"}),
                        version="1")
    assert [(payload.get("group"), payload.get("component")) for payload in payloads(*pages("grafana", body))] == [
        ("Payments", "api"), ("shop", "cart")]


def test_a_routes_own_summary_template_still_wins():
    body = notification(alert({"alertname": "DatasourceNoData", "rulename": "Queue depth"}), version="1")
    (event,) = pages("grafana", body, templates={"summary": "{{ labels.rulename }} ({{ sender_host }})"})
    assert event["payload"]["summary"] == "Queue depth (am.example.com)"


# --- Grafana test notifications ----------------------------------------------------------------------------------

def test_a_grafana_test_notification_pages_at_info_and_is_resolved_later():
    trigger, resolve = plan(get_source("grafana").to_alerts(grafana_test_notification()), routing())
    assert trigger.event["payload"]["severity"] == "info" and "test" in trigger.event["payload"]["summary"].lower()
    assert (resolve.event["event_action"], resolve.event["dedup_key"], resolve.delay_seconds) == \
        ("resolve", trigger.event["dedup_key"], 300)
    assert trigger.delay_seconds == 0
    # The same labels from Alertmanager are an alert like any other: only Grafana's test button makes a test.
    (event,) = pages("alertmanager", notification(alert({"alertname": "TestAlert", "instance": "Grafana"})))
    assert event["payload"]["severity"] == "error"


def test_a_test_notification_says_test_whatever_the_route_template_says():
    events = pages("grafana", grafana_test_notification(), templates={"summary": "{{ labels.instance }} alert"},
                   test_resolve_after_seconds=60, dedup="group")
    assert [event["event_action"] for event in events] == ["trigger", "resolve"]
    assert events[0]["payload"]["summary"] == "[test] Grafana alert"


def test_a_route_may_drop_test_notifications(caplog):
    caplog.set_level(logging.INFO, logger="relay.intake.mapping")
    assert pages("grafana", grafana_test_notification(), test_notifications="drop") == []
    assert "test notification not sent: route 'default' drops them" in caplog.text


@pytest.mark.parametrize("option, value, message", [
    ("test_notifications", "ignore", "Must be one of: send, drop."),
    ("test_resolve_after_seconds", -1, "greater than or equal to 0"),
    ("test_resolve_after_seconds", "300", "Not a valid integer."),
])
def test_test_notification_options_are_checked(option, value, message):
    with pytest.raises(ConfigError, match=f"route 'r', field '{option}': .*{message}"):
        load_route({"name": "r", "routing_key": KEY, option: value})


def test_each_press_of_the_test_button_is_its_own_incident():
    first, second = grafana_test_notification(), grafana_test_notification()
    second["groupKey"] = first["groupKey"][:-2] + "99"  # pressed again, a few seconds later
    keys = [event["dedup_key"] for body in (first, second) for event in pages("grafana", body)]
    assert keys[0] == keys[1] != keys[2] == keys[3]


def test_the_test_resolve_is_stored_at_once_and_due_later(make_app):
    app = make_app(ROUTES=[], DEFAULT_ROUTE={"name": "default", "routing_key": KEY})
    response = app.test_client().post("/webhooks/grafana", json=grafana_test_notification())
    assert [(event["event_action"], event.get("send_after_seconds")) for event in response.get_json()["events"]] == \
        [("trigger", None), ("resolve", 300)]
    with app.app_context():
        trigger, resolve = db.session.query(IncidentLog).order_by(IncidentLog.id).all()
        assert resolve.next_attempt_at - trigger.next_attempt_at >= timedelta(seconds=299)


def test_the_test_incident_is_resolved_after_the_routes_delay(delivering, pd, routing_key):
    app = delivering(ROUTES=[], DEFAULT_ROUTE={"name": "default", "routing_key": routing_key,
                                               "test_resolve_after_seconds": 1})
    assert app.test_client().post("/webhooks/grafana", json=grafana_test_notification()).status_code == 202
    wait_until(lambda: len(pd.received()) == 2, message="the trigger and its resolve")
    trigger, resolve = pd.received()
    assert [trigger["body"]["event_action"], resolve["body"]["event_action"]] == ["trigger", "resolve"]
    assert trigger["body"]["payload"]["severity"] == "info"
    assert resolve["body"]["dedup_key"] == trigger["body"]["dedup_key"]
    assert pd.alerts()[0]["status"] == "resolved"


# --- truncated notifications -------------------------------------------------------------------------------------

def test_the_summary_notes_the_alerts_the_sender_left_out():
    body = notification(alert({"alertname": "A"}, {"summary": "x" * 2000}), alert({"alertname": "B"}),
                        truncatedAlerts=3)
    first, second = payloads(*pages("alertmanager", body))
    note = " (+3 more not sent by Prometheus Alertmanager: raise max_alerts)"
    assert first["summary"].endswith("x…" + note) and len(first["summary"]) == SUMMARY_MAX
    assert second["summary"] == "B" + note


def test_a_truncated_notification_is_logged_once_and_counted(make_app, caplog):
    app = make_app(ROUTES=[], DEFAULT_ROUTE={"name": "default", "routing_key": KEY})
    client = app.test_client()
    before = scrape(client)
    body = notification(alert({"alertname": "A"}), alert({"alertname": "B"}), truncatedAlerts=3)
    with caplog.at_level(logging.WARNING, logger="relay.accept"):
        assert client.post("/webhooks/alertmanager", json=body).status_code == 202
        assert client.post("/webhooks/alertmanager", json={**body, "truncatedAlerts": 0}).status_code == 202
    (record,) = [r for r in caplog.records if "truncated" in r.getMessage()]
    assert (record.source, record.truncated_alerts) == ("alertmanager", 3)
    assert delta(before, scrape(client), "relay_alerts_truncated_total", source="alertmanager") == 3
