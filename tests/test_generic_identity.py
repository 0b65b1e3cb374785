"""Generic alerts without labels: each summary is its own PagerDuty alert, and one nothing tells apart is refused
(issue 13, item 2), through the webhook to the PagerDuty simulator."""
import pytest

from tests.helpers import wait_until

KEY = "9e9e9e9e9e9e9e9e9e9e9e9e9e9e9e9e"
DEFAULT_ROUTE = {"name": "default", "routing_key": KEY}


def post(client, payload):
    return client.post("/webhooks/generic", json=payload)


def test_label_less_alerts_are_distinct_pagerduty_alerts_and_a_resolve_closes_its_own(delivering, pd):
    client = delivering(ROUTES=[], DEFAULT_ROUTE=DEFAULT_ROUTE).test_client()
    titles = ["Disk full on db1", "CPU hot on web3", "Queue stuck", "Certificate expires in 3 days"]
    first = post(client, [{"title": title, "severity": "critical"} for title in titles])
    assert first.status_code == 202, first.get_json()
    keys = [event["dedup_key"] for event in first.get_json()["events"]]
    assert len(set(keys)) == 4
    again = post(client, {"title": "Queue stuck"})  # the same alert firing again: no severity this time
    assert again.get_json()["events"][0]["dedup_key"] == keys[2]
    alerts = wait_until(lambda: (found := pd.alerts()) and sum(a["trigger_count"] for a in found) == 5 and found,
                        timeout=10, message="five triggers at PagerDuty")
    assert sorted(a["summary"] for a in alerts) == sorted(titles)
    assert {a["summary"]: a["trigger_count"] for a in alerts}["Queue stuck"] == 2

    resolved = post(client, {"title": "Disk full on db1", "status": "resolved"})
    event = resolved.get_json()["events"][0]
    assert (event["event_action"], event["dedup_key"]) == ("resolve", keys[0])
    wait_until(lambda: [a["summary"] for a in pd.alerts() if a["status"] == "resolved"] == ["Disk full on db1"],
               timeout=10, message="only the disk alert resolved")
    assert sum(a["status"] == "triggered" for a in pd.alerts()) == 3


@pytest.mark.parametrize("payload, where", [({}, "_schema"), ([{"title": "ok"}, {"host": "db1"}], "1")])
def test_an_alert_nothing_tells_apart_is_a_400_naming_where_the_relay_looked(make_app, payload, where):
    client = make_app(ROUTES=[], DEFAULT_ROUTE=DEFAULT_ROUTE).test_client()
    response = post(client, payload)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "invalid_input"
    (message,) = error["fields"][where]
    assert message == ("Nothing tells this alert apart from others: send labels (at labels), a dedup key (at "
                       "dedup_key, fingerprint) or a summary (at summary, title, message); GENERIC_WEBHOOK sets "
                       "where these are read.")


def test_the_400_names_the_paths_generic_webhook_configures(make_app):
    client = make_app(ROUTES=[], DEFAULT_ROUTE=DEFAULT_ROUTE,
                      GENERIC_WEBHOOK={"summary": "check.name", "labels": "tags", "dedup_key": None}).test_client()
    response = post(client, {"title": "not read here", "tags": {}})
    assert response.status_code == 400
    (message,) = response.get_json()["error"]["fields"]["_schema"]
    assert ("send labels (at tags), a dedup key (at no path: GENERIC_WEBHOOK turns it off) or a summary "
            "(at check.name)") in message
    assert post(client, {"check": {"name": "Disk full"}}).status_code == 202


def test_a_resolve_without_the_severity_closes_its_labelled_trigger(delivering, pd):
    client = delivering(ROUTES=[], DEFAULT_ROUTE=DEFAULT_ROUTE).test_client()
    labels = {"host": "db1", "check": "backup"}
    trigger = post(client, {"title": "Backup failed", "labels": labels, "severity": "critical"}).get_json()
    (fired,) = trigger["events"]
    wait_until(lambda: [a["status"] for a in pd.alerts()] == ["triggered"], timeout=10, message="the trigger sent")
    assert pd.alerts()[0]["severity"] == "critical"  # the severity path still sets the event's severity

    resolve = post(client, {"title": "Backup failed", "labels": labels, "status": "resolved"}).get_json()
    (resolved,) = resolve["events"]
    assert (resolved["event_action"], resolved["dedup_key"]) == ("resolve", fired["dedup_key"])
    wait_until(lambda: [a["status"] for a in pd.alerts()] == ["resolved"], timeout=10,
               message="the incident resolved")


def test_a_label_the_sender_sent_stays_part_of_the_identity(make_app):
    client = make_app(ROUTES=[], DEFAULT_ROUTE=DEFAULT_ROUTE).test_client()
    keys = [post(client, payload).get_json()["events"][0]["dedup_key"] for payload in (
        {"title": "Disk full", "labels": {"host": "db1", "severity": "critical"}},
        {"title": "Disk full", "labels": {"host": "db1", "severity": "warning"}},
        {"title": "Disk full", "labels": {"host": "db1"}, "severity": "warning"},
        {"title": "Disk full", "labels": {"host": "db1"}, "level": "info"},
    )]
    assert len({keys[0], keys[1], keys[2]}) == 3  # a severity among the labels is the sender's: it tells apart
    assert keys[2] == keys[3]  # one read by the severity path does not
