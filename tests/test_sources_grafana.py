"""Tests for the Grafana-managed alerting webhook source: real payloads in, normalized alerts out."""
import copy
import inspect

import pytest
from marshmallow import ValidationError

from relay.intake.alert import FIRING, RESOLVED, Alert, Link
from relay.intake.sources import SOURCES, get_source, grafana
from tests.helpers import fixture, messages_at, set_at


def test_registered_with_the_shared_signature():
    assert get_source("grafana") is grafana
    assert SOURCES["grafana"].NAME == "grafana"
    assert list(inspect.signature(grafana.to_alerts).parameters) == ["payload", "settings"]


def test_docs_firing_payload_maps_every_field():
    first, second = grafana.to_alerts(fixture("grafana_unified_firing_docs.json"))
    assert first == Alert(
        source="grafana",
        status=FIRING,
        labels={"alertname": "High memory usage", "team": "blue", "zone": "us-1"},
        annotations={
            "description": "The system has high memory usage",
            "runbook_url": "https://myrunbook.com/runbook/1234",
            "summary": "This alert was triggered for zone us-1",
        },
        starts_at="2021-10-12T09:51:03.157076+02:00",
        ends_at=None,
        fingerprint="c6eadffa33fcdf37",
        group_key="{}:{}",
        links=[
            Link(href="https://play.grafana.org/alerting/1afz29v7z/edit", text="Source"),
            Link(href="https://myrunbook.com/runbook/1234", text="Runbook"),
            Link(
                href="https://play.grafana.org/alerting/silence/new?alertmanager=grafana"
                "&matchers=alertname%3DT2%2Cteam%3Dblue%2Czone%3Dus-1",
                text="Silence",
            ),
        ],  # dashboardURL and panelURL are "": no link
        image_url=None,
        details={"values": {"B": 44.23943737541908, "C": 1}, "orgId": 1},
        receiver="My Super Webhook",
        external_url="https://play.grafana.org/",
    )
    assert second.labels == {"alertname": "High CPU usage", "team": "blue", "zone": "eu-1"}
    assert second.fingerprint == "bc97ff14869b13e3"
    assert second.links[0] == Link(href="https://play.grafana.org/alerting/d1rdpdv7k/edit", text="Source")


def test_v11_payload_with_values_and_image():
    (alert,) = grafana.to_alerts(fixture("grafana_unified_firing_v11_values_image.json"))
    assert alert.image_url == "https://grafana.com/assets/img/blog/mixed_styles.png"
    assert alert.links == [
        Link(
            href="https://play.grafana.org/alerting/grafana/dd2f0260-3cfc-4c65-a4c4-f3f632c551f4/view?orgId=1",
            text="Source",
        ),
        Link(href="https://play.grafana.org/d/ece9fb32-7f71-4be9-bd94-2f23608ae5b9?orgId=1", text="Dashboard"),
        Link(
            href="https://play.grafana.org/d/ece9fb32-7f71-4be9-bd94-2f23608ae5b9?orgId=1&viewPanel=2",
            text="Panel",
        ),
        Link(
            href="https://play.grafana.org/alerting/silence/new?alertmanager=grafana&matcher=alertname%3DMemory+"
            "%28copy%29&matcher=debug%3Dtrue&matcher=grafana_folder%3Ddevice&orgId=1",
            text="Silence",
        ),
    ]
    assert alert.details["values"] == {"A": 2473545728, "B": 0, "C": 1, "minute": 9}
    assert isinstance(alert.details["values"]["A"], int)  # kept as sent, not cast to float
    assert alert.details["valueString"].startswith("[ var='A' labels={instance=node_exporter:9100, job=node}")
    assert alert.details["orgId"] == 1
    assert alert.group_key == '{}/{debug="true"}:{alertname="Memory (copy)", grafana_folder="device"}'
    assert alert.labels == {"alertname": "Memory (copy)", "debug": "true", "grafana_folder": "device"}
    assert alert.ends_at is None


def test_resolved_payload_without_values():
    (alert,) = grafana.to_alerts(fixture("grafana_unified_resolved.json"))
    assert alert.status == RESOLVED
    assert alert.ends_at == "2022-06-17T00:51:24.067337833Z"
    assert alert.starts_at == "2022-06-17T00:41:00.782137894Z"
    assert alert.details == {
        "valueString": "[ var='B0' metric='Value' labels={__name__=rabbitmq_queues, deploy=prod, "
        "instance=otherhost.example.com, job=rabbitmq} value=24 ]",
        "orgId": 1,
    }
    assert [link.text for link in alert.links] == ["Source", "Runbook", "Silence"]
    assert alert.links[1].href == "https://example.com/"
    assert alert.receiver == "Webhook test"
    assert alert.image_url is None


