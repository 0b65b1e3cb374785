"""PagerDuty's own Python client (`pagerduty` on PyPI), which takes only an https:// base URL, against the relay
served over TLS by gunicorn (--certfile/--keyfile, a certificate made for the test): triggers, resolves and change
events reach the simulator, and a refused event comes back as PagerDuty's 400."""
import secrets
import ssl
import subprocess

import pagerduty
import pytest

from .harness import relay_server, wait_for

WAIT = 20


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1, made now with the openssl CLI (no key is ever committed)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "relay.crt", folder / "relay.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.fixture(scope="module")
def relay(tmp_path_factory, simulator, certificate):
    simulator.reset()
    with relay_server(tmp_path_factory.mktemp("relay-tls"), simulator.events_url, tls=certificate) as served:
        yield served


def test_pagerdutys_python_client_sends_through_the_relay_over_tls(relay, simulator, certificate):
    routing_key = secrets.token_hex(16)
    assert relay.url.startswith("https://")
    client = pagerduty.EventsApiV2Client(routing_key, base_url=relay.url,
                                         verify=ssl.create_default_context(cafile=str(certificate[0])))
    dedup_key = client.trigger("Queue depth over 10k", "worker-3", severity="warning",
                               custom_details={"queue": "mail", "depth": 10400})
    wait_for(lambda: [a for a in simulator.alerts() if a["routing_key"] == routing_key], WAIT,
             message="the client's trigger at the simulator")
    [sent] = [e for e in simulator.accepted() if e["routing_key"] == routing_key]
    assert sent["dedup_key"] == dedup_key  # the key the client got back is the one PagerDuty has
    assert sent["payload"] == {"summary": "Queue depth over 10k", "source": "worker-3", "severity": "warning",
                               "custom_details": {"queue": "mail", "depth": 10400}}

    client.resolve(dedup_key)
    client.send_change_event(payload={"summary": "Deployed worker v8", "source": "ci",
                                      "timestamp": "2026-12-07T08:00:00Z"})
    wait_for(lambda: [a for a in simulator.alerts() if a["routing_key"] == routing_key
                      and a["status"] == "resolved"], WAIT, message="the client's resolve at the simulator")
    changes = wait_for(lambda: [r for r in simulator.received() if r["path"] == "/v2/change/enqueue"
                                and r["body"]["routing_key"] == routing_key], WAIT, message="the change event")
    assert changes[0]["status"] == 202 and changes[0]["body"]["payload"]["summary"] == "Deployed worker v8"

    with pytest.raises(pagerduty.HttpError) as refused:
        client.send_event("trigger", payload={"summary": "x", "source": "y", "severity": "fatal"})
    assert refused.value.response.status_code == 400
    assert refused.value.response.json()["errors"] == ["'payload.severity' must be one of: critical, error, warning, "
                                                       "info"]
