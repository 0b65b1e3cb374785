"""POST /webhooks/<source>, the preview endpoint and commands, and check-config, on both stores."""
import hashlib
import hmac
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from werkzeug.exceptions import RequestEntityTooLarge

from relay.intake.routing import ConfigError, load_routing
from relay.startup.process import BAD_CONFIGURATION
from relay.store.models import IncidentLog, db
from tests.helpers import fixture, wait_until

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).parent.parent
DB_KEY = "d0d0d0d0d0d0d0d0d0d0d0d0d0d0d1b1"
BLUE_KEY = "b1b1b1b1b1b1b1b1b1b1b1b1b1b1bb1e"
LABEL_KEY = "1a1a1a1a1a1a1a1a1a1a1a1a1a1a1abe"
DEFAULT_KEY = "defa0000000000000000000000000f17"
ALL_KEYS = (DB_KEY, BLUE_KEY, LABEL_KEY, DEFAULT_KEY)
ROUTES = [
    {"name": "db", "matchers": ['service="db"'], "routing_key": DB_KEY, "severity_map": {"page": "critical"}},
    {"name": "blue", "matchers": ['team="blue"'], "routing_key_env": "RELAY_TEST_BLUE_KEY"},
    {"name": "by-label", "matchers": ['pd_key!=""'], "routing_key_template": "{{ labels.pd_key }}"},
]
DEFAULT_ROUTE = {"name": "default", "routing_key": DEFAULT_KEY}



def masked(key: str) -> str:
    return "…" + key[-4:]


@pytest.fixture
def relay(make_app, monkeypatch):
    """An app with team routes, a route keyed by a label, and a default route."""
    monkeypatch.setenv("RELAY_TEST_BLUE_KEY", BLUE_KEY)
    return make_app(ROUTES=ROUTES, DEFAULT_ROUTE=DEFAULT_ROUTE)


@pytest.fixture
def http(relay):
    return relay.test_client()


@pytest.fixture
def unrouted_app(make_app):
    """An app with one route and no default: everything else is unrouted."""
    return make_app(ROUTES=[ROUTES[0]], DEFAULT_ROUTE=None)


def log_rows(app) -> list[dict]:
    """Every incident_log row, oldest first, as plain data."""
    with app.app_context():
        return [{"id": r.id, "source": r.source, "route": r.route, "status": r.status, "event": r.event,
                 "event_action": r.event_action, "dedup_key": r.dedup_key, "alert": r.alert, "error": r.error,
                 "routing_key": r.routing_key, "routing_key_masked": r.routing_key_masked, "summary": r.summary,
                 "superseded_by": r.superseded_by}
                for r in db.session.query(IncidentLog).order_by(IncidentLog.id)]


def post(client, source: str, payload, **kwargs):
    if isinstance(payload, (dict, list)):
        return client.post(f"/webhooks/{source}", json=payload, **kwargs)
    return client.post(f"/webhooks/{source}", data=payload, content_type="application/json", **kwargs)


def assert_no_key(response):
    """No routing key, of any route, in the body."""
    text = response.get_data(as_text=True)
    for key in ALL_KEYS:
        assert key not in text


# --- fixtures through the webhook ------------------------------------------------------------------

@pytest.mark.parametrize("source, name, expected", [
    ("alertmanager", "alertmanager_0.25_firing_captured.json", [("db", "trigger", DB_KEY)]),
    ("alertmanager", "alertmanager_0.25_resolved_captured.json", [("db", "resolve", DB_KEY)]),
    ("alertmanager", "alertmanager_firing_v4.json", [("default", "trigger", DEFAULT_KEY)] * 2),
    ("alertmanager", "alertmanager_resolved_v4.json", [("default", "resolve", DEFAULT_KEY)]),
    ("grafana", "grafana_unified_firing_docs.json", [("blue", "trigger", BLUE_KEY)] * 2),
    ("grafana", "grafana_unified_firing_v11_values_image.json", [("default", "trigger", DEFAULT_KEY)]),
    ("grafana", "grafana_unified_resolved.json", [("default", "resolve", DEFAULT_KEY)]),
])
def test_fixture_is_stored_as_pending_events(relay, http, pd, source, name, expected):
    payload = fixture(name)
    response = post(http, source, payload)
    assert response.status_code == 202, response.get_data(as_text=True)
    body = response.get_json()
    rows = log_rows(relay)
    assert body["accepted"] == len(expected) == len(rows)
    for entry, row, alert, (route, action, key) in zip(body["events"], rows, payload["alerts"], expected):
        assert entry == {"log_id": row["id"], "route": route, "event_action": action,
                         "dedup_key": row["dedup_key"], "routing_key": masked(key)}
        assert len(entry["dedup_key"]) == 64
        assert (row["status"], row["source"], row["route"], row["event_action"]) == ("pending", source, route, action)
        assert (row["routing_key"], row["routing_key_masked"]) == (key, masked(key))
        assert "routing_key" not in row["event"] and row["event"]["event_action"] == action
        assert row["alert"]["labels"] == alert["labels"] and row["alert"]["status"] == alert["status"]
        assert row["alert"]["fingerprint"] == alert["fingerprint"] and row["alert"]["source"] == source
    assert pd.received() == []  # delivery is the worker's job, never the request's
    assert_no_key(response)


