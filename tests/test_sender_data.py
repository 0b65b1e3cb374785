"""What senders give beyond alerts: PUT where a sender offers it, Alertmanager's routeLabels (matchers, templates,
details) and notification_reason, Grafana's enrichments; through the webhook to the simulator on both stores."""
import hashlib
import hmac
import json
import re
from pathlib import Path

import pytest

from relay.intake.alert import FIRING, Alert
from relay.intake.configure import describe
from relay.intake.matchers import MatcherError, parse_matcher, parse_matchers
from relay.intake.routing import load_routing
from relay.store.models import IncidentLog, db
from tests.helpers import wait_until

UPSTREAM = Path(__file__).parent / "fixtures" / "upstream"
OPS_KEY = "0b50b50b50b50b50b50b50b50b50b50b"
DEFAULT_KEY = "defa0000000000000000000000000f19"
REMOTE = {"REMOTE_ADDR": "203.0.113.9"}  # a sender from the network: credentials are checked
TOKEN = "grafana-put-token-5d1"
SECRET = "grafana-put-hmac-secret"
DEFAULT_ROUTE = {"name": "default", "routing_key": DEFAULT_KEY}


def body(name: str) -> bytes:
    return (UPSTREAM / name).read_bytes()


def send(client, source: str, data: bytes, method: str = "POST", **kwargs):
    return client.open(f"/webhooks/{source}", method=method, data=data, content_type="application/json", **kwargs)


def delivered(pd, count: int) -> list[dict]:
    """Wait for count events accepted by the simulator; return their bodies."""
    def enough():
        found = pd.accepted()
        return found if len(found) >= count else None
    return wait_until(enough, message=f"{count} events accepted")


def row_count(app) -> int:
    with app.app_context():
        count = db.session.query(IncidentLog).count()
        db.session.commit()
        return count


# --- PUT -------------------------------------------------------------------------------------------

def test_grafana_put_is_accepted_and_delivered(delivering, pd):
    client = delivering(DEFAULT_ROUTE=DEFAULT_ROUTE).test_client()
    # grafana/alerting's own test sends this body with PUT (its contact point's HTTP Method option).
    response = send(client, "grafana", body("grafana-alerting-max-alerts-truncated.json"), method="PUT")
    assert response.status_code == 202 and response.get_json()["accepted"] == 2
    events = delivered(pd, 2)
    assert {e["routing_key"] for e in events} == {DEFAULT_KEY}
    assert sorted(e["payload"]["custom_details"]["labels"]["lbl1"] for e in events) == ["val1", "val2"]


def test_generic_put_is_accepted(delivering, pd):
    client = delivering(DEFAULT_ROUTE=DEFAULT_ROUTE).test_client()
    response = send(client, "generic", json.dumps({"summary": "Backup failed", "severity": "P2"}).encode(),
                    method="PUT")
    assert response.status_code == 202
    (event,) = delivered(pd, 1)
    assert event["payload"]["summary"] == "Backup failed" and event["payload"]["severity"] == "error"


# What each webhook takes; Flask adds OPTIONS (answered by itself) to the Allow of every URL, webhooks or not.
TAKES = {"alertmanager": "POST", "pagerduty": "POST", "grafana": "POST or PUT", "generic": "POST or PUT"}


@pytest.mark.parametrize("source, method", [
    ("alertmanager", "PUT"),  # never sent: webhook_config has no method option
    ("alertmanager", "GET"), ("alertmanager", "DELETE"), ("pagerduty", "PUT"), ("grafana", "GET"),
    ("generic", "PATCH"),
])
def test_a_method_a_webhook_does_not_take_is_a_405_whose_allow_names_only_its_own(make_app, source, method):
    app = make_app(DEFAULT_ROUTE=DEFAULT_ROUTE)
    response = send(app.test_client(), source, body("am-alertmanager-route-labels.json"), method=method)
    assert response.status_code == 405
    assert sorted(response.headers["Allow"].split(", ")) == sorted([*TAKES[source].split(" or "), "OPTIONS"])
    assert response.get_json()["error"] == {"code": "method_not_allowed",
                                            "message": f"this URL takes {TAKES[source]}, not {method}"}
    assert row_count(app) == 0


def test_options_names_each_webhooks_own_methods(make_app):
    client = make_app(DEFAULT_ROUTE=DEFAULT_ROUTE).test_client()
    allowed = {source: sorted(client.options(f"/webhooks/{source}").headers["Allow"].split(", ")) for source in TAKES}
    assert allowed == {"alertmanager": ["OPTIONS", "POST"], "pagerduty": ["OPTIONS", "POST"],
                       "grafana": ["OPTIONS", "POST", "PUT"], "generic": ["OPTIONS", "POST", "PUT"]}


