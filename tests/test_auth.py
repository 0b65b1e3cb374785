"""Inbound authentication: per-source webhook credentials, the API token, loopback-only defaults."""
import base64
import hashlib
import hmac
import json
import secrets
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from relay.intake.routing import ConfigError
from relay.store import signatures
from relay.store.models import IncidentLog, SeenSignature, db
from relay.web.auth import SourceAuth, is_loopback

FIXTURES = Path(__file__).parent / "fixtures"
REMOTE = {"REMOTE_ADDR": "203.0.113.9"}  # a caller from the network, not this machine
TOKEN = "am-token-7c1e9a"
JSON = "application/json"
SECRET = "grafana-hmac-secret"


def payload(name="alertmanager_firing_v4.json"):
    return (FIXTURES / name).read_bytes()


def signature(body: bytes, stamp: str | None = None) -> str:
    signed = (stamp.encode() + b":" + body) if stamp else body
    return hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def secured(make_app):
    """An app where each source has its own kind of credential and the API a token."""
    return make_app(RELAY_API_TOKEN="api-token-42", WEBHOOK_AUTH={
        "alertmanager": {"bearer_token": TOKEN},
        "generic": {"basic_user": "ops", "basic_password": "s3cret"},
        "grafana": {"hmac_secret": SECRET, "timestamp_header": "X-Grafana-Alerting-Signature-Timestamp",
                    "max_skew_seconds": 60},
    }).test_client()


def post(client, source, body, headers=None):
    return client.post(f"/webhooks/{source}", data=body, headers=headers or {}, environ_base=REMOTE,
                       content_type="application/json")


@pytest.mark.parametrize("headers, status", [
    ({"Authorization": f"Bearer {TOKEN}"}, 202),
    ({"Authorization": f"bearer {TOKEN}"}, 202),
    ({}, 401),
    ({"Authorization": "Bearer wrong"}, 401),
    ({"Authorization": f"Bearer {TOKEN}x"}, 401),
    ({"Authorization": TOKEN}, 401),
    ({"Authorization": basic("x", TOKEN)}, 401),
])
def test_bearer_token(secured, headers, status):
    response = post(secured, "alertmanager", payload(), headers)
    assert response.status_code == status
    if status == 401:
        assert response.get_json() == {"error": {"code": "unauthorized", "message": "missing or invalid credentials"}}


@pytest.mark.parametrize("user, password, status", [("ops", "s3cret", 202), ("ops", "wrong", 401),
                                                    ("root", "s3cret", 401), ("", "", 401)])
def test_basic_auth(secured, user, password, status):
    body = json.dumps({"summary": "disk full", "severity": "critical"}).encode()
    assert post(secured, "generic", body, {"Authorization": basic(user, password)}).status_code == status


def test_grafana_hmac_with_timestamp(secured):
    body = payload("grafana_unified_firing_docs.json")
    stamp = str(int(time.time()))
    good = {"X-Grafana-Alerting-Signature": signature(body, stamp), "X-Grafana-Alerting-Signature-Timestamp": stamp}
    assert post(secured, "grafana", body, good).status_code == 202
    assert post(secured, "grafana", body + b" ", good).status_code == 401  # body changed after signing
    old = str(int(time.time()) - 120)  # outside the 60 s skew: a replayed capture
    replayed = {"X-Grafana-Alerting-Signature": signature(body, old), "X-Grafana-Alerting-Signature-Timestamp": old}
    assert post(secured, "grafana", body, replayed).status_code == 401
    unstamped = {"X-Grafana-Alerting-Signature": signature(body)}
    assert post(secured, "grafana", body, unstamped).status_code == 401


def test_grafana_hmac_without_timestamp(make_app):
    client = make_app(WEBHOOK_AUTH={"grafana": {"hmac_secret": SECRET}}).test_client()
    body = payload("grafana_unified_firing_docs.json")
    assert post(client, "grafana", body, {"X-Grafana-Alerting-Signature": signature(body)}).status_code == 202
    assert post(client, "grafana", body, {"X-Grafana-Alerting-Signature": "00" * 32}).status_code == 401


