"""Property tests: any valid Alertmanager or Grafana payload yields events PagerDuty accepts; any broken one
gets a 4xx; nothing ever gets a 5xx."""
import json
from datetime import timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.intake.configure import load as load_config
from relay.intake.mapping import plan
from relay.intake.sources import get_source
from tools.simulator import validate_event

KEY = "0123456789abcdef0123456789abcdef"
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

label_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,15}", fullmatch=True)
texts = st.text(max_size=300)
label_maps = st.dictionaries(label_names, texts, max_size=6)
times = st.datetimes(timezones=st.just(timezone.utc)).map(
    lambda moment: moment.isoformat().replace("+00:00", "Z"))
urls = st.sampled_from(["", "http://prometheus:9090/graph?g0.expr=up%3D%3D0", "https://grafana.example/d/x",
                        "not a url", "ftp://old.example/x", "http://prom_1:9090/graph"])


@st.composite
def alertmanager_alerts(draw, extra=None):
    """One alert of a notification, as Alertmanager (or Grafana) writes it."""
    status = draw(st.sampled_from(["firing", "resolved"]))
    alert = {
        "status": status,
        "labels": {"alertname": draw(texts), **draw(label_maps)},
        "annotations": draw(st.one_of(label_maps, st.fixed_dictionaries({"summary": texts, "description": texts}))),
        "startsAt": draw(times),
        "endsAt": draw(times) if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": draw(urls),
        "fingerprint": draw(st.from_regex(r"[0-9a-f]{16}", fullmatch=True)),
    }
    return {**alert, **(draw(extra) if extra is not None else {})}


grafana_extra = st.fixed_dictionaries({}, optional={
    "silenceURL": urls, "dashboardURL": urls, "panelURL": urls, "imageURL": urls,
    "values": st.one_of(st.none(), st.dictionaries(label_names, st.floats(allow_nan=False, allow_infinity=False))),
    "valueString": texts, "orgId": st.integers(min_value=0, max_value=10**6)})


@st.composite
def notifications(draw, version="4", extra=None, top=None):
    """A whole notification; unknown top-level fields included, as newer senders add them."""
    alerts = draw(st.lists(alertmanager_alerts(extra), max_size=5))
    body = {
        "version": version, "groupKey": draw(texts), "truncatedAlerts": draw(st.integers(0, 5)),
        "status": "firing" if any(a["status"] == "firing" for a in alerts) else "resolved",
        "receiver": draw(texts), "groupLabels": draw(label_maps), "commonLabels": draw(label_maps),
        "commonAnnotations": draw(label_maps), "externalURL": draw(urls), "alerts": alerts,
        "notification_reason": draw(st.sampled_from(["new_alert", "repeat", "resolved"])),
    }
    return {**body, **(draw(top) if top is not None else {})}


grafana_top = st.fixed_dictionaries({"orgId": st.integers(0, 100), "title": texts, "message": texts,
                                     "state": st.sampled_from(["alerting", "ok"])})
VALID = {"alertmanager": notifications(), "grafana": notifications("1", grafana_extra, grafana_top)}


def breakages():
    """Ways to break a valid notification, each naming what a sender might really get wrong."""
    return st.sampled_from([
        lambda b: {k: v for k, v in b.items() if k != "alerts"},
        lambda b: {**b, "alerts": {"not": "a list"}},
        lambda b: {**b, "version": 4},
        lambda b: {**b, "alerts": [{**a, "status": "pending"} for a in b["alerts"]] or [{"status": "x"}]},
        lambda b: {**b, "alerts": [{**a, "labels": {"n": 1}} for a in b["alerts"]] or [{"labels": []}]},
        lambda b: {**b, "alerts": [a for a in b["alerts"]] + ["not an object"]},
        lambda b: [b],
        lambda b: "a string",
    ])


@pytest.fixture
def relay_app(make_app):
    return make_app(DEFAULT_ROUTE={"name": "default", "routing_key": KEY},
                    ROUTES=[{"name": "grouped", "matchers": ['team="db"'], "routing_key": KEY, "dedup": "group"}])


@pytest.mark.parametrize("source", ["alertmanager", "grafana"])
def test_every_valid_payload_is_accepted_and_yields_events_pagerduty_accepts(relay_app, source):
    client = relay_app.test_client()
    routing, _ = load_config(relay_app.config)

    @SETTINGS
    @given(VALID[source])
    def check(payload):
        response = client.post(f"/webhooks/{source}", json=payload)
        assert response.status_code == 202, response.get_json()
        assert response.get_json()["accepted"] >= (1 if payload["alerts"] else 0)
        for item in plan(get_source(source).to_alerts(payload), routing):
            assert validate_event(item.event) == [], item.event

    check()


@pytest.mark.parametrize("source", ["alertmanager", "grafana"])
def test_every_broken_payload_gets_a_4xx_naming_the_problem(relay_app, source):
    client = relay_app.test_client()

    @SETTINGS
    @given(VALID[source], breakages())
    def check(payload, breakage):
        response = client.post(f"/webhooks/{source}", data=json.dumps(breakage(payload)),
                               content_type="application/json")
        assert 400 <= response.status_code < 500, response.get_json()
        assert response.get_json()["error"]["message"]

    check()


def test_arbitrary_bytes_never_get_a_5xx(relay_app):
    client = relay_app.test_client()

    @SETTINGS
    @given(st.binary(max_size=2000), st.sampled_from(["alertmanager", "grafana", "generic", "nope"]))
    def check(body, source):
        response = client.post(f"/webhooks/{source}", data=body, content_type="application/json")
        assert response.status_code < 500

    check()