def test_trigger_row_keeps_the_whole_event(relay, http):
    post(http, "grafana", fixture("grafana_unified_firing_v11_values_image.json"))
    (row,) = log_rows(relay)
    assert row["summary"] == "Memory (copy): High memory usage"
    assert row["event"]["payload"]["custom_details"]["values"]["A"] == 2473545728
    assert row["event"]["images"][0]["src"] == "https://grafana.com/assets/img/blog/mixed_styles.png"
    assert [link["text"] for link in row["event"]["links"]] == ["Source", "Dashboard", "Panel", "Silence"]


def test_firing_and_resolved_share_the_dedup_key(relay, http):
    fired = post(http, "alertmanager", fixture("alertmanager_0.25_firing_captured.json")).get_json()
    resolved = post(http, "alertmanager", fixture("alertmanager_0.25_resolved_captured.json")).get_json()
    assert fired["events"][0]["dedup_key"] == resolved["events"][0]["dedup_key"]
    assert [r["event_action"] for r in log_rows(relay)] == ["trigger", "resolve"]


def test_routing_key_from_a_label_is_stored_and_masked(relay, http):
    payload = fixture("alertmanager_firing_v4.json")
    payload["alerts"][0]["labels"]["pd_key"] = LABEL_KEY
    response = post(http, "alertmanager", payload)
    assert [(e["route"], e["routing_key"]) for e in response.get_json()["events"]] == \
        [("by-label", masked(LABEL_KEY)), ("default", masked(DEFAULT_KEY))]
    first = log_rows(relay)[0]
    assert first["routing_key"] == LABEL_KEY
    assert LABEL_KEY not in json.dumps(first["event"])  # the label itself is masked in custom_details
    assert_no_key(response)


def test_generic_object_and_array(relay, http):
    one = post(http, "generic", {"summary": "Backup failed", "status": "problem", "severity": "page",
                                 "dedup_key": "backup/nightly", "labels": {"service": "db"}, "host": "b1"})
    assert one.status_code == 202
    assert one.get_json()["events"][0] == {"log_id": log_rows(relay)[0]["id"], "route": "db",
                                           "event_action": "trigger", "dedup_key": "backup/nightly",
                                           "routing_key": masked(DB_KEY)}
    many = post(http, "generic", [{"title": "Queue stuck", "state": "alerting"},
                                  {"title": "Queue stuck", "state": "ok", "fingerprint": "q1"}])
    assert [(e["route"], e["event_action"]) for e in many.get_json()["events"]] == \
        [("default", "trigger"), ("default", "resolve")]
    rows = log_rows(relay)
    assert rows[0]["event"]["payload"]["severity"] == "critical"  # "page" through the db route's map
    assert rows[0]["event"]["payload"]["custom_details"]["host"] == "b1"
    assert [r["status"] for r in rows] == ["pending"] * 3 and rows[2]["dedup_key"] == "q1"


def test_unknown_source_is_404_in_the_error_shape(relay, http):
    response = post(http, "zabbix", {"version": "4", "alerts": []})
    assert response.status_code == 404
    assert response.get_json() == {"error": {"code": "unknown_source",
                                             "message": "no source named 'zabbix'; known: alertmanager, grafana, "
                                                        "pagerduty, generic"}}
    assert log_rows(relay) == []


# --- unrouted ------------------------------------------------------------------------------------

def test_unrouted_alerts_are_logged_and_reported(unrouted_app, pd):
    response = post(unrouted_app.test_client(), "grafana", fixture("grafana_unified_firing_docs.json"))
    assert response.status_code == 202
    body = response.get_json()
    rows = log_rows(unrouted_app)
    problem = "no route matches and there is no default route"
    assert body == {"accepted": 2, "events": [
        {"log_id": row["id"], "route": None, "event_action": "trigger", "dedup_key": None, "routing_key": "",
         "status": "unrouted", "problem": problem} for row in rows]}
    assert [(r["status"], r["route"], r["routing_key"], r["error"]) for r in rows] == \
        [("unrouted", None, "", problem)] * 2
    assert rows[1]["alert"]["labels"]["alertname"] == "High CPU usage"
    assert rows[1]["summary"] == "High CPU usage: This alert was triggered for zone eu-1"
    assert pd.received() == []


def test_routed_and_unrouted_alerts_in_one_notification(unrouted_app):
    payload = fixture("alertmanager_0.25_firing_captured.json")
    other = json.loads(json.dumps(payload["alerts"][0]))
    other["labels"]["service"] = "web"
    payload["alerts"].append(other)
    events = post(unrouted_app.test_client(), "alertmanager", payload).get_json()["events"]
    assert [(e["route"], e.get("status")) for e in events] == [("db", None), (None, "unrouted")]
    assert [r["status"] for r in log_rows(unrouted_app)] == ["pending", "unrouted"]