def test_alert_org_id_and_rule_uid_win_over_the_payload():
    payload = fixture("grafana_unified_resolved.json")
    payload["alerts"][0].update({"orgId": 7, "ruleUID": "zTjxv_C7k", "values": None})
    (alert,) = grafana.to_alerts(payload)
    assert alert.details["orgId"] == 7
    assert alert.details["ruleUID"] == "zTjxv_C7k"
    assert "values" not in alert.details


def test_unknown_fields_are_ignored():
    payload = fixture("grafana_unified_firing_v11_values_image.json")
    newer = copy.deepcopy(payload)
    newer["futureField"] = {"team": "db"}
    newer["alerts"][0]["embeddedImage"] = "iVBORw0KGgo="
    newer["alerts"][0]["somethingNew"] = [1]
    assert grafana.to_alerts(newer) == grafana.to_alerts(payload)


def test_empty_generator_url_gives_no_source_link():
    payload = fixture("grafana_unified_resolved.json")
    payload["alerts"][0]["generatorURL"] = ""
    (alert,) = grafana.to_alerts(payload)
    assert [link.text for link in alert.links] == ["Runbook", "Silence"]


def test_unicode_labels_and_long_summary_are_kept():
    summary = "é" * 5000
    payload = fixture("grafana_unified_resolved.json")
    payload["alerts"][0]["labels"] = {"alertname": "Задержка", "zone": "東京"}
    payload["alerts"][0]["annotations"]["summary"] = summary
    (alert,) = grafana.to_alerts(payload)
    assert alert.labels == {"alertname": "Задержка", "zone": "東京"}
    assert alert.annotations["summary"] == summary


BROKEN = [
    ("not an object", lambda p: "alerting", ("_schema",), "Payload must be a JSON object."),
    ("version wrong", set_at(("version",), "4"), ("version",), 'Must be "1" (Grafana webhook), got "4".'),
    ("alerts not a list", set_at(("alerts",), "none"), ("alerts",), "Not a valid list."),
    ("alert status is a state", set_at(("alerts", 0, "status"), "alerting"), ("alerts", 0, "status"), "Must be one"),
    (
        "label value an int",
        set_at(("alerts", 0, "labels", "test"), 1),
        ("alerts", 0, "labels", "test", "value"),
        "Not a valid string.",
    ),
    (
        "value a string",
        set_at(("alerts", 0, "values"), {"A": "1.5"}),
        ("alerts", 0, "values", "A", "value"),
        "Not a valid number.",
    ),
    (
        "value a boolean",
        set_at(("alerts", 0, "values"), {"A": True}),
        ("alerts", 0, "values", "A", "value"),
        "Not a valid number.",
    ),
    ("values a list", set_at(("alerts", 0, "values"), [1, 2]), ("alerts", 0, "values"), "Not a valid mapping type."),
    ("orgId a string", set_at(("orgId",), "1"), ("orgId",), "Not a valid integer."),
    ("alert orgId a string", set_at(("alerts", 0, "orgId"), "1"), ("alerts", 0, "orgId"), "Not a valid integer."),
    ("imageURL a number", set_at(("alerts", 0, "imageURL"), 1), ("alerts", 0, "imageURL"), "Not a valid string."),
    ("dashboardURL null", set_at(("alerts", 0, "dashboardURL"), None), ("alerts", 0, "dashboardURL"), "may not be null"),
]


@pytest.mark.parametrize("mutate, path, message", [case[1:] for case in BROKEN], ids=[case[0] for case in BROKEN])
def test_broken_payloads_name_the_field(mutate, path, message):
    payload = mutate(fixture("grafana_unified_resolved.json"))
    with pytest.raises(ValidationError) as err:
        grafana.to_alerts(payload)
    assert any(message in text for text in messages_at(err.value, path)), err.value.messages


def test_alertmanager_payload_is_refused_with_its_version():
    with pytest.raises(ValidationError) as err:
        grafana.to_alerts(fixture("alertmanager_firing_v4.json"))
    assert err.value.messages == {"version": ['Must be "1" (Grafana webhook), got "4".']}
