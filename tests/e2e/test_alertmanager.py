"""End to end with the real senders: Prometheus 2.42 → Alertmanager 0.25 → the relay under gunicorn.

Alertmanager's receiver has two webhooks: the relay, and a capture server in this process that keeps the exact
bodies and headers Alertmanager sent. Assertions are on incident_log rows and on what the PagerDuty simulator
received from the relay's delivery worker.
"""
import json
import os
import re
import secrets
from datetime import datetime, timezone
from pathlib import Path

import pytest

from .harness import (
    ALERTMANAGER_BIN,
    AMTOOL_BIN,
    PROMETHEUS_BIN,
    alertmanager,
    alertmanager_config,
    capture_server,
    gauge_server,
    prometheus,
    relay_server,
    require_binaries,
    wait_for,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BEARER_TOKEN = "e2e-" + secrets.token_hex(12)
RECEIVER = "relay.e2e"  # a dot on purpose: Alertmanager sends the receiver regexp-quoted, "relay\\.e2e"
ZERO_TIME = "0001-01-01T00:00:00Z"
DELIVERY_STATES = {"pending", "delivered"}  # as first read: the worker may not have sent it yet
HEX64 = re.compile(r"[0-9a-f]{64}")
WAIT = 20  # seconds for any notification to reach the relay; typical is 1-3 s

GAUGE = "relay_e2e_queue_stuck_messages"
PROM_ALERT = "RelayE2EQueueStuck"
PROM_RULES = {"groups": [{
    "name": "relay-e2e",
    "interval": "1s",
    "rules": [{
        "alert": PROM_ALERT,
        "expr": f"{GAUGE} > 0",
        "for": "0s",
        "labels": {"severity": "warning"},
        "annotations": {
            "summary": "Queue {{ $labels.queue }} stuck with {{ $value }} messages",
            "description": "Consumers of <{{ $labels.queue }}> & co. stopped — check the café \"worker\" pods",
            "runbook_url": "https://runbooks.example.com/queue-stuck",
        },
    }],
}]}


@pytest.fixture(scope="module", autouse=True)
def binaries():
    """Fail every test here, clearly, when the real senders are not installed."""
    require_binaries(ALERTMANAGER_BIN, AMTOOL_BIN, PROMETHEUS_BIN)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="module")
def relay(workdir, simulator):
    simulator.reset()  # shared with other modules' tests, which leave outages and faults behind
    with relay_server(workdir / "relay", simulator.events_url) as served:
        yield served


@pytest.fixture(scope="module")
def capture():
    with capture_server() as captured:
        yield captured


@pytest.fixture(scope="module")
def am(workdir, relay, capture):
    config = alertmanager_config([relay.alertmanager_webhook, capture.url], BEARER_TOKEN, receiver=RECEIVER)
    with alertmanager(workdir / "alertmanager", config) as running:
        yield running


@pytest.fixture(scope="module")
def gauge():
    with gauge_server(GAUGE, {"queue": "payments"}) as served:
        yield served


@pytest.fixture(scope="module")
def prom(workdir, gauge, am):
    with prometheus(workdir / "prometheus", gauge.target, am.url, PROM_RULES) as running:
        yield running


# --- helpers -----------------------------------------------------------------------------------------------

def rows_for(relay, alertname: str, action: str) -> list[dict]:
    """incident_log rows of one alert name and action."""
    return relay.rows("json_extract(alert, '$.labels.alertname') = ? AND event_action = ?", (alertname, action))


def wait_rows(relay, alertname: str, action: str, timeout: float = WAIT) -> list[dict]:
    return wait_for(lambda: rows_for(relay, alertname, action), timeout,
                    message=f"a {action} row for {alertname} in incident_log")


def wait_capture(capture, alertname: str, status: str, timeout: float = WAIT) -> dict:
    """The first notification Alertmanager sent the capture webhook for this alert name and status."""
    found = wait_for(lambda: capture.find(lambda b: b.get("status") == status and any(
        a["labels"].get("alertname") == alertname for a in b.get("alerts", []))), timeout,
        message=f"a {status} notification for {alertname} at the capture webhook")
    return found[0]


def wait_sent(simulator, dedup_key: str, actions: list[str], timeout: float = WAIT) -> list[dict]:
    """The events PagerDuty (the simulator) accepted for one dedup key, once they are exactly `actions`."""
    def sent():
        events = [e for e in simulator.accepted() if e.get("dedup_key") == dedup_key]
        return events if [e["event_action"] for e in events] == actions else None
    return wait_for(sent, timeout, message=f"{actions} for {dedup_key} at the PagerDuty simulator")


