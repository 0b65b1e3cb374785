"""Severity words: the built-in vocabulary, a route's map over it or instead of it, and Grafana's no-data and
query-error alerts at their own severity; through the webhook to the simulator on both stores."""
import re
from pathlib import Path

import pytest

from relay.intake.alert import FIRING, Alert
from relay.intake.routing import BUILTIN_SEVERITIES, SEVERITY_WORDS, ConfigError, load_route, load_routing
from relay.pagerduty.event import SEVERITIES
from tests.helpers import wait_until

UPSTREAM = Path(__file__).parent / "fixtures" / "upstream"
ROUTING_MD = Path(__file__).parent.parent / "docs" / "routing.md"
KEY = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e"


def route(**options) -> dict:
    return {"name": "r", "routing_key": KEY, **options}


def alert(**labels) -> Alert:
    return Alert(source="alertmanager", status=FIRING, labels=labels)


def severity(word: str, **options) -> str:
    return load_route(route(**options)).severity(alert(alertname="A", severity=word))


def not_(expected: str) -> str:
    """A default severity other than expected, so that only the word can give expected."""
    return "info" if expected != "info" else "critical"


# --- the vocabulary ----------------------------------------------------------------------------

@pytest.mark.parametrize("word, expected", sorted((word, severity_name) for word, severity_name
                                                  in BUILTIN_SEVERITIES.items() if word not in SEVERITIES))
def test_every_built_in_word_maps_to_its_severity(word, expected):
    assert severity(word, default_severity=not_(expected)) == expected
    assert severity(f"  {word.upper()} ", default_severity=not_(expected)) == expected  # trimmed, any case


@pytest.mark.parametrize("word, expected", [
    ("P1", "critical"), ("Sev1", "critical"), ("crit", "critical"), ("page", "critical"),
    ("P2", "error"), ("severe", "error"), ("high", "error"), ("err", "error"),
    ("P3", "warning"), ("warn", "warning"), ("medium", "warning"),
    ("P4", "info"), ("P5", "info"), ("sev5", "info"), ("low", "info"), ("none", "info"),
])
def test_the_common_words_of_the_issue(word, expected):
    assert severity(word, default_severity=not_(expected)) == expected


def test_each_word_is_listed_once_and_maps_to_a_pagerduty_severity():
    words = [word for listed in SEVERITY_WORDS.values() for word in listed]
    assert len(words) == len(set(words)) and set(SEVERITY_WORDS) == set(SEVERITIES)
    assert all(word == word.strip().lower() for word in words)  # as the lookup normalizes what is sent
    assert all(BUILTIN_SEVERITIES[severity] == severity for severity in SEVERITIES)


def test_the_route_map_extends_the_vocabulary_and_wins_over_it():
    options = {"severity_map": {"P1": "warning", "ticket": "info"}}
    assert severity("p1", **options) == "warning"  # the route's own meaning first
    assert severity("ticket", **options) == "info"
    assert severity("sev1", **options) == "critical"  # the rest of the vocabulary still holds


def test_builtin_severities_off_leaves_the_map_and_pagerduty_words_only():
    options = {"builtin_severities": False, "severity_map": {"page": "critical"}, "default_severity": "info"}
    assert severity("page", **options) == "critical"
    assert severity("Warning", **options) == "warning"  # PagerDuty's own four always pass
    assert severity("P1", **options) == "info"
    assert severity("high", **options) == "info"


def test_the_first_severity_label_with_a_word_decides():
    loaded = load_route(route())
    assert loaded.severity(alert(priority="P1")) == "critical"
    assert loaded.severity(alert(severity="info", priority="P1")) == "info"
    loaded = load_route(route(severity_label="urgency"))
    assert loaded.severity(alert(urgency="high", severity="info")) == "error"
    assert loaded.severity(alert(severity="info")) == "error"  # not one of its labels: the default
    loaded = load_route(route(severity_label=["level", "severity"]))
    assert loaded.severity(alert(severity="warn")) == "warning"


@pytest.mark.parametrize("alertname", ["DatasourceNoData", "DatasourceError"])
def test_grafana_state_alerts_take_no_data_severity_whatever_their_labels(alertname):
    labels = {"alertname": alertname, "rulename": "api down", "severity": "critical", "priority": "P1"}
    assert load_route(route()).severity(alert(**labels)) == "warning"
    assert load_route(route(no_data_severity="info")).severity(alert(**labels)) == "info"
    assert load_route(route(no_data_severity=None)).severity(alert(**labels)) == "critical"  # read like any other
    assert load_route(route()).severity(alert(alertname="NoDataHere", severity="critical")) == "critical"


