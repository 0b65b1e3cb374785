"""GET /openapi.json: a valid OpenAPI 3 document built from the schemas the relay really uses."""
import re

import pytest

from relay.incidents import IncidentInputSchema


@pytest.fixture
def spec(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def openapi_paths(rule: str) -> set[str]:
    """The documented paths of one Flask rule: `<int:log_id>` → `{log_id}`, fixed choices spelt out."""
    path = re.sub(r"<(?:[^<>]*:)?([^<>:]+)>", r"{\1}", rule)
    if path.endswith("/{source_name}"):
        return {path.replace("{source_name}", name) for name in ("alertmanager", "grafana", "generic")}
    if path.endswith("/{action}"):
        return {path.replace("{action}", action) for action in ("acknowledge", "resolve")}
    if path.endswith("/{signal}"):
        return {path.replace("{signal}", signal) for signal in ("start", "fail")}
    return {path}


def test_document_is_openapi_3_with_every_api_route(app, spec):
    assert spec["openapi"].startswith("3.0") and spec["info"]["title"] == "relay"
    served = set().union(*(openapi_paths(rule.rule) for rule in app.url_map.iter_rules()
                           if rule.rule.startswith(("/api/v1", "/webhooks", "/heartbeats"))))
    assert served - set(spec["paths"]) == set()
    assert "/api/v1/log/{log_id}/retry" in served


def test_request_schema_comes_from_the_input_schema(spec):
    body = spec["components"]["schemas"]["IncidentInput"]
    assert set(body["properties"]) == set(IncidentInputSchema().fields)
    assert set(body["required"]) == {"title", "service_key"}
    assert body["properties"]["urgency"]["enum"] == ["high", "low"]


@pytest.mark.parametrize("path", ["/api/v1/incidents", "/api/v1/incidents/{dedup_key}/acknowledge",
                                  "/api/v1/incidents/{dedup_key}/resolve"])
def test_the_job_documents_exactly_its_answers(spec, path):
    """Issue 13, item 8: one status per outcome, none of PagerDuty's own (no 4XX, no 504)."""
    responses = spec["paths"][path]["post"]["responses"]
    schema = {status: answer["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
              for status, answer in responses.items()}
    assert schema == {"200": "JobResult", "202": "JobResult", "422": "PagerDutyError", "502": "PagerDutyError",
                      "400": "Error", "401": "Error", "403": "Error", "413": "Error"}
    assert "CLI exit 3" in responses["202"]["description"] and "CLI exit 2" in responses["400"]["description"]


def test_job_input_refuses_unknown_fields_and_errors_carry_the_dedup_key(spec):
    for name in ("IncidentInput", "ServiceKey"):
        assert spec["components"]["schemas"][name]["additionalProperties"] is False
    assert set(spec["components"]["schemas"]["PagerDutyError"]["required"]) == {"name", "value", "log_id",
                                                                                 "dedup_key"}


def test_log_filters_are_query_parameters(spec):
    params = {p["name"]: p for p in spec["paths"]["/api/v1/log"]["get"]["parameters"]}
    assert {"status", "source", "route", "dedup_key", "q", "since", "until", "before_id", "limit"} <= set(params)
    assert "labels" in params["q"]["description"] and params["q"]["schema"]["maxLength"] == 200
    assert "does not know" in spec["paths"]["/api/v1/log"]["get"]["responses"]["400"]["description"]
    assert params["limit"]["schema"]["maximum"] == 500 and params["since"]["schema"] == {"type": "string", "format": "date-time"}


def test_source_payload_schemas_are_named_per_source(spec):
    names = set(spec["components"]["schemas"])
    assert {"AlertmanagerWebhook", "GrafanaWebhook", "AlertmanagerAlert", "GrafanaAlert"} <= names
    assert "Webhook1" not in names


def test_api_is_marked_as_needing_the_token(spec):
    assert spec["paths"]["/api/v1/log"]["get"]["security"] == [{"api_token": []}]
    assert spec["components"]["securitySchemes"]["api_token"]["scheme"] == "bearer"