def test_unrouted_resolve_is_logged(unrouted_app):
    response = post(unrouted_app.test_client(), "grafana", fixture("grafana_unified_resolved.json"))
    (entry,) = response.get_json()["events"]
    assert (entry["event_action"], entry["status"], entry["dedup_key"]) == ("resolve", "unrouted", "d8a21484c9c25a60")


def test_routing_key_label_pagerduty_cannot_take_is_unrouted_not_an_error(relay, http):
    payload = fixture("alertmanager_firing_v4.json")
    payload["alerts"][0]["labels"]["pd_key"] = "x" * 300  # longer than incident_log.routing_key
    response = post(http, "alertmanager", payload)
    assert response.status_code == 202
    first = response.get_json()["events"][0]
    assert (first["route"], first["status"]) == (None, "unrouted")
    assert first["problem"] == "the routing key template of route 'by-label' rendered an invalid routing key"
    assert [r["status"] for r in log_rows(relay)] == ["unrouted", "pending"]


# --- bad input ---------------------------------------------------------------------------------

def am(**changes):
    """The captured Alertmanager payload with top-level changes (None deletes a field)."""
    payload = fixture("alertmanager_0.25_firing_captured.json")
    for key, value in changes.items():
        if value is None:
            payload.pop(key)
        else:
            payload[key] = value
    return payload


def am_alert(**changes):
    payload = am()
    payload["alerts"][0].update(changes)
    return payload


def nested(depth: int) -> dict:
    value = "bottom"
    for _ in range(depth):
        value = {"n": value}
    return value


BAD_INPUT = [
    ("alertmanager", "{not json", 400, "the request body is not valid JSON: Expecting property name"),
    ("alertmanager", "", 400, "the request body is empty; send a JSON object"),
    ("alertmanager", '"firing"', 400, "the request body must be a JSON object or an array of objects"),
    ("alertmanager", [am()], 400, "Payload must be a JSON object."),
    ("alertmanager", am(version=None), 400, "'version': ['Missing data for required field.']"),
    ("alertmanager", am(alerts=None), 400, "'alerts': ['Missing data for required field.']"),
    ("alertmanager", am(version="3"), 400, 'Must be "4" (Alertmanager webhook), got "3".'),
    ("alertmanager", am(version=4), 400, "'version': ['Not a valid string.']"),
    ("alertmanager", am(alerts={"status": "firing"}), 400, "'alerts': ['Not a valid list.']"),
    ("alertmanager", am(alerts=["firing"]), 400, "Each alert must be a JSON object."),
    ("alertmanager", am(truncatedAlerts="2"), 400, "'truncatedAlerts': ['Not a valid integer.']"),
    ("alertmanager", am_alert(status="pending"), 400, "'status': ['Must be one of: firing, resolved.']"),
    ("alertmanager", am_alert(labels={"alertname": 5}), 400, "Not a valid string."),
    ("alertmanager", am_alert(labels=None), 400, "'labels': ['Field may not be null.']"),
    ("alertmanager", am(extra=nested(70)), 400, "the request body nests deeper than 64 levels"),
    ("alertmanager", "[" * 100_000 + "]" * 100_000, 400, "the request body is not valid JSON: nested too deeply"),
    ("alertmanager", b"\xff\xfe{}", 400, "the request body is not valid JSON: not UTF-8"),
    ("grafana", am(), 400, 'Must be "1" (Grafana webhook), got "4".'),
    ("grafana", {**fixture("grafana_unified_firing_docs.json"), "orgId": "1"}, 400, "'orgId': ['Not a valid integer.']"),
    ("generic", {"summary": "x", "status": "exploded"}, 400, "Unknown status 'exploded'"),
    ("generic", [{"summary": "x"}, "y"], 400, "Must be a JSON object, not a string."),
    ("generic", {"summary": "x", "labels": ["a"]}, 400, "Labels must be an object of names to values, not an array."),
    ("generic", "42", 400, "the request body must be a JSON object or an array of objects"),
]


@pytest.mark.parametrize("source, payload, status, problem", BAD_INPUT)
def test_bad_input_is_4xx_naming_the_problem(relay, http, source, payload, status, problem):
    response = post(http, source, payload)
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == "invalid_input"
    assert problem in f"{error['message']} {error.get('fields')}", error
    assert log_rows(relay) == []
    assert post(http, "alertmanager", fixture("alertmanager_firing_v4.json")).status_code == 202  # still serving


def test_bad_alert_is_named_by_its_position(http):
    payload = fixture("alertmanager_firing_v4.json")
    payload["alerts"][1]["status"] = "pending"
    fields = post(http, "alertmanager", payload).get_json()["error"]["fields"]
    assert fields == {"alerts": {"1": {"status": ["Must be one of: firing, resolved."]}}}