@pytest.mark.parametrize("options, field, reason", [
    ({"builtin_severities": "sometimes"}, "builtin_severities", "Not a valid boolean"),
    ({"no_data_severity": "low"}, "no_data_severity", "Must be one of: critical, error, warning, info"),
    ({"severity_label": []}, "severity_label", "Must be a label name or a list of label names"),
    ({"severity_label": ["severity", 3]}, "severity_label", "Must be a label name or a list of label names"),
])
def test_bad_severity_options_stop_start_up_naming_the_field(options, field, reason):
    with pytest.raises(ConfigError) as caught:
        load_routing([route(**options)], None, environ={})
    assert str(caught.value).startswith(f"route 'r', field {field!r}: ") and reason in str(caught.value)


def test_routing_md_lists_the_vocabulary_as_the_code_has_it():
    table = {}
    for severity_name, words in re.findall(r"^\| `(critical|error|warning|info)` \| (.+?) \|$",
                                           ROUTING_MD.read_text(), re.MULTILINE):
        table[severity_name] = tuple(re.findall(r"`([^`]+)`", words))
    assert table == SEVERITY_WORDS


# --- through the webhook, delivered to the simulator ---------------------------------------------

def post_file(client, source: str, name: str, method: str = "POST"):
    """Send an upstream body as its exact bytes."""
    return client.open(f"/webhooks/{source}", method=method, data=(UPSTREAM / name).read_bytes(),
                       content_type="application/json")


def delivered(pd, count: int) -> list[dict]:
    """Wait for count events accepted by the simulator; return their bodies."""
    def enough():
        found = pd.accepted()
        return found if len(found) >= count else None
    return wait_until(enough, message=f"{count} events accepted")


def test_grafana_query_errors_page_at_warning_not_at_the_rules_critical(delivering, pd):
    client = delivering(DEFAULT_ROUTE=route()).test_client()
    assert post_file(client, "grafana", "grafana-tgparser-datasource-error-3.json").status_code == 202
    events = delivered(pd, 3)
    assert [e["payload"]["severity"] for e in events] == ["warning"] * 3
    assert sorted(e["payload"]["custom_details"]["labels"]["severity"] for e in events) == \
        ["critical", "critical", "warning"]  # the rules' own severities, still shown


def test_a_route_can_read_grafana_state_alerts_like_any_other(delivering, pd):
    client = delivering(DEFAULT_ROUTE=route(no_data_severity=None)).test_client()
    assert post_file(client, "grafana", "grafana-tgparser-datasource-error-3.json").status_code == 202
    assert sorted(e["payload"]["severity"] for e in delivered(pd, 3)) == ["critical", "critical", "warning"]


def test_a_priority_label_is_read_and_no_data_still_wins(delivering, pd):
    routes = [route(name="no-data-as-labels", matchers=['rulename="Runners Scale Up Failure"'], no_data_severity=None)]
    client = delivering(ROUTES=routes, DEFAULT_ROUTE=None).test_client()
    assert post_file(client, "grafana", "grafana-pytorch-nodata-firing.json").status_code == 202
    (event,) = delivered(pd, 1)
    assert event["payload"]["severity"] == "critical"  # priority: P1
    assert event["payload"]["custom_details"]["labels"]["priority"] == "P1"


def test_the_example_routes_give_the_documented_severities(make_app, monkeypatch):
    config = {}
    exec((Path(__file__).parent.parent / "examples" / "routes.py").read_text(), config)  # as RELAY_CONFIG loads it
    for name in ("PD_DATABASE_KEY", "PD_AUDIT_KEY", "PAGERDUTY_ROUTING_KEY"):
        monkeypatch.setenv(name, name.lower().replace("_", "")[:8] * 4)
    client = make_app(ROUTES=config["ROUTES"], DEFAULT_ROUTE=config["DEFAULT_ROUTE"]).test_client()
    answer = client.post("/api/v1/preview/alertmanager", content_type="application/json",
                         data=(Path(__file__).parent.parent / "examples" / "alertmanager-firing.json").read_bytes())
    assert [(e["route"], e["event"]["payload"]["severity"]) for e in answer.get_json()["events"]] == \
        [("database", "critical"), ("audit", "info")]
