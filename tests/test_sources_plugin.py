"""Sources as plug-ins: a fourth source is one module and one registry line; the webhook route, its credentials,
its settings, the unknown-source message and /openapi.json all pick it up from the registry."""
import logging

import pytest

import config
from relay.intake import sources
from relay.startup import process as startup
from relay.web import openapi
from tests import tiny_source

TOKEN = "tiny-token-5e1f"
KEY = "0123456789abcdef0123456789abcdef"
REMOTE = {"REMOTE_ADDR": "203.0.113.9"}  # a caller from the network: only a credential lets it in


@pytest.fixture
def registered(monkeypatch):
    """Register tiny_source as config.py, the registry's one line, would: from here on the relay has four."""
    monkeypatch.setitem(sources.SOURCES, tiny_source.NAME, tiny_source)
    monkeypatch.setattr(openapi, "_spec", None)  # built once per process: build it with the new source
    monkeypatch.setenv("RELAY_TINY_TOKEN", TOKEN)
    return tiny_source


@pytest.fixture
def tiny_app(registered, make_app):
    return make_app(WEBHOOK_AUTH=config.webhook_auth(), TINY_WEBHOOK={"severity": "critical"},
                    DEFAULT_ROUTE={"name": "default", "routing_key": KEY})


def post(client, source, body, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post(f"/webhooks/{source}", json=body, headers=headers, environ_base=REMOTE)


def test_config_reads_credentials_for_every_registered_source(registered):
    assert set(config.webhook_auth()) == {"alertmanager", "grafana", "generic", "pagerduty", "tiny"}
    assert config.webhook_auth()["tiny"]["bearer_token"] == TOKEN


def test_the_webhook_route_takes_the_new_source_with_its_credential_and_settings(tiny_app):
    client = tiny_app.test_client()
    assert post(client, "tiny", {"title": "Disk full"}).status_code == 401
    response = post(client, "tiny", {"title": "Disk full", "host": "db1"}, token=TOKEN)
    assert response.status_code == 202, response.get_json()
    (event,) = response.get_json()["events"]
    assert (event["route"], event["event_action"]) == ("default", "trigger")
    (preview,) = client.post("/api/v1/preview/tiny", json={"title": "Disk full", "host": "db1"}).get_json()["events"]
    assert preview["event"]["payload"]["summary"] == "Disk full (db1)"
    assert preview["event"]["payload"]["severity"] == "critical"  # TINY_WEBHOOK, loaded at start-up
    assert preview["event"]["client"] == "Tiny Monitor"  # its CLIENT, through the default template unchanged
    refused = post(client, "tiny", {"host": "db1"}, token=TOKEN)
    assert refused.status_code == 400
    assert refused.get_json()["error"]["fields"] == {"title": ["Missing data for required field."]}


def test_bad_settings_of_the_new_source_stop_start_up(registered, make_app):
    from relay.intake.routing import ConfigError
    with pytest.raises(ConfigError, match="TINY_WEBHOOK"):
        make_app(TINY_WEBHOOK={"severity": 3})


def test_the_unknown_source_message_lists_the_new_source(tiny_app):
    response = tiny_app.test_client().post("/webhooks/zabbix", json={})
    assert response.status_code == 404
    assert response.get_json()["error"]["message"] == \
        "no source named 'zabbix'; known: alertmanager, grafana, pagerduty, generic, tiny"


def test_auth_warns_about_the_new_source_without_a_credential(registered, make_app, caplog, monkeypatch):
    monkeypatch.delenv("RELAY_TINY_TOKEN")
    app = make_app(WEBHOOK_AUTH=config.webhook_auth())
    with caplog.at_level(logging.WARNING, logger="relay.startup"):
        startup.announce(app)
    assert "webhooks for tiny have no credential configured: accepted from loopback only" in caplog.messages


def test_openapi_describes_the_new_source(tiny_app):
    spec = tiny_app.test_client().get("/openapi.json").get_json()
    body = {"$ref": "#/components/schemas/TinyWebhook"}
    for path in ("/webhooks/tiny", "/api/v1/preview/tiny"):
        assert spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"] == body
    assert spec["components"]["schemas"]["TinyWebhook"]["required"] == ["title"]