def test_body_over_the_size_limit_is_413(make_app):
    app = make_app(ROUTES=[], DEFAULT_ROUTE=DEFAULT_ROUTE, MAX_CONTENT_LENGTH=4096)
    payload = fixture("alertmanager_0.25_firing_captured.json")
    payload["alerts"][0]["annotations"]["description"] = "x" * 5000
    response = post(app.test_client(), "alertmanager", payload)
    assert response.status_code == 413
    assert response.get_json()["error"] == {
        "code": "request_entity_too_large",
        "message": f"the request body is {len(json.dumps(payload))} bytes; at most 4096 are taken in one request "
                   "(RELAY_MAX_BODY_BYTES)"}
    assert log_rows(app) == []
    with app.test_request_context("/", method="POST", data={"next": "/"}):  # a form over Werkzeug's form limits
        form_answer = app.make_response(app.handle_user_exception(RequestEntityTooLarge()))
    assert form_answer.status_code == 413
    assert form_answer.get_json()["error"]["message"] == RequestEntityTooLarge.description  # not the body's limit


def chunked(client, source, body: bytes):
    """POST body as a chunked request (no Content-Length), as a WSGI server hands it to the app."""
    return client.post(f"/webhooks/{source}", input_stream=io.BytesIO(body),
                       headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
                       environ_overrides={"wsgi.input_terminated": True})


def test_chunked_body_over_the_size_limit_is_413_and_at_the_limit_is_taken(make_app):
    app = make_app(ROUTES=[], DEFAULT_ROUTE=DEFAULT_ROUTE, MAX_CONTENT_LENGTH=4096)
    payload = fixture("alertmanager_0.25_firing_captured.json")
    payload["alerts"][0]["annotations"]["description"] = "x" * 5000
    response = chunked(app.test_client(), "alertmanager", json.dumps(payload).encode())
    assert response.status_code == 413
    assert response.get_json()["error"] == {
        "code": "request_entity_too_large",
        "message": "the request body is over 4096 bytes; at most 4096 are taken in one request (RELAY_MAX_BODY_BYTES)"}
    assert log_rows(app) == []

    payload["alerts"][0]["annotations"]["description"] = "x"
    body = json.dumps(payload).encode()
    body += b" " * (4096 - len(body))  # exactly the limit
    assert chunked(app.test_client(), "alertmanager", body).status_code == 202


def test_a_signed_grafana_body_over_the_size_limit_is_413_naming_the_setting(make_app):
    secret = "grafana-hmac-secret"
    app = make_app(ROUTES=[], DEFAULT_ROUTE=DEFAULT_ROUTE, MAX_CONTENT_LENGTH=4096,
                   WEBHOOK_AUTH={"grafana": {"hmac_secret": secret}})
    payload = fixture("grafana_unified_firing_docs.json")
    payload["message"] = "x" * 5000
    body = json.dumps(payload).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    response = app.test_client().post("/webhooks/grafana", data=body, content_type="application/json",
                                      headers={"X-Grafana-Alerting-Signature": signature})
    assert response.status_code == 413  # the signature check reads the body first: the same answer
    assert response.get_json()["error"]["message"] == (f"the request body is {len(body)} bytes; at most 4096 are "
                                                       "taken in one request (RELAY_MAX_BODY_BYTES)")


def test_nul_characters_are_replaced_not_a_500(relay, http):
    # PostgreSQL text columns cannot hold U+0000.
    payload = fixture("alertmanager_0.25_firing_captured.json")
    payload["alerts"][0]["annotations"]["summary"] = "Disk\u0000full"
    payload["alerts"][0]["labels"]["mount\u0000"] = "/data\u0000"
    response = post(http, "alertmanager", payload)
    assert response.status_code == 202, response.get_data(as_text=True)
    (row,) = log_rows(relay)
    assert row["status"] == "pending" and row["summary"] == "DiskFull: Disk\ufffdfull (db1:9100)"
    assert row["alert"]["labels"]["mount\ufffd"] == "/data\ufffd"


