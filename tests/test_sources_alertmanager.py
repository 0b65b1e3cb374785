"""Tests for the Alertmanager webhook source: real payloads in, normalized alerts out."""
import copy
import inspect

import pytest
from marshmallow import ValidationError

from relay.intake.alert import FIRING, RESOLVED, Alert, Link
from relay.intake.sources import SOURCES, alertmanager, get_source
from tests.helpers import delete_at, fixture, messages_at, set_at


def test_registered_with_the_shared_signature():
    assert get_source("alertmanager") is alertmanager
    assert SOURCES["alertmanager"].NAME == "alertmanager"
    assert list(inspect.signature(alertmanager.to_alerts).parameters) == ["payload", "settings"]


def test_firing_captured_payload_maps_every_field():
    (alert,) = alertmanager.to_alerts(fixture("alertmanager_0.25_firing_captured.json"))
    assert alert == Alert(
        source="alertmanager",
        status=FIRING,
        labels={"alertname": "DiskFull", "instance": "db1:9100", "service": "db", "severity": "critical"},
        annotations={"description": "Only 3% left", "summary": "Disk almost full"},
        starts_at="2026-11-26T21:15:51.615572997Z",
        ends_at=None,
        fingerprint="e5cb976153386091",
        group_key='{}:{alertname="DiskFull", service="db"}',
        links=[Link(href="http://prom:9090/graph", text="Source")],
        image_url=None,
        details={},
        receiver="relay",
        external_url="http://vm:19093",
    )
    assert alert.firing


def test_resolved_captured_payload_has_end_time_and_no_link_for_empty_generator_url():
    (alert,) = alertmanager.to_alerts(fixture("alertmanager_0.25_resolved_captured.json"))
    assert alert.status == RESOLVED
    assert not alert.firing
    assert alert.ends_at == "2026-11-26T21:15:54Z"
    assert alert.links == []
    assert alert.fingerprint == "e5cb976153386091"


def test_group_of_two_keeps_order_and_shares_the_group_key():
    alerts = alertmanager.to_alerts(fixture("alertmanager_firing_v4.json"))
    assert [a.fingerprint for a in alerts] == ["a1bc48475b20e73d", "c2ea85182f28cbd9"]
    assert [a.annotations["description"] for a in alerts] == [
        "CPU core temperature is 34.75C",
        "CPU core temperature is 17.625C",
    ]
    assert {a.group_key for a in alerts} == {"{}/{}:{}"}
    assert {a.receiver for a in alerts} == {"ops-zulip"}
    assert all(a.ends_at is None and a.status == FIRING for a in alerts)
    assert alerts[0].links == [
        Link(
            href="http://cobalt:9090/graph?g0.expr=avg+by%28host%29+%28sensors_temp_input%7Bfeature%3D~%22core_"
            "%5B0-9%5D%2B%22%7D%29+%3E+15&g0.tab=1",
            text="Source",
        )
    ]


def test_resolved_v4_unquotes_receiver_and_skips_relative_generator_url():
    (alert,) = alertmanager.to_alerts(fixture("alertmanager_resolved_v4.json"))
    assert alert.receiver == "web.hook"  # sent as web\.hook
    assert alert.links == []  # generatorURL is "/metrics/viewer/graph?…": not absolute http(s)
    assert alert.labels["severity"] == "Warning"
    assert alert.labels["instance"] == "192.168.69.53:8080"
    assert len(alert.labels) == 13
    assert alert.starts_at == "2022-07-29T11:13:27.3Z"
    assert alert.ends_at == "2022-07-29T11:17:27.3Z"
    assert alert.group_key == '{}:{alertname="Deployment"}'
    assert alert.external_url == "http://localhost:9093"


def test_unknown_fields_from_newer_releases_are_ignored():
    payload = fixture("alertmanager_0.25_firing_captured.json")
    newer = copy.deepcopy(payload)
    newer["futureField"] = "x"
    newer["alerts"][0]["futureField"] = {"anything": [1, 2]}
    assert alertmanager.to_alerts(newer) == alertmanager.to_alerts(payload)


def test_route_labels_and_notification_reason_are_kept():
    payload = fixture("alertmanager_0.25_firing_captured.json")
    newer = copy.deepcopy(payload)
    newer["notification_reason"] = "alert_group_changed"
    newer["routeLabels"] = {"team": "db"}
    (alert,) = alertmanager.to_alerts(newer)
    assert alert.route_labels == {"team": "db"}
    assert alert.details == {"notification_reason": "alert_group_changed"}
    newer["routeLabels"] = None  # a Go nil map
    assert alertmanager.to_alerts(newer)[0].route_labels == {}


def test_runbook_annotation_becomes_a_link_after_the_source():
    payload = fixture("alertmanager_0.25_firing_captured.json")
    payload["alerts"][0]["annotations"]["runbook_url"] = "https://runbooks.example.com/disk-full"
    (alert,) = alertmanager.to_alerts(payload)
    assert alert.links == [
        Link(href="http://prom:9090/graph", text="Source"),
        Link(href="https://runbooks.example.com/disk-full", text="Runbook"),
    ]


@pytest.mark.parametrize(
    "runbook", ["runbooks/disk.md", "file:///etc/passwd", "javascript:alert(1)", "https://", "http://[::1"]
)
def test_only_absolute_http_urls_become_links(runbook):
    payload = fixture("alertmanager_0.25_resolved_captured.json")  # generatorURL is ""
    payload["alerts"][0]["annotations"]["runbook_url"] = runbook
    (alert,) = alertmanager.to_alerts(payload)
    assert alert.links == []


