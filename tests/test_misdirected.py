"""A body sent to the wrong webhook: still a 400, whose message names the webhook the body looks meant for
(issue 13, item 10), with real bodies of each sender."""
import json
from pathlib import Path

import pytest

from relay import accept
from tests.helpers import fixture

ROOT = Path(__file__).parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
UPSTREAM = Path("/work/shared/upstream-payloads")
KEY = "7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c"


def hint(source: str) -> str:
    return f"invalid input; the body looks meant for /webhooks/{source}: send it there"


@pytest.fixture
def http(make_app):
    return make_app(ROUTES=[], DEFAULT_ROUTE={"name": "default", "routing_key": KEY}).test_client()


MISDIRECTED = [
    (FIXTURES / "grafana_unified_firing_docs.json", "alertmanager", "grafana",
     {"version": ['Must be "4" (Alertmanager webhook), got "1".']}),
    (FIXTURES / "grafana_unified_resolved.json", "alertmanager", "grafana", None),
    (FIXTURES / "alertmanager_0.25_firing_captured.json", "grafana", "alertmanager",
     {"version": ['Must be "1" (Grafana webhook), got "4".']}),
    (FIXTURES / "alertmanager_resolved_v4.json", "grafana", "alertmanager", None),
    (FIXTURES / "alertmanager_firing_v4.json", "generic", "alertmanager", None),
    (ROOT / "examples" / "generic.json", "alertmanager", "generic", {"_schema": ["Payload must be a JSON object."]}),
    (ROOT / "examples" / "generic.json", "grafana", "generic", None),
]


@pytest.mark.parametrize("path, sent_to, meant_for, fields", MISDIRECTED)
def test_a_body_sent_to_another_sources_webhook_is_a_400_naming_its_own(http, path, sent_to, meant_for, fields):
    response = http.post(f"/webhooks/{sent_to}", data=path.read_bytes(), content_type="application/json")
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert (error["code"], error["message"]) == ("invalid_input", hint(meant_for))
    if fields is not None:
        assert error["fields"] == fields  # what was wrong is still said, as without the hint


def test_a_legacy_grafana_alert_at_the_grafana_webhook_is_pointed_to_the_generic_one(http):
    legacy = (UPSTREAM / "refused" / "grafana-zulip-legacy-nodata-v7.json").read_bytes()  # no version, no alerts
    response = http.post("/webhooks/grafana", data=legacy, content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["error"]["message"] == hint("generic")
    assert http.post("/webhooks/generic", data=legacy, content_type="application/json").status_code == 202


@pytest.mark.parametrize("sent_to, payload", [
    ("alertmanager", {**fixture("alertmanager_firing_v4.json"), "truncatedAlerts": "2"}),  # its own, broken
    ("grafana", {**fixture("grafana_unified_firing_docs.json"), "orgId": "1"}),
    ("alertmanager", {}),
    ("generic", {}),
    ("generic", {"title": "x", "status": "exploded"}),
    ("alertmanager", json.loads((UPSTREAM / "refused" / "am-prom2teams-without-status.json").read_text())),
    ("grafana", json.loads((UPSTREAM / "refused" / "grafana-zulip-custom-template-no-version.json").read_text())),
])
def test_a_body_no_other_webhook_takes_either_gets_no_hint(http, sent_to, payload):
    response = http.post(f"/webhooks/{sent_to}", json=payload)
    assert response.status_code == 400
    assert response.get_json()["error"]["message"] == "invalid input"


def test_the_preview_gives_the_hint_too(http):
    response = http.post("/api/v1/preview/alertmanager", json=fixture("grafana_unified_firing_docs.json"))
    assert response.status_code == 400
    assert response.get_json()["error"]["message"] == hint("grafana")


def test_a_body_its_webhook_takes_is_never_checked_against_the_others(http, monkeypatch):
    def never(*args):
        raise AssertionError("a hint was looked for on a body that was accepted")

    monkeypatch.setattr(accept, "meant_for", never)
    for source, payload in [("alertmanager", fixture("alertmanager_firing_v4.json")),
                            ("grafana", fixture("grafana_unified_firing_docs.json")),
                            ("generic", {"title": "Disk full"})]:
        assert http.post(f"/webhooks/{source}", json=payload).status_code == 202