def test_lone_surrogates_are_replaced_not_a_500(relay, http):
    # "\ud800" is valid JSON but no character: it cannot be stored as UTF-8, nor sent. A pair stays one character.
    body = json.dumps(fixture("alertmanager_0.25_firing_captured.json"))
    body = body.replace('"Disk almost full"', '"Disk \\ud800 full \\ud83d\\ude00"').replace('"db"', '"d\\uDC00b"')
    response = http.post("/webhooks/alertmanager", data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 202, response.get_data(as_text=True)
    (row,) = log_rows(relay)
    assert row["summary"] == "DiskFull: Disk \ufffd full \U0001F600 (db1:9100)"
    assert row["alert"]["labels"]["service"] == "d\ufffdb"


def test_unicode_and_huge_alerts_are_accepted(relay, http):
    payload = fixture("alertmanager_firing_v4.json")
    payload["alerts"][0]["labels"]["host"] = "サーバー-1 🔥"
    payload["alerts"][0]["annotations"] = {"summary": "s" * 5000, "description": "d" * (600 * 1024)}
    payload["alerts"][1]["annotations"] = None
    payload["alerts"][1]["generatorURL"] = ""
    response = post(http, "alertmanager", payload)
    assert response.status_code == 202
    first, second = log_rows(relay)
    assert first["alert"]["labels"]["host"] == "サーバー-1 🔥" and len(first["summary"]) == 1024
    assert len(json.dumps(first["event"]).encode()) < 512 * 1024
    assert second["summary"] == "High CPU Temperature (andromeda)" and second["event"]["links"] == []


# --- secrets -----------------------------------------------------------------------------------

def test_no_routing_key_in_any_response(relay, http):
    with_label = fixture("alertmanager_firing_v4.json")
    with_label["alerts"][0]["labels"]["pd_key"] = LABEL_KEY
    with_label["alerts"][0]["annotations"]["summary"] = f"key {LABEL_KEY}"
    responses = [post(http, source, fixture(name)) for source, name in [
        ("alertmanager", "alertmanager_0.25_firing_captured.json"), ("grafana", "grafana_unified_firing_docs.json"),
        ("grafana", "grafana_unified_resolved.json")]]
    bad_status = json.loads(json.dumps(with_label))
    bad_status["alerts"][1]["status"] = "pending"
    responses += [post(http, "alertmanager", with_label), post(http, "alertmanager", bad_status),
                  post(http, "zabbix", {}), http.post("/api/v1/preview/alertmanager", json=with_label),
                  http.post("/api/v1/preview/grafana", json=fixture("grafana_unified_firing_docs.json"))]
    assert [r.status_code for r in responses] == [202, 202, 202, 202, 400, 404, 200, 200]
    for response in responses:
        assert_no_key(response)


# --- preview -----------------------------------------------------------------------------------

def test_preview_shows_full_events_and_stores_nothing(relay, http, pd):
    response = http.post("/api/v1/preview/grafana", json=fixture("grafana_unified_firing_v11_values_image.json"))
    assert response.status_code == 200
    (entry,) = response.get_json()["events"]
    assert (entry["route"], entry["event_action"], entry["routing_key"]) == ("default", "trigger", masked(DEFAULT_KEY))
    assert "log_id" not in entry and entry["event"]["routing_key"] == masked(DEFAULT_KEY)
    assert entry["event"]["dedup_key"] == entry["dedup_key"]
    assert entry["event"]["payload"]["summary"] == "Memory (copy): High memory usage"
    assert log_rows(relay) == [] and pd.received() == []


def test_preview_reports_unrouted_and_bad_input(unrouted_app):
    client = unrouted_app.test_client()
    (entry,) = client.post("/api/v1/preview/grafana",
                           json=fixture("grafana_unified_firing_v11_values_image.json")).get_json()["events"]
    assert (entry["route"], entry["status"], entry["routing_key"]) == (None, "unrouted", "")
    bad = client.post("/api/v1/preview/alertmanager", json={"version": "4"})
    assert bad.status_code == 400 and bad.get_json()["error"]["fields"] == {
        "alerts": ["Missing data for required field."]}
    assert client.post("/api/v1/preview/nagios", json={}).status_code == 404
    assert log_rows(unrouted_app) == []


def test_preview_command_prints_events_and_stores_nothing(relay, pd):
    result = relay.test_cli_runner().invoke(
        args=["relay", "preview", "alertmanager", str(FIXTURES / "alertmanager_firing_v4.json")])
    assert result.exit_code == 0, result.output
    events = json.loads(result.output)["events"]
    assert [(e["route"], e["event_action"], e["routing_key"]) for e in events] == \
        [("default", "trigger", masked(DEFAULT_KEY))] * 2
    assert events[0]["event"]["payload"]["summary"] == "High CPU Temperature: High CPU core temperature (andromeda)"
    assert DEFAULT_KEY not in result.output
    assert log_rows(relay) == [] and pd.received() == []


def test_preview_command_exits_2_on_bad_input(relay, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"version": "4", "alerts": [{"status": "pending", "labels": {}}]}))
    result = relay.test_cli_runner().invoke(args=["relay", "preview", "alertmanager", str(bad)])
    assert result.exit_code == 2
    assert json.loads(result.output)["error"]["fields"] == {"alerts": {"0": {"status": [
        "Must be one of: firing, resolved."]}}}
    assert log_rows(relay) == []


# --- check-config ------------------------------------------------------------------------------

def check_config(tmp_path, config_text: str, **env):
    """Run `flask --app wsgi relay check-config` with RELAY_CONFIG pointing at a file holding config_text."""
    config = tmp_path / "relay_config.py"
    config.write_text(config_text)
    environ = {k: v for k, v in os.environ.items() if k not in ("PAGERDUTY_ROUTING_KEY", "RELAY_CONFIG")}
    environ.update(RELAY_CONFIG=str(config), DATABASE_URL=f"sqlite:///{tmp_path / 'relay.sqlite3'}", **env)
    return subprocess.run([str(Path(sys.executable).parent / "flask"), "--app", "wsgi", "relay", "check-config"],
                          cwd=ROOT, env=environ, capture_output=True, text=True, timeout=60)


