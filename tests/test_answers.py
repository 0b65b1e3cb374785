"""Every documented answer is its schema's: what the API and the webhooks serve, relay/web/schemas.py names, field
for field, so /openapi.json documents exactly what is served."""
import json
from pathlib import Path

import pytest
from marshmallow import ValidationError

from relay.web import openapi, schemas

FIRING = json.loads((Path(__file__).parent.parent / "examples" / "alertmanager-firing.json").read_text())


def served(response, schema, status):
    """The answer's JSON, checked against its schema: loads (no field it does not name) and is its own dump."""
    assert response.status_code == status, response.get_json()
    body = response.get_json()
    schema.load(body)  # raises on a field the schema does not name, a missing required one, a wrong type
    assert schema.dump(body) == body
    return body


@pytest.fixture
def answering(delivering, routing_key):
    return delivering(DEFAULT_ROUTE={"name": "default", "routing_key": routing_key}, RELAY_SYNC_WAIT_SECONDS=0.5)


def test_every_documented_answer_is_served_as_its_schema_names_it(answering, pd, routing_key):
    client = answering.test_client()
    accepted = served(client.post("/webhooks/alertmanager", json=FIRING), schemas.webhook_accepted, 202)
    assert accepted["accepted"] == len(FIRING["alerts"])
    served(client.post("/api/v1/preview/alertmanager", json=FIRING), schemas.preview, 200)

    delivered = served(client.post("/api/v1/incidents", json={"title": "t", "service_key": routing_key}),
                       schemas.job_result, 200)
    served(client.post(f"/api/v1/incidents/{delivered['dedup_key']}/resolve", json={"service_key": routing_key}),
           schemas.job_result, 200)
    pd.set_routing_keys(["f" * 32])
    refused = served(client.post("/api/v1/incidents", json={"title": "t", "service_key": routing_key}),
                     schemas.pagerduty_error, 422)
    pd.inject(410)
    served(client.post("/api/v1/incidents", json={"title": "t", "service_key": "d" * 32}), schemas.pagerduty_error, 502)
    pd.set_outage("refuse")
    served(client.post("/api/v1/incidents", json={"title": "t", "service_key": "e" * 32}), schemas.job_result, 202)

    page = served(client.get("/api/v1/log"), schemas.log_page, 200)
    assert {entry["id"] for entry in page["items"]} >= {delivered["log_id"], refused["log_id"]}
    detail = served(client.get(f"/api/v1/log/{delivered['log_id']}"), schemas.log_detail, 200)
    assert detail["attempt_log"]
    served(client.post(f"/api/v1/log/{refused['log_id']}/retry"), schemas.retried, 202)
    retrying = served(client.get("/api/v1/log?status=retrying"), schemas.log_page, 200)["items"]
    assert retrying and retrying[0]["next_attempt_at"]  # PagerDuty still refuses connections


def test_an_unrouted_alert_is_answered_through_the_schema_too(make_app):
    client = make_app().test_client()  # no default route: the alert is stored as unrouted, with its problem
    body = served(client.post("/webhooks/alertmanager", json=FIRING), schemas.webhook_accepted, 202)
    assert body["events"][0]["status"] == "unrouted" and body["events"][0]["problem"]


def test_a_field_the_schema_does_not_name_fails_the_check():
    answer = {"accepted": 0, "events": []}
    assert schemas.webhook_accepted.dump({**answer, "extra": 1}) == answer  # a view cannot add one by dumping
    with pytest.raises(ValidationError):
        schemas.webhook_accepted.load({**answer, "extra": 1})  # nor by adding one after


def test_openapi_documents_the_schemas_the_views_dump_through():
    documented = openapi.build_spec()["components"]["schemas"]
    for name in ("JobResult", "PagerDutyError", "LogPage", "LogDetail", "WebhookAccepted", "Preview", "Retry"):
        schema = getattr(schemas, f"{name}Schema")
        assert set(documented[name]["properties"]) == set(schema().fields), name