def test_truncated_alerts_are_reported_in_details():
    payload = fixture("alertmanager_firing_v4.json")
    payload["truncatedAlerts"] = 3
    alerts = alertmanager.to_alerts(payload)
    assert [a.details for a in alerts] == [{"truncatedAlerts": 3}, {"truncatedAlerts": 3}]


def test_missing_optional_fields_and_null_maps_load_as_empty():
    payload = {"version": "4", "alerts": [{"status": "firing", "labels": {"alertname": "X"}, "annotations": None}]}
    (alert,) = alertmanager.to_alerts(payload)
    assert alert.annotations == {}
    assert (alert.starts_at, alert.ends_at, alert.fingerprint) == (None, None, None)
    assert (alert.group_key, alert.receiver, alert.external_url) == (None, None, None)
    assert alert.links == []


def test_empty_alert_list_maps_to_no_alerts():
    payload = fixture("alertmanager_firing_v4.json")
    payload["alerts"] = []
    assert alertmanager.to_alerts(payload) == []


def test_unicode_labels_are_kept():
    payload = fixture("alertmanager_0.25_firing_captured.json")
    payload["alerts"][0]["labels"] = {"alertname": "ДискПолон", "team": "数据库", "emoji": "🔥"}
    (alert,) = alertmanager.to_alerts(payload)
    assert alert.labels == {"alertname": "ДискПолон", "team": "数据库", "emoji": "🔥"}


def test_long_summary_is_kept_as_is():
    summary = "x" * 4999 + "…"
    payload = fixture("alertmanager_0.25_firing_captured.json")
    payload["alerts"][0]["annotations"]["summary"] = summary
    (alert,) = alertmanager.to_alerts(payload)
    assert alert.annotations["summary"] == summary
    assert len(alert.annotations["summary"]) == 5000


def test_settings_are_ignored():
    payload = fixture("alertmanager_firing_v4.json")
    assert alertmanager.to_alerts(payload, {"summary": "nope"}) == alertmanager.to_alerts(payload)


BROKEN = [
    ("not an object", lambda p: "firing", ("_schema",), "Payload must be a JSON object."),
    ("an array", lambda p: [p], ("_schema",), "Payload must be a JSON object."),
    ("null", lambda p: None, ("_schema",), "Payload must be a JSON object."),
    ("version wrong", set_at(("version",), "1"), ("version",), 'Must be "4" (Alertmanager webhook), got "1".'),
    ("version a number", set_at(("version",), 4), ("version",), "Not a valid string."),
    ("version missing", delete_at(("version",)), ("version",), "Missing data for required field."),
    ("alerts missing", delete_at(("alerts",)), ("alerts",), "Missing data for required field."),
    ("alerts not a list", set_at(("alerts",), {"status": "firing"}), ("alerts",), "Not a valid list."),
    ("alert not an object", set_at(("alerts", 0), "DiskFull"), ("alerts", 0, "_schema"), "Each alert must be"),
    ("alert status unknown", set_at(("alerts", 0, "status"), "pending"), ("alerts", 0, "status"), "Must be one of"),
    ("alert status missing", delete_at(("alerts", 0, "status")), ("alerts", 0, "status"), "Missing data"),
    ("labels missing", delete_at(("alerts", 0, "labels")), ("alerts", 0, "labels"), "Missing data"),
    ("labels null", set_at(("alerts", 0, "labels"), None), ("alerts", 0, "labels"), "Field may not be null."),
    ("labels a list", set_at(("alerts", 0, "labels"), ["a"]), ("alerts", 0, "labels"), "Not a valid mapping type."),
    (
        "label value an int",
        set_at(("alerts", 0, "labels", "port"), 9100),
        ("alerts", 0, "labels", "port", "value"),
        "Not a valid string.",
    ),
    (
        "annotation value an object",
        set_at(("alerts", 0, "annotations", "summary"), {"text": "x"}),
        ("alerts", 0, "annotations", "summary", "value"),
        "Not a valid string.",
    ),
    ("startsAt a number", set_at(("alerts", 0, "startsAt"), 1700000000), ("alerts", 0, "startsAt"), "Not a valid"),
    ("top status unknown", set_at(("status",), "pending"), ("status",), "Must be one of"),
    ("truncatedAlerts a string", set_at(("truncatedAlerts",), "0"), ("truncatedAlerts",), "Not a valid integer."),
    ("truncatedAlerts negative", set_at(("truncatedAlerts",), -1), ("truncatedAlerts",), "greater than or equal"),
    ("commonLabels int value", set_at(("commonLabels", "n"), 1), ("commonLabels", "n", "value"), "Not a valid string."),
]


@pytest.mark.parametrize("mutate, path, message", [case[1:] for case in BROKEN], ids=[case[0] for case in BROKEN])
def test_broken_payloads_name_the_field(mutate, path, message):
    payload = mutate(fixture("alertmanager_0.25_firing_captured.json"))
    with pytest.raises(ValidationError) as err:
        alertmanager.to_alerts(payload)
    assert any(message in text for text in messages_at(err.value, path)), err.value.messages


def test_grafana_payload_is_refused_with_its_version():
    with pytest.raises(ValidationError) as err:
        alertmanager.to_alerts(fixture("grafana_unified_resolved.json"))
    assert err.value.messages == {"version": ['Must be "4" (Alertmanager webhook), got "1".']}