GOOD_CONFIG = f"""
ROUTES = [
    {{"name": "db", "matchers": ['team="db"', 'env=~"prod|staging"'], "routing_key_env": "PD_DB_KEY",
      "severity_map": {{"page": "critical"}}, "continue": True}},
    {{"name": "by-label", "matchers": ['pd_key!=""'], "routing_key_template": "{{{{ labels.pd_key }}}}"}},
]
DEFAULT_ROUTE = {{"name": "catch-all", "routing_key": "{DEFAULT_KEY}", "dedup": "group"}}
"""


def test_check_config_ok(tmp_path):
    result = check_config(tmp_path, GOOD_CONFIG, PD_DB_KEY=DB_KEY)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f'db: team="db", env=~"prod|staging" → key {masked(DB_KEY)}, dedup alert, continue',
        'by-label: pd_key!="" → key templated, dedup alert',
        f"catch-all: (everything) → key {masked(DEFAULT_KEY)}, dedup group",
        "configuration OK: 2 route(s) and a default route",
    ]
    assert DB_KEY not in result.stdout + result.stderr and DEFAULT_KEY not in result.stdout + result.stderr


def test_check_config_warns_without_default_route(tmp_path):
    result = check_config(tmp_path, "ROUTES = []\nDEFAULT_ROUTE = None\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "warning: no default route: alerts matching no route are logged as unrouted, not sent",
        "configuration OK: 0 route(s)",
    ]


@pytest.mark.parametrize("config_text, env, message", [
    (GOOD_CONFIG, {}, "route 'db', field 'routing_key_env': environment variable PD_DB_KEY is not set"),
    (GOOD_CONFIG.replace('prod|staging', 'prod|('), {"PD_DB_KEY": DB_KEY},
     "route 'db', field 'matchers': bad regex 'prod|('"),
    (GOOD_CONFIG.replace('"dedup": "group"', '"default_severity": "urgent"'), {"PD_DB_KEY": DB_KEY},
     "route 'catch-all', field 'default_severity': Must be one of: critical, error, warning, info."),
    (GOOD_CONFIG.replace("labels.pd_key }}", "labels.pd_key }"), {"PD_DB_KEY": DB_KEY},
     "route 'by-label', field 'routing_key_template': invalid template"),
    (GOOD_CONFIG + 'GENERIC_WEBHOOK = {"summry": "title"}\n', {"PD_DB_KEY": DB_KEY},
     "GENERIC_WEBHOOK: summry: Unknown field."),
])
def test_check_config_names_route_and_field(tmp_path, config_text, env, message):
    result = check_config(tmp_path, config_text, **env)
    assert result.returncode == BAD_CONFIGURATION
    assert result.stderr.startswith(f"relay: configuration error: {message}"), result.stderr
    assert "Traceback" not in result.stderr and DEFAULT_KEY not in result.stderr


@pytest.mark.parametrize("route, environ, message", [
    ({"name": "short", "routing_key": "abc12345"}, {},
     "route 'short', field 'routing_key': the key has 8 characters; a PagerDuty integration (routing) key has 32"),
    ({"name": "db", "routing_key_env": "PD_DB_KEY"}, {"PD_DB_KEY": DB_KEY + "\n"},
     "route 'db', field 'routing_key_env': the key in PD_DB_KEY has 33 characters; a PagerDuty integration "
     "(routing) key has 32"),
])
def test_a_routing_key_pagerduty_would_refuse_stops_start_up_unshown(route, environ, message):
    with pytest.raises(ConfigError) as caught:
        load_routing([route], None, environ)
    assert str(caught.value) == message
    assert "abc12345" not in str(caught.value) and DB_KEY not in str(caught.value)


# --- intake limits, and every field fitted -------------------------------------------------------------

def test_a_20000_label_alert_is_stored_whole_and_its_event_fitted_in_well_under_a_second(make_app):
    app = make_app(ROUTES=[], DEFAULT_ROUTE=DEFAULT_ROUTE, RELAY_MAX_LABELS_PER_ALERT=0)
    payload = fixture("alertmanager_0.25_firing_captured.json")
    payload["alerts"][0]["labels"].update({f"label_{index:05}": "v" * 24 for index in range(20_000)})
    started = time.process_time()
    response = post(app.test_client(), "alertmanager", payload)
    assert response.status_code == 202, response.get_data(as_text=True)
    assert time.process_time() - started < 1.0  # 13.7 s when trimming re-encoded the event per label
    (row,) = log_rows(app)
    assert row["alert"]["labels"] == payload["alerts"][0]["labels"]  # the row keeps the alert whole
    assert len(json.dumps(row["event"], ensure_ascii=False, separators=(",", ":")).encode()) < 512_000
    assert row["event"]["payload"]["custom_details"]["relay_note"].startswith("custom_details trimmed")