def test_source_without_credential_serves_loopback_only(make_app):
    client = make_app(WEBHOOK_AUTH={}).test_client()
    assert client.post("/webhooks/alertmanager", data=payload(), content_type="application/json",
                       environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 202
    refused = post(client, "alertmanager", payload())
    assert refused.status_code == 403 and "loopback only" in refused.get_json()["error"]["message"]


def test_opening_unauthenticated_webhooks_takes_an_explicit_setting(make_app):
    client = make_app(WEBHOOK_AUTH={}, RELAY_ALLOW_UNAUTHENTICATED_WEBHOOKS=True).test_client()
    assert post(client, "alertmanager", payload()).status_code == 202


def test_api_needs_its_token(secured):
    body = {"title": "t", "service_key": "k" * 32}
    refused = secured.post("/api/v1/incidents", json=body, environ_base=REMOTE)
    assert refused.status_code == 401
    wrong = secured.post("/api/v1/preview/alertmanager", data=payload(), environ_base=REMOTE, content_type=JSON,
                         headers={"Authorization": f"Bearer {TOKEN}"})  # a webhook token is not the API token
    assert wrong.status_code == 401
    allowed = secured.post("/api/v1/preview/alertmanager", data=payload(), environ_base=REMOTE, content_type=JSON,
                           headers={"Authorization": "Bearer api-token-42"})
    assert allowed.status_code == 200


def test_api_without_token_answers_loopback_only(make_app):
    client = make_app(RELAY_API_TOKEN="").test_client()
    assert client.post("/api/v1/preview/alertmanager", data=payload(), content_type=JSON,
                       environ_base={"REMOTE_ADDR": "::1"}).status_code == 200
    assert client.post("/api/v1/preview/alertmanager", data=payload(), content_type=JSON,
                       environ_base=REMOTE).status_code == 403


def test_health_stays_open(secured):
    assert secured.get("/healthz", environ_base=REMOTE).status_code == 200


def test_unknown_auth_setting_stops_start_up(make_app):
    with pytest.raises(ConfigError, match="bearer"):
        make_app(WEBHOOK_AUTH={"alertmanager": {"bearer": "typo"}})


@pytest.mark.parametrize("address, loopback", [("127.0.0.1", True), ("127.8.0.1", True), ("::1", True),
                                               ("10.0.0.1", False), ("203.0.113.9", False), ("", False),
                                               (None, False), ("not-an-ip", False)])
def test_is_loopback(address, loopback):
    assert is_loopback(address) == loopback


def test_configured_means_a_credential_is_set():
    assert not SourceAuth().configured and SourceAuth(hmac_secret="s").configured


@pytest.mark.parametrize("stamp", ["²", "１７００００００００", "9" * 5000, "-1", " ", "1e9"])
def test_a_grafana_timestamp_that_is_no_number_is_a_401_not_a_500(secured, stamp):
    body = payload("grafana_unified_firing_docs.json")
    headers = {"X-Grafana-Alerting-Signature": "00" * 32, "X-Grafana-Alerting-Signature-Timestamp": stamp}
    assert post(secured, "grafana", body, headers).status_code == 401


def test_basic_auth_without_a_password_is_a_configuration_error(make_app):
    with pytest.raises(ConfigError, match="basic_user is set without basic_password"):
        make_app(WEBHOOK_AUTH={"generic": {"basic_user": "ops", "basic_password": ""}})


LOOPBACK = {"REMOTE_ADDR": "127.0.0.1"}
NAMES = [("localhost", 202), ("localhost:8080", 202), ("127.0.0.1:8080", 202), ("[::1]:8080", 202),
         ("relay.localhost", 202), ("attacker.example:8080", 403), ("127.0.0.1.nip.io", 403)]


@pytest.mark.parametrize("host, status", NAMES)
def test_loopback_only_webhooks_answer_loopback_host_names_only(make_app, host, status):
    client = make_app(WEBHOOK_AUTH={}).test_client()
    response = client.post("/webhooks/alertmanager", data=payload(), content_type="application/json",
                           environ_base=LOOPBACK, headers={"Host": host})
    assert response.status_code == status
    if status == 403:
        assert "by a loopback name in Host" in response.get_json()["error"]["message"]


@pytest.mark.parametrize("host, status", [("localhost:8080", 200), ("rebound.example:8080", 403)])
def test_loopback_only_api_and_page_answer_loopback_host_names_only(make_app, host, status):
    client = make_app(RELAY_API_TOKEN="").test_client()
    assert client.get("/api/v1/log", environ_base=LOOPBACK, headers={"Host": host}).status_code == status
    assert client.get("/", environ_base=LOOPBACK, headers={"Host": host}).status_code == status


def test_host_names_do_not_matter_once_a_credential_is_set(secured):
    response = post(secured, "alertmanager", payload(), {"Authorization": f"Bearer {TOKEN}",
                                                         "Host": "relay.example.com"})
    assert response.status_code == 202


@pytest.mark.parametrize("path", ["/webhooks/alertmanager", "/api/v1/incidents", "/api/v1/preview/alertmanager"])
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_json_endpoints_refuse_what_a_browser_sends_cross_site_without_asking(make_app, path, content_type):
    app = make_app(WEBHOOK_AUTH={}, RELAY_API_TOKEN="")
    body = payload() if "incidents" not in path else b'{"title": "t", "service_key": "' + b"k" * 32 + b'"}'
    response = app.test_client().post(path, data=body, content_type=content_type, environ_base=LOOPBACK)
    assert response.status_code == 415
    assert response.get_json()["error"] == {"code": "unsupported_media_type",
                                            "message": "send the body with Content-Type: application/json"}
    with app.app_context():
        assert db.session.query(IncidentLog).count() == 0


@pytest.mark.parametrize("path", ["/webhooks/alertmanager", "/api/v1/incidents", "/api/v1/log/1/retry"])
def test_unsafe_requests_from_another_sites_page_are_refused(make_app, path):
    client = make_app(WEBHOOK_AUTH={}, RELAY_API_TOKEN="").test_client()
    response = client.post(path, data=payload(), content_type="application/json", environ_base=LOOPBACK,
                           headers={"Origin": "https://attacker.example"})
    assert response.status_code == 403 and response.get_json()["error"]["code"] == "forbidden"


def test_the_relays_own_page_may_post(make_app):
    client = make_app(WEBHOOK_AUTH={}).test_client()
    response = client.post("/webhooks/alertmanager", data=payload(), content_type="application/json",
                           environ_base=LOOPBACK, headers={"Origin": "http://localhost"})
    assert response.status_code == 202


# --- a signed request is accepted once (Hardening 11) ----------------------------------------------

def grafana_signed(body: bytes, stamp: int) -> dict:
    return {"X-Grafana-Alerting-Signature": signature(body, str(stamp)),
            "X-Grafana-Alerting-Signature-Timestamp": str(stamp)}


def test_a_signed_grafana_request_is_accepted_once_by_every_instance(secured, make_app):
    body = payload("grafana_unified_firing_docs.json")
    stamp = int(time.time()) - 17  # not the moment another test signed this body at
    assert post(secured, "grafana", body, grafana_signed(body, stamp)).status_code == 202
    again = post(secured, "grafana", body, grafana_signed(body, stamp))
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "replayed"
    other_instance = make_app(WEBHOOK_AUTH={"grafana": {
        "hmac_secret": SECRET, "timestamp_header": "X-Grafana-Alerting-Signature-Timestamp"}}).test_client()
    assert post(other_instance, "grafana", body, grafana_signed(body, stamp)).status_code == 409
    assert post(secured, "grafana", body, grafana_signed(body, stamp - 1)).status_code == 202  # signed anew
    forged = {**grafana_signed(body, stamp), "X-Grafana-Alerting-Signature": "00" * 32}
    assert post(secured, "grafana", body, forged).status_code == 401  # a wrong signature stays a 401


def test_signatures_are_kept_until_their_timestamp_expires_then_pruned(make_app, monkeypatch):
    app = make_app()
    now = datetime.now(timezone.utc)
    expired, live = secrets.token_hex(32), secrets.token_hex(32)
    with app.app_context():
        assert signatures.first_sighting(db.engine, "grafana", expired, now - timedelta(seconds=1), now)
        assert signatures.first_sighting(db.engine, "grafana", live, now + timedelta(seconds=60), now)
        monkeypatch.setattr(signatures, "_last_pruned", float("-inf"))  # the next write prunes
        assert signatures.first_sighting(db.engine, "grafana", secrets.token_hex(32), now, now)
        kept = set(db.session.execute(sa.select(SeenSignature.digest)).scalars())
        db.session.commit()
    assert signatures.digest("grafana", live) in kept and signatures.digest("grafana", expired) not in kept