def check_delivered(simulator, trigger: dict) -> None:
    """PagerDuty got the trigger as logged, then the resolve with the same key, and closed the alert."""
    sent_trigger, _ = wait_sent(simulator, trigger["dedup_key"], ["trigger", "resolve"])
    assert sent_trigger["payload"]["summary"] == trigger["summary"]
    assert sent_trigger["payload"]["severity"] == trigger["severity"]
    assert sent_trigger["links"] == trigger["event"]["links"]
    [alert] = [a for a in simulator.alerts() if a["dedup_key"] == trigger["dedup_key"]]
    assert alert["status"] == "resolved"


def links_of(row: dict) -> dict:
    return {link["href"]: link.get("text") for link in row["event"].get("links", [])}


def shape(value, key=None):
    """The structure of a payload: keys and JSON types; label maps and alert lists reduced to their kind."""
    if key in ("labels", "annotations", "groupLabels", "commonLabels", "commonAnnotations"):
        return "map<string,string>" if all(isinstance(v, str) for v in value.values()) else "map<?>"
    if isinstance(value, dict):
        return {k: shape(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return sorted({json.dumps(shape(v), sort_keys=True) for v in value})
    return type(value).__name__


def check_notification(record: dict, fixture_name: str) -> dict:
    """Check what Alertmanager really sent: headers, and the same shape as the fixture the unit tests use."""
    headers = {k.lower(): v for k, v in record["headers"].items()}
    assert headers.get("authorization") == f"Bearer {BEARER_TOKEN}", headers
    assert headers.get("content-type", "").startswith("application/json"), headers
    assert headers.get("user-agent", "").startswith("Alertmanager/0.25"), headers
    body = record["body"]
    fixture = json.loads((FIXTURES / fixture_name).read_text())
    assert shape(body) == shape(fixture), f"real payload differs in shape from {fixture_name}:\n{record['raw']}"
    assert body["version"] == "4" and body["truncatedAlerts"] == 0
    assert body["receiver"] == RECEIVER.replace(".", "\\."), body["receiver"]  # regexp.QuoteMeta
    for alert in body["alerts"]:
        assert re.fullmatch(r"[0-9a-f]{16}", alert["fingerprint"]), alert
        assert (alert["endsAt"] == ZERO_TIME) == (alert["status"] == "firing"), alert
    maybe_save(record)
    return body


def maybe_save(record: dict) -> None:
    """With RELAY_E2E_CAPTURE_DIR set, write each real body there, byte for byte, as
    captured_e2e_<origin>_<status>.json (how tests/fixtures/captured_e2e_prometheus_*.json were made)."""
    directory = os.environ.get("RELAY_E2E_CAPTURE_DIR")
    if not directory:
        return
    body = record["body"]
    origin = "prometheus" if any(a["labels"].get("alertname") == PROM_ALERT for a in body["alerts"]) else "amtool"
    path = Path(directory) / f"captured_e2e_{origin}_{body['status']}.json"
    path.write_text(record["raw"], encoding="utf-8")


def check_trigger(relay, row: dict) -> None:
    """What every trigger row from Alertmanager must hold."""
    assert row["source"] == "alertmanager", row
    assert row["route"] == "default", row
    assert row["status"] in DELIVERY_STATES, row
    assert HEX64.fullmatch(row["dedup_key"]), row["dedup_key"]
    assert row["routing_key_masked"] == "…" + relay.routing_key[-4:]
    assert "routing_key" not in row["event"]
    assert row["event"]["payload"]["severity"] == row["severity"]
    assert row["event"]["payload"]["summary"] == row["summary"]
    assert row["alert"]["receiver"] == RECEIVER  # the relay undid Alertmanager's quoting


def check_resolve(row: dict, trigger: dict) -> None:
    assert row["source"] == "alertmanager", row
    assert row["route"] == trigger["route"], row
    assert row["status"] in DELIVERY_STATES, row
    assert row["dedup_key"] == trigger["dedup_key"], (row["dedup_key"], trigger["dedup_key"])
    assert row["alert"]["status"] == "resolved" and row["alert"]["ends_at"], row["alert"]


# --- tests -------------------------------------------------------------------------------------------------

def test_amtool_alert_is_logged_as_trigger_then_resolve_with_the_same_dedup_key(relay, am, capture, simulator):
    name = "RelayE2EDiskFull"
    labels = [f"alertname={name}", "severity=critical", "instance=db1:9100", "service=db"]
    generator = "http://prometheus.example:9090/graph?g0.expr=disk_free_ratio+%3C+0.05&g0.tab=1"
    annotations = ["--annotation=summary=Disk almost full on /var",
                   "--annotation=description=Only 3% left",
                   "--annotation=runbook_url=https://runbooks.example.com/disk-full"]
    am.amtool("alert", "add", *labels, *annotations, f"--generator-url={generator}")

    [trigger] = wait_rows(relay, name, "trigger")
    check_trigger(relay, trigger)
    assert trigger["severity"] == "critical"
    assert trigger["summary"] == f"{name}: Disk almost full on /var (db1:9100)"
    assert links_of(trigger) == {generator: "Source", "https://runbooks.example.com/disk-full": "Runbook"}
    details = trigger["event"]["payload"]["custom_details"]
    assert details["labels"] == {"alertname": name, "severity": "critical", "instance": "db1:9100", "service": "db"}
    assert details["annotations"]["description"] == "Only 3% left"
    assert trigger["event"]["client_url"] == am.url

    # Resolve as amtool users do: the same alert again, ending now (past by the time Alertmanager reads it).
    [held] = [a for a in am.alerts() if a["labels"].get("alertname") == name]
    ended = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    am.amtool("alert", "add", *labels, *annotations, f"--start={held['startsAt']}", f"--end={ended}")

    [resolve] = wait_rows(relay, name, "resolve")
    check_resolve(resolve, trigger)
    assert len(rows_for(relay, name, "trigger")) == 1  # one notification, one row: no extra trigger
    check_delivered(simulator, trigger)

    firing = check_notification(wait_capture(capture, name, "firing"), "alertmanager_0.25_firing_captured.json")
    assert firing["alerts"][0]["generatorURL"] == generator
    resolved = check_notification(wait_capture(capture, name, "resolved"),
                                  "alertmanager_0.25_resolved_captured.json")
    # The resolving post carried no --generator-url, and Alertmanager sends the latest post's fields.
    assert resolved["alerts"][0]["generatorURL"] == ""


def test_prometheus_rule_on_a_gauge_fires_and_resolves_through_alertmanager(relay, am, prom, gauge, capture,
                                                                            simulator):
    wait_for(lambda: gauge.scrapes >= 1, WAIT, message="Prometheus scraping the gauge")
    assert not rows_for(relay, PROM_ALERT, "trigger"), "fired before the gauge was switched on"

    gauge.set(7)
    [trigger] = wait_rows(relay, PROM_ALERT, "trigger")
    check_trigger(relay, trigger)
    assert trigger["severity"] == "warning"
    assert trigger["summary"] == f"{PROM_ALERT}: Queue payments stuck with 7 messages ({gauge.target})"
    links = links_of(trigger)
    generator = next(href for href, text in links.items() if text == "Source")
    assert generator.startswith(prom.url + "/graph?g0.expr="), generator
    assert links["https://runbooks.example.com/queue-stuck"] == "Runbook"
    details = trigger["event"]["payload"]["custom_details"]
    assert details["labels"] == {"alertname": PROM_ALERT, "severity": "warning", "queue": "payments",
                                 "job": "relay-e2e", "instance": gauge.target}
    assert details["annotations"]["description"] == (
        'Consumers of <payments> & co. stopped — check the café "worker" pods')  # no HTML escaping on the way
    assert trigger["event"]["payload"]["component"] == "relay-e2e"

    gauge.set(0)
    [resolve] = wait_rows(relay, PROM_ALERT, "resolve")
    check_resolve(resolve, trigger)
    check_delivered(simulator, trigger)

    firing = check_notification(wait_capture(capture, PROM_ALERT, "firing"),
                                "alertmanager_0.25_firing_captured.json")
    assert firing["alerts"][0]["generatorURL"] == generator
    resolved = check_notification(wait_capture(capture, PROM_ALERT, "resolved"),
                                  "alertmanager_0.25_resolved_captured.json")
    assert resolved["alerts"][0]["generatorURL"] == generator  # Prometheus keeps it on the resolve
    assert resolved["alerts"][0]["fingerprint"] == firing["alerts"][0]["fingerprint"]