def many_alerts(count: int) -> dict:
    return am(alerts=[{"status": "firing", "labels": {"alertname": f"A{index}"}} for index in range(count)])


@pytest.mark.parametrize("source, payload, message", [
    ("alertmanager", many_alerts(1_001), "the request carries 1001 alerts; at most 1000 are taken in one request "
                                         "(RELAY_MAX_ALERTS_PER_REQUEST)"),
    ("alertmanager", am(alerts=["not an alert"] * 1_001), "(RELAY_MAX_ALERTS_PER_REQUEST)"),  # counted unread
    ("grafana", {**fixture("grafana_unified_firing_docs.json"), "alerts": [{}] * 1_001},
     "the request carries 1001 alerts"),
    ("generic", [{"summary": "x"}] * 1_001, "the request carries 1001 alerts"),
    ("alertmanager", am_alert(labels={f"l{index}": "v" for index in range(1_001)}),
     "alert 0 carries 1001 labels; at most 1000 are taken per alert (RELAY_MAX_LABELS_PER_ALERT)"),
    ("alertmanager", am_alert(annotations={f"a{index}": "v" for index in range(1_001)}),
     "alert 0 carries 1001 annotations"),
    ("generic", {"summary": "x", "labels": {f"l{index}": "v" for index in range(1_001)}},
     "alert 0 carries 1001 labels"),
])
def test_over_the_intake_limits_is_413_naming_the_limit_and_its_setting(relay, http, source, payload, message):
    response = post(http, source, payload)
    assert response.status_code == 413, response.get_data(as_text=True)[:500]
    error = response.get_json()["error"]
    assert error["code"] == "request_entity_too_large" and message in error["message"]
    assert log_rows(relay) == []


def test_a_4_mib_request_of_131065_alerts_is_refused_at_once(relay, http):
    alerts = [{"status": "firing", "labels": {}}] * 131_065
    body = json.dumps({"version": "4", "alerts": alerts}, separators=(",", ":")).encode()
    assert len(body) <= 4 * 1024 * 1024  # under RELAY_MAX_BODY_BYTES: the alerts, not the bytes, are too many
    started = time.process_time()
    response = http.post("/webhooks/alertmanager", data=body, content_type="application/json")
    assert response.status_code == 413 and "131065 alerts" in response.get_json()["error"]["message"]
    assert time.process_time() - started < 2.0  # 17.8 s and a 21.8 MB answer when every alert was taken
    assert len(response.get_data()) < 1_000


def test_the_limits_are_settings(make_app):
    app = make_app(ROUTES=[], DEFAULT_ROUTE=DEFAULT_ROUTE, RELAY_MAX_ALERTS_PER_REQUEST=2)
    assert post(app.test_client(), "alertmanager", many_alerts(2)).status_code == 202
    response = post(app.test_client(), "alertmanager", many_alerts(3))
    assert response.status_code == 413 and "at most 2 are taken" in response.get_json()["error"]["message"]


def test_an_alert_with_huge_urls_is_delivered_to_a_pagerduty_that_refuses_oversized_events(delivering, pd):
    app = delivering(ROUTES=[], DEFAULT_ROUTE=DEFAULT_ROUTE)
    huge = "http://prometheus:9090/graph?g0.expr=" + "x" * 600_000
    payload = am(externalURL=huge)
    payload["alerts"][0]["generatorURL"] = huge
    assert post(app.test_client(), "alertmanager", payload).status_code == 202
    (sent,) = wait_until(pd.accepted, timeout=10, message="the event at PagerDuty")
    assert "client_url" not in sent and all(len(link["href"]) < 1_000 for link in sent.get("links", []))
    assert sent["payload"]["custom_details"]["relay_dropped"][0].startswith("links[0] (Source): a URL of 600037")
    wait_until(lambda: [row["status"] for row in log_rows(app)] == ["delivered"], timeout=5,
               message="the row delivered")


# --- an older state of an alert never overrides a newer one (issue 18, item 8) -----------------------------

UPSTREAM = Path("/work/shared/upstream-payloads")
AM_FIRING, AM_RESOLVED = "alertmanager_0.25_firing_captured.json", "alertmanager_0.25_resolved_captured.json"


def am_at(name: str, starts_at: str, ends_at: str | None = None) -> dict:
    """A captured Alertmanager body with its alert's times changed (a later firing of the same alert)."""
    payload = fixture(name)
    payload["alerts"][0]["startsAt"] = starts_at
    if ends_at:
        payload["alerts"][0]["endsAt"] = ends_at
    return payload