def test_a_put_is_authenticated_as_a_post_is(make_app, pd):
    app = make_app(DEFAULT_ROUTE=DEFAULT_ROUTE, WEBHOOK_AUTH={"grafana": {"hmac_secret": SECRET},
                                                              "generic": {"bearer_token": TOKEN}})
    client, data = app.test_client(), body("grafana-alerting-enrichments.json")
    signature = hmac.new(SECRET.encode(), data, hashlib.sha256).hexdigest()
    for method in ("POST", "PUT"):
        assert send(client, "grafana", data, method, environ_base=REMOTE).status_code == 401
        assert send(client, "grafana", data, method, environ_base=REMOTE,
                    headers={"X-Grafana-Alerting-Signature": "00" * 32}).status_code == 401
    assert send(client, "grafana", data, "PUT", environ_base=REMOTE,
                headers={"X-Grafana-Alerting-Signature": signature}).status_code == 202
    generic = json.dumps({"summary": "by PUT"}).encode()
    assert send(client, "generic", generic, "PUT", environ_base=REMOTE,
                headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert send(client, "generic", generic, "PUT", environ_base=REMOTE,
                headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 202
    assert row_count(app) == 3  # two Grafana alerts and the generic one; nothing from the refused requests


def test_bad_input_by_put_is_the_same_400(make_app):
    client = make_app(DEFAULT_ROUTE=DEFAULT_ROUTE).test_client()
    answers = [send(client, "grafana", b'{"version": "1", "alerts": [{"status": "up"}]}', method)
               for method in ("POST", "PUT")]
    assert [a.status_code for a in answers] == [400, 400] and answers[0].get_json() == answers[1].get_json()


def test_openapi_documents_put_where_it_is_taken(client):
    paths = client.get("/openapi.json").get_json()["paths"]
    assert set(paths["/webhooks/grafana"]) == set(paths["/webhooks/generic"]) == {"post", "put"}
    assert set(paths["/webhooks/alertmanager"]) == {"post"}
    assert paths["/webhooks/grafana"]["put"]["requestBody"] == paths["/webhooks/grafana"]["post"]["requestBody"]


# --- Alertmanager's route labels and notification reason ------------------------------------------

ROUTE_LABEL_ROUTES = [
    {"name": "ops", "matchers": ['route_labels.team="ops"'], "routing_key": OPS_KEY,
     "templates": {"summary": "[{{ route_labels.team }}/{{ route_labels.name }}] {{ labels.alertname }}"}},
]


def test_route_labels_route_template_and_show_with_the_notification_reason(delivering, pd):
    client = delivering(ROUTES=ROUTE_LABEL_ROUTES, DEFAULT_ROUTE=DEFAULT_ROUTE).test_client()
    response = send(client, "alertmanager", body("am-alertmanager-route-labels.json"))
    assert response.status_code == 202 and response.get_json()["events"][0]["route"] == "ops"
    (event,) = delivered(pd, 1)
    assert event["routing_key"] == OPS_KEY
    assert event["payload"]["summary"] == "[ops/test] test"
    details = event["payload"]["custom_details"]
    assert details["route_labels"] == {"name": "test", "team": "ops"}
    assert details["notification_reason"] == "first notification"


def test_an_alert_without_route_labels_matches_them_as_empty(delivering, pd):
    routes = [{"name": "no-team", "matchers": ['route_labels.team=""'], "routing_key": OPS_KEY}]
    client = delivering(ROUTES=[*ROUTE_LABEL_ROUTES, *routes], DEFAULT_ROUTE=None).test_client()
    response = send(client, "alertmanager", body("am-oncall-example-payload.json"))  # no routeLabels
    assert [e["route"] for e in response.get_json()["events"]] == ["no-team", "no-team"]
    assert all("route_labels" not in e["payload"]["custom_details"] for e in delivered(pd, 2))


def test_a_label_of_the_alert_is_not_a_route_label():
    routing = load_routing(ROUTE_LABEL_ROUTES, DEFAULT_ROUTE, environ={})
    assert [r.name for r in routing.routes_for(Alert("alertmanager", FIRING, labels={"team": "ops"}))] == ["default"]
    assert [r.name for r in routing.routes_for(Alert("alertmanager", FIRING, route_labels={"team": "ops"}))] == ["ops"]


@pytest.mark.parametrize("text, rendered", [
    ('route_labels.team="ops"', 'route_labels.team="ops"'),
    ("route_labels.team =~ op.*", 'route_labels.team=~"op.*"'),
    ('{route_labels.team!="db", team="db"}', None),
])
def test_route_label_matchers_parse_and_print_with_their_prefix(text, rendered):
    matchers = parse_matchers([text])
    if rendered:
        (matcher,) = matchers
        assert matcher.route_label and matcher.name == "team" and str(matcher) == rendered
        assert parse_matcher(str(matcher)) == matcher
    else:
        assert [(m.name, m.route_label) for m in matchers] == [("team", True), ("team", False)]


@pytest.mark.parametrize("text, reason", [
    ('route_label.team="ops"', "bad label name 'route_label.team' in matcher 'route_label.team=\"ops\"': must match "
                               "[a-zA-Z_][a-zA-Z0-9_]*; a route label is written route_labels.<name>"),
    ('route_labels.="ops"', "missing label name"),
    ('route_labels.1team="ops"', "bad label name '1team'"),
])
def test_bad_route_label_matchers_are_named(text, reason):
    with pytest.raises(MatcherError, match=re.escape(reason)):
        parse_matcher(text)


def test_check_config_shows_route_label_matchers():
    routing = load_routing(ROUTE_LABEL_ROUTES, None, environ={})
    assert describe(routing) == [f'ops: route_labels.team="ops" → key …{OPS_KEY[-4:]}, dedup alert']


# --- Grafana's enrichments ----------------------------------------------------------------------------

def test_grafana_enrichments_are_kept_per_alert(delivering, pd):
    client = delivering(DEFAULT_ROUTE=DEFAULT_ROUTE).test_client()
    assert send(client, "grafana", body("grafana-alerting-enrichments.json")).status_code == 202
    events = sorted(delivered(pd, 2), key=lambda e: e["payload"]["custom_details"]["labels"]["alertname"])
    assert [e["payload"]["custom_details"]["enrichments"] for e in events] == [
        {"customField": "customValue1", "priority": "high"}, {"customField": "customValue2", "priority": "medium"}]
    assert "notification_reason" not in events[0]["payload"]["custom_details"]  # Grafana sends none