def test_a_trigger_after_its_alerts_resolve_is_stored_stale(relay, http):
    resolved = post(http, "alertmanager", fixture(AM_RESOLVED)).get_json()
    late = post(http, "alertmanager", fixture(AM_FIRING))
    assert late.status_code == 202
    (entry,) = late.get_json()["events"]
    assert entry["status"] == "stale" and entry["event_action"] == "trigger"
    assert entry["problem"] == (f"stale: firing since 2026-11-26T21:15:51.615572997Z is older than resolved at "
                                f"2026-11-26T21:15:54Z (row {resolved['events'][0]['log_id']}); not sent")
    assert [(r["event_action"], r["status"]) for r in log_rows(relay)] == [("resolve", "pending"), ("trigger", "stale")]
    assert log_rows(relay)[1]["error"] == entry["problem"]
    assert_no_key(late)


def test_a_lagging_replicas_firing_after_the_resolve_is_stale_and_repeats_are_superseded(relay, http):
    for name in (AM_FIRING, AM_FIRING, AM_RESOLVED, AM_RESOLVED, AM_FIRING):  # HA: each replica sends each
        assert post(http, "alertmanager", fixture(name)).status_code == 202
    rows = log_rows(relay)
    first = rows[0]["id"]
    # Nothing was sent (no delivery here): the repeats wait behind their first copies, then the resolve finds its
    # trigger unsent and both are dropped; the lagging firing is older than the (superseded) resolve.
    assert [(r["event_action"], r["status"], r["superseded_by"]) for r in rows] == [
        ("trigger", "superseded", first + 2), ("trigger", "superseded", first), ("resolve", "superseded", first),
        ("resolve", "superseded", first + 2), ("trigger", "stale", None)]


def test_a_new_firing_after_the_resolve_is_sent_and_the_old_resolve_then_stale(relay, http):
    post(http, "alertmanager", fixture(AM_FIRING))
    post(http, "alertmanager", fixture(AM_RESOLVED))
    again = post(http, "alertmanager", am_at(AM_FIRING, "2026-11-26T21:20:00Z")).get_json()
    late_resolve = post(http, "alertmanager", fixture(AM_RESOLVED)).get_json()
    assert "status" not in again["events"][0]
    assert late_resolve["events"][0]["status"] == "stale"
    assert "resolved at 2026-11-26T21:15:54Z is older than firing since 2026-11-26T21:20:00Z" in \
        late_resolve["events"][0]["problem"]
    assert [r["status"] for r in log_rows(relay)] == ["superseded", "superseded", "pending", "stale"]


def test_grafanas_resolve_before_its_trigger_leaves_the_trigger_stale(relay, http):
    resolved = (UPSTREAM / "grafana-pytorch-nodata-resolved.json").read_bytes()
    firing = (UPSTREAM / "grafana-pytorch-nodata-firing.json").read_bytes()
    assert post(http, "grafana", resolved).status_code == 202
    assert post(http, "grafana", firing).get_json()["events"][0]["status"] == "stale"
    assert [(r["event_action"], r["status"]) for r in log_rows(relay)] == [("resolve", "pending"), ("trigger", "stale")]


def test_in_one_request_a_resolve_then_its_older_firing_leaves_the_firing_stale(relay, http):
    both = fixture(AM_RESOLVED)
    both["alerts"].append(fixture(AM_FIRING)["alerts"][0])
    events = post(http, "alertmanager", both).get_json()["events"]
    assert [e.get("status") for e in events] == [None, "stale"]
    assert "an earlier event of this request" in events[1]["problem"]


def test_alerts_sharing_a_dedup_key_are_not_compared(make_app, pd):
    """A group's or a template's dedup key covers several alerts, each with times of its own."""
    app = make_app(ROUTES=[{"name": "db", "matchers": ['service="db"'], "routing_key": DB_KEY,
                            "dedup": "{{ labels.service }}"}], DEFAULT_ROUTE=None)
    http = app.test_client()
    post(http, "alertmanager", fixture(AM_RESOLVED))
    other = am_at(AM_FIRING, "2026-11-26T21:15:00Z")
    other["alerts"][0]["labels"]["instance"] = "db2:9100"
    other["alerts"][0]["fingerprint"] = "0123456789abcdef"
    assert "status" not in post(http, "alertmanager", other).get_json()["events"][0]
    assert [r["status"] for r in log_rows(app)] == ["pending", "pending"]


def test_a_stale_trigger_is_never_sent_and_opens_nothing(delivering, pd, monkeypatch):
    monkeypatch.setenv("RELAY_TEST_BLUE_KEY", BLUE_KEY)
    app = delivering(ROUTES=ROUTES, DEFAULT_ROUTE=DEFAULT_ROUTE)
    http = app.test_client()
    post(http, "alertmanager", fixture(AM_RESOLVED))
    post(http, "alertmanager", fixture(AM_FIRING))
    wait_until(lambda: [r["status"] for r in log_rows(app)] == ["delivered", "stale"], 10, "the resolve delivered")
    time.sleep(0.3)  # a stale row would have been claimed by now
    assert [e["event_action"] for e in (r["body"] for r in pd.received())] == ["resolve"]
    assert pd.alerts() == []  # no incident opened, so none left open
