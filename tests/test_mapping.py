"""From alerts to PagerDuty events: defaults, dedup strategies, links, templates and odd alerts (no app)."""
import copy
import hashlib
import json

import pytest
import requests
from jinja2.sandbox import ImmutableSandboxedEnvironment

from relay.intake.alert import Alert
from relay.intake.mapping import plan
from relay.intake.render import Sandbox, alert_context, compile_template, render
from relay.intake.routing import load_routing
from relay.intake.sources import get_source
from relay.pagerduty.event import EVENT_MAX_BYTES, encode, event_size, load_event
from tests.helpers import fixture

KEY = "0123456789abcdef0123456789abcdef"
OTHER_KEY = "fedcba9876543210fedcba9876543210"



def routes(*raw, default=None):
    """Load routes as config.py would give them."""
    return load_routing(list(raw), default, environ={})


def everything(name="default", **options):
    """A route without matchers."""
    return {"name": name, "routing_key": KEY, **options}


def events(source: str, payload, routing=None) -> list[dict]:
    """Map a payload of the named source to its events."""
    return [p.event for p in planned(source, payload, routing)]


def planned(source: str, payload, routing=None):
    routing = routing or routes(default=everything())
    return plan(get_source(source).to_alerts(payload, None), routing)


def am_alert(status="firing", labels=None, annotations=None, **fields) -> dict:
    """One entry of an Alertmanager alerts[] array."""
    return {"status": status, "labels": labels or {"alertname": "A"}, "annotations": annotations or {},
            "startsAt": "2024-05-01T10:00:00.123456789Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph", "fingerprint": "0011223344556677", **fields}


def am_payload(*alerts, group_key='{}:{alertname="A"}') -> dict:
    """An Alertmanager notification around the given alerts."""
    return {"version": "4", "groupKey": group_key, "status": "firing", "receiver": "relay",
            "externalURL": "http://alertmanager:9093", "alerts": list(alerts)}


def pagerduty_accepts(pd, event: dict, routing_key: str) -> requests.Response:
    """POST the event to the PagerDuty simulator with a real integration-length key."""
    return requests.post(pd.events_url, data=encode({**event, "routing_key": routing_key}), timeout=5,
                         headers={"Content-Type": "application/json"})  # the bytes the relay's client sends


# --- defaults from real payloads ---------------------------------------------------------------

def test_alertmanager_defaults_from_captured_payload():
    (event,) = events("alertmanager", fixture("alertmanager_0.25_firing_captured.json"))
    assert event["event_action"] == "trigger" and event["routing_key"] == KEY
    assert event["payload"] == {
        "summary": "DiskFull: Disk almost full (db1:9100)",
        "source": "db1:9100",
        "severity": "critical",
        "timestamp": "2026-11-26T21:15:51.615572+00:00",  # Go's nanoseconds cut to microseconds
        "component": "db",
        "class": "DiskFull",
        "custom_details": {
            "labels": {"alertname": "DiskFull", "instance": "db1:9100", "service": "db", "severity": "critical"},
            "annotations": {"description": "Only 3% left", "summary": "Disk almost full"},
            "firing_since": "2026-11-26T21:15:51.615572997Z",
        },
    }
    assert event["links"] == [{"href": "http://prom:9090/graph", "text": "Source"}]
    assert event["client"] == "Prometheus Alertmanager" and event["client_url"] == "http://vm:19093"
    assert "images" not in event and "group" not in event["payload"]


def test_summary_falls_back_to_description_and_names_where():
    payload = am_payload(am_alert(labels={"alertname": "Lag", "pod": "api-7f9", "namespace": "shop"},
                                  annotations={"description": "Consumer lag 9000"}))
    (event,) = events("alertmanager", payload)
    assert event["payload"]["summary"] == "Lag: Consumer lag 9000 (api-7f9)"
    assert (event["payload"]["source"], event["payload"]["group"]) == ("api-7f9", "shop")


def test_resolve_carries_only_what_pagerduty_reads():
    (event,) = events("alertmanager", fixture("alertmanager_resolved_v4.json"))
    assert set(event) == {"routing_key", "event_action", "dedup_key"}
    assert event["event_action"] == "resolve" and len(event["dedup_key"]) == 64


def test_grafana_v11_values_links_and_https_image():
    (event,) = events("grafana", fixture("grafana_unified_firing_v11_values_image.json"))
    payload = event["payload"]
    assert payload["summary"] == "Memory (copy): High memory usage"
    assert payload["timestamp"] == "2024-03-01T02:09:00+00:00"
    assert payload["custom_details"]["values"] == {"A": 2473545728, "B": 0, "C": 1, "minute": 9}
    assert payload["custom_details"]["valueString"].startswith("[ var='A' labels={instance=node_exporter:9100")
    assert payload["custom_details"]["orgId"] == 1
    assert [(link["text"], link["href"]) for link in event["links"]] == [
        ("Source", "https://play.grafana.org/alerting/grafana/dd2f0260-3cfc-4c65-a4c4-f3f632c551f4/view?orgId=1"),
        ("Dashboard", "https://play.grafana.org/d/ece9fb32-7f71-4be9-bd94-2f23608ae5b9?orgId=1"),
        ("Panel", "https://play.grafana.org/d/ece9fb32-7f71-4be9-bd94-2f23608ae5b9?orgId=1&viewPanel=2"),
        ("Silence", "https://play.grafana.org/alerting/silence/new?alertmanager=grafana&matcher=alertname"
                    "%3DMemory+%28copy%29&matcher=debug%3Dtrue&matcher=grafana_folder%3Ddevice&orgId=1"),
    ]
    assert event["images"] == [{"src": "https://grafana.com/assets/img/blog/mixed_styles.png",
                                "alt": "Memory (copy): High memory usage"}]
    assert event["client"] == "Grafana" and event["client_url"] == "https://play.grafana.org/"


@pytest.mark.parametrize("image_url", [
    "http://grafana.com/assets/img/blog/mixed_styles.png", "data:image/png;base64,AAAA", "", "/render/d/x.png",
])
def test_only_https_images_are_kept(image_url):
    payload = fixture("grafana_unified_firing_v11_values_image.json")
    payload["alerts"][0]["imageURL"] = image_url
    (event,) = events("grafana", payload)
    assert "images" not in event and len(event["links"]) == 4


def test_runbook_annotation_becomes_a_link_and_empty_urls_do_not():
    first = events("grafana", fixture("grafana_unified_firing_docs.json"))[0]
    assert first["links"] == [
        {"href": "https://play.grafana.org/alerting/1afz29v7z/edit", "text": "Source"},
        {"href": "https://myrunbook.com/runbook/1234", "text": "Runbook"},
        {"href": "https://play.grafana.org/alerting/silence/new?alertmanager=grafana&matchers=alertname%3DT2"
                 "%2Cteam%3Dblue%2Czone%3Dus-1", "text": "Silence"},
    ]
    assert first["payload"]["timestamp"] == "2021-10-12T09:51:03.157076+02:00"


def test_alertmanager_runbook_url_annotation_is_a_link():
    payload = am_payload(am_alert(annotations={"runbook_url": "https://wiki.example.com/runbooks/A"}))
    (event,) = events("alertmanager", payload)
    assert event["links"] == [{"href": "http://prometheus:9090/graph", "text": "Source"},
                              {"href": "https://wiki.example.com/runbooks/A", "text": "Runbook"}]


def test_a_link_pagerduty_would_refuse_costs_only_that_link():
    # Docker Compose host names have underscores; the event schema's URL check refuses them.
    payload = am_payload(am_alert(generatorURL="http://prom_1:9090/graph",
                                  annotations={"runbook_url": "https://wiki.example.com/runbooks/A"},
                                  labels={"alertname": "A", "job": "node"}))
    (event,) = events("alertmanager", payload)
    assert event["links"] == [{"href": "https://wiki.example.com/runbooks/A", "text": "Runbook"}]
    assert event["payload"]["timestamp"] == "2024-05-01T10:00:00.123456+00:00"
    assert event["payload"]["component"] == "node" and event["client"] == "Prometheus Alertmanager"


# --- dedup keys --------------------------------------------------------------------------------

def test_alert_dedup_key_is_stable_from_firing_to_resolved():
    (fired,) = events("alertmanager", fixture("alertmanager_0.25_firing_captured.json"))
    (resolved,) = events("alertmanager", fixture("alertmanager_0.25_resolved_captured.json"))
    again = events("alertmanager", fixture("alertmanager_0.25_firing_captured.json"))[0]
    assert resolved["event_action"] == "resolve"
    assert fired["dedup_key"] == resolved["dedup_key"] == again["dedup_key"]
    assert len(fired["dedup_key"]) == 64 and int(fired["dedup_key"], 16) >= 0


def test_alert_dedup_key_differs_per_route_and_per_alert():
    routing = routes(everything("team-a", **{"continue": True}), everything("team-b"))
    payload = am_payload(am_alert(labels={"alertname": "A", "instance": "x"}),
                         am_alert(labels={"alertname": "A", "instance": "y"}))
    found = planned("alertmanager", payload, routing)
    assert [(p.route, p.alert.labels["instance"]) for p in found] == [
        ("team-a", "x"), ("team-b", "x"), ("team-a", "y"), ("team-b", "y")]
    assert len({p.event["dedup_key"] for p in found}) == 4


def test_alert_dedup_key_ignores_annotations_and_times():
    first = am_payload(am_alert(annotations={"description": "CPU at 91%"}))
    later = am_payload(am_alert(annotations={"description": "CPU at 97%"}, startsAt="2024-05-01T10:05:00Z"))
    assert events("alertmanager", first)[0]["dedup_key"] == events("alertmanager", later)[0]["dedup_key"]


def test_group_dedup_key_is_sha256_of_group_key_like_alertmanager():
    routing = routes(default=everything(dedup="group"))
    (event,) = events("alertmanager", fixture("alertmanager_0.25_firing_captured.json"), routing)
    expected = hashlib.sha256('{}:{alertname="DiskFull", service="db"}'.encode()).hexdigest()
    assert event["dedup_key"] == expected
    (resolved,) = events("alertmanager", fixture("alertmanager_0.25_resolved_captured.json"), routing)
    assert resolved["dedup_key"] == expected


def test_grafana_group_dedup_key_is_sha256_of_group_key():
    routing = routes(default=everything(dedup="group"))
    (event,) = events("grafana", fixture("grafana_unified_firing_v11_values_image.json"), routing)
    group_key = '{}/{debug="true"}:{alertname="Memory (copy)", grafana_folder="device"}'
    assert event["dedup_key"] == hashlib.sha256(group_key.encode()).hexdigest()


# Keys of labelled alerts as the relay has always made them: an incident opened before an upgrade must be resolved
# by the next resolve after it, so these never change.
KNOWN_KEYS = [
    ("alertmanager", fixture("alertmanager_0.25_firing_captured.json"),
     ["ab4f8431f8c1e5921901c3295193482fa09b6b977eaeae5edf6bf2e10940a489"]),
    ("alertmanager", fixture("alertmanager_0.25_resolved_captured.json"),
     ["ab4f8431f8c1e5921901c3295193482fa09b6b977eaeae5edf6bf2e10940a489"]),
    ("grafana", fixture("grafana_unified_firing_docs.json"),
     ["bc10ba3f4e45683e4e44a9c67082e59e111963f97746ed5dbb23e65b66fa432d",
      "e29b9aaec6228bcc43f1bb2e4a22e0b216b758970b49f03a8f5f76297c758146"]),
    # Was c87269d6…: the severity the path read was part of the key, so its resolve (no severity) never matched.
    # Now the trigger takes the key its resolve always had.
    ("generic", {"title": "Backup failed", "labels": {"host": "b1", "team": "db"}, "severity": "critical"},
     ["30f11c432cbb3c0586bb1e4416a7457df1c5a30b85bfc802545d4f48e0ad64ed"]),
    ("generic", {"title": "Backup failed", "labels": {"host": "b1", "team": "db"}, "status": "resolved"},
     ["30f11c432cbb3c0586bb1e4416a7457df1c5a30b85bfc802545d4f48e0ad64ed"]),
    ("generic", {"summary": "x", "labels": {"host": "b1"}},
     ["6ba2b1f06aa250b6959053c4b3202bdd42d2961a9d3f4a06c3ca0504583baac5"]),
]


@pytest.mark.parametrize("source, payload, keys", KNOWN_KEYS)
def test_labelled_alerts_keep_their_dedup_keys(source, payload, keys):
    assert [event["dedup_key"] for event in events(source, payload)] == keys


def test_generic_alerts_without_labels_get_a_key_per_summary():
    found = events("generic", [{"title": "Disk full"}, {"title": "CPU hot"}, {"title": "Queue stuck"},
                               {"title": "Disk full", "severity": "critical"}, {"title": "Disk full", "status": "ok"}])
    keys = [event["dedup_key"] for event in found]
    assert len(set(keys[:3])) == 3
    assert keys[0] == keys[3] == keys[4]  # a repeat, with a severity, and the resolve without one
    assert found[4]["event_action"] == "resolve"


def test_a_summary_key_never_equals_a_labelled_alerts_key():
    told_by_summary = events("generic", [{"title": "Disk full"}, {"title": "CPU hot"}])
    labelled = events("generic", {"labels": {"summary": "Disk full"}})
    unlabelled = events("alertmanager", am_payload({**am_alert(), "labels": {}}))
    assert len({event["dedup_key"] for event in [*told_by_summary, *labelled, *unlabelled]}) == 4


def test_group_sends_one_trigger_while_any_alert_fires():
    routing = routes(default=everything(dedup="group"))
    found = events("alertmanager", fixture("alertmanager_firing_v4.json"), routing)
    assert [e["event_action"] for e in found] == ["trigger"]
    assert found[0]["dedup_key"] == hashlib.sha256(b"{}/{}:{}").hexdigest()
    mixed = am_payload(am_alert("resolved", {"alertname": "A", "i": "1"}), am_alert("firing", {"alertname": "A", "i": "2"}),
                       am_alert("resolved", {"alertname": "A", "i": "3"}))
    (only,) = events("alertmanager", mixed, routing)
    assert only["event_action"] == "trigger" and only["payload"]["custom_details"]["labels"]["i"] == "2"


def test_group_sends_one_resolve_when_all_have_resolved():
    routing = routes(default=everything(dedup="group"))
    payload = am_payload(am_alert("resolved", {"alertname": "A", "i": "1"}), am_alert("resolved", {"alertname": "A", "i": "2"}))
    (only,) = events("alertmanager", payload, routing)
    assert only == {"routing_key": KEY, "event_action": "resolve",
                    "dedup_key": hashlib.sha256(b'{}:{alertname="A"}').hexdigest()}


def test_group_collapse_is_per_route_and_leaves_alert_routes_alone():
    routing = routes(everything("grouped", dedup="group", **{"continue": True}), everything("per-alert"))
    payload = am_payload(am_alert(labels={"alertname": "A", "i": "1"}), am_alert(labels={"alertname": "A", "i": "2"}))
    found = planned("alertmanager", payload, routing)
    assert [p.route for p in found] == ["grouped", "per-alert", "per-alert"]


def test_group_without_a_group_key_falls_back_to_per_alert():
    routing = routes(default=everything(dedup="group"))
    found = events("generic", [{"summary": "a", "labels": {"x": "1"}}, {"summary": "b", "labels": {"x": "2"}}],
                   routing)
    assert len(found) == 2 and found[0]["dedup_key"] != found[1]["dedup_key"]


def test_template_dedup_key():
    routing = routes(default=everything(dedup="{{ labels.alertname }}/{{ labels.instance }}"))
    (event,) = events("alertmanager", fixture("alertmanager_0.25_firing_captured.json"), routing)
    assert event["dedup_key"] == "DiskFull/db1:9100"


def test_template_dedup_key_rendering_empty_falls_back_to_per_alert():
    plain = events("alertmanager", fixture("alertmanager_0.25_firing_captured.json"))[0]["dedup_key"]
    routing = routes(default=everything(dedup="{{ labels.no_such_label }}"))
    (event,) = events("alertmanager", fixture("alertmanager_0.25_firing_captured.json"), routing)
    assert event["dedup_key"] == plain


def test_dedup_keys_over_255_characters_are_hashed():
    long_label = "x" * 300
    routing = routes(default=everything(dedup="{{ labels.long }}"))
    (event,) = events("alertmanager", am_payload(am_alert(labels={"alertname": "A", "long": long_label})), routing)
    assert event["dedup_key"] == hashlib.sha256(long_label.encode()).hexdigest()
    sender_key = "k" * 256
    (generic,) = events("generic", {"summary": "s", "dedup_key": sender_key})
    assert generic["dedup_key"] == hashlib.sha256(sender_key.encode()).hexdigest()
    (fits,) = events("generic", {"summary": "s", "dedup_key": "k" * 255})
    assert fits["dedup_key"] == "k" * 255


# --- routing keys, severity, templates ---------------------------------------------------------

def test_routing_key_from_a_label():
    routing = routes(default={"name": "by-label", "routing_key_template": "{{ labels.pd_service_key }}"})
    payload = am_payload(am_alert(labels={"alertname": "A", "pd_service_key": OTHER_KEY}))
    (item,) = planned("alertmanager", payload, routing)
    assert item.routed and item.route == "by-label" and item.event["routing_key"] == OTHER_KEY


def test_routing_key_template_never_copies_the_key_into_the_event_body():
    routing = routes(default={"name": "by-label", "routing_key_template": "{{ labels.pd_service_key }}"})
    payload = am_payload(am_alert(labels={"alertname": "A", "pd_service_key": OTHER_KEY},
                                  annotations={"summary": f"key {OTHER_KEY}"}))
    (event,) = events("alertmanager", payload, routing)
    body = json.dumps({k: v for k, v in event.items() if k != "routing_key"})
    assert OTHER_KEY not in body
    assert event["payload"]["custom_details"]["labels"]["pd_service_key"] == "…" + OTHER_KEY[-4:]


def test_routing_key_template_rendering_empty_leaves_the_alert_unrouted():
    routing = routes(default={"name": "by-label", "routing_key_template": "{{ labels.pd_service_key }}"})
    (item,) = planned("alertmanager", am_payload(am_alert()), routing)
    assert not item.routed and item.route is None and item.event["routing_key"] == ""
    assert item.problem == "the routing key template of route 'by-label' rendered empty"
    assert item.event["payload"]["summary"] == "A"


def test_routing_key_template_rendering_garbage_is_unrouted_not_stored():
    routing = routes(default={"name": "by-label", "routing_key_template": "{{ labels.pd_service_key }}"})
    for bad in ("has spaces in it", "k" * 256):
        payload = am_payload(am_alert(labels={"alertname": "A", "pd_service_key": bad}))
        (item,) = planned("alertmanager", payload, routing)
        assert not item.routed and item.problem == \
            "the routing key template of route 'by-label' rendered an invalid routing key"
        assert bad not in json.dumps(item.event)


def test_unmatched_alert_without_default_is_unrouted_but_complete():
    routing = routes(everything("db", matchers=['service="db"']))
    found = planned("grafana", fixture("grafana_unified_firing_docs.json"), routing)
    assert [(p.route, p.routed, p.problem) for p in found] == \
        [(None, False, "no route matches and there is no default route")] * 2
    assert found[0].event["payload"]["summary"] == "High memory usage: This alert was triggered for zone us-1"


@pytest.mark.parametrize("label, expected", [("page", "critical"), ("ticket", "warning"), ("Info", "info"),
                                             ("P5", "info"), ("sev1", "critical"), ("bogus", "warning"),
                                             (None, "warning")])
def test_severity_in_the_event_follows_the_route(label, expected):
    routing = routes(default=everything(severity_map={"page": "critical", "ticket": "warning"},
                                        default_severity="warning"))
    labels = {"alertname": "A", **({"severity": label} if label else {})}
    (event,) = events("alertmanager", am_payload(am_alert(labels=labels)), routing)
    assert event["payload"]["severity"] == expected


def test_route_templates_and_custom_details():
    routing = routes(default=everything(
        templates={"summary": "[{{ labels.severity | upper }}] {{ labels.alertname }} on {{ labels.instance }}",
                   "source": "{{ labels.service }}.example.com", "component": "disk", "group": "storage",
                   "class": "capacity"},
        custom_details={"team": "{{ labels.service }}", "why": "{{ annotations.description }}"},
    ))
    (event,) = events("alertmanager", fixture("alertmanager_0.25_firing_captured.json"), routing)
    assert event["payload"] == {
        "summary": "[CRITICAL] DiskFull on db1:9100", "source": "db.example.com", "severity": "critical",
        "timestamp": "2026-11-26T21:15:51.615572+00:00", "component": "disk", "group": "storage",
        "class": "capacity", "custom_details": {"team": "db", "why": "Only 3% left"},
    }


DEFAULT_SUMMARY = "DiskFull: Disk almost full (db1:9100)"


@pytest.mark.parametrize("template, expected_class", [
    ("{{ 1 // (labels.missing | int) }}", "DiskFull"),  # ZeroDivisionError at run time: the default
    ("{{ labels.alertname.nope() }}", "DiskFull"),  # calling an undefined value: the default
    ("{{ annotations.no_such_annotation }}", None),  # empty: an optional field is left out, a summary is not
])
def test_failing_template_falls_back_to_the_default(template, expected_class):
    routing = routes(default=everything(templates={"summary": template, "class": template}))
    (event,) = events("alertmanager", fixture("alertmanager_0.25_firing_captured.json"), routing)
    assert event["payload"]["summary"] == DEFAULT_SUMMARY
    assert event["payload"].get("class") == expected_class


def test_templates_share_jinja_globals_but_not_each_others_variables():
    summary = "{% set ns = namespace(n=0) %}{% for _ in range(3) %}{% set ns.n = ns.n + 1 %}{% endfor %}" \
              "{% set source = 'leaked' %}{{ labels.alertname }} x{{ ns.n }}"
    routing = routes(default=everything(templates={"summary": summary, "class": "{{ source }}"}))
    (event,) = events("alertmanager", fixture("alertmanager_0.25_firing_captured.json"), routing)
    assert event["payload"]["summary"].endswith(" x3")  # namespace() and range() are there
    assert event["payload"]["class"] == "alertmanager"  # the summary's {% set source %} stayed in the summary


@pytest.mark.parametrize("template", [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ labels.__class__.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ self._TemplateReference__context }}",
])
def test_sandbox_escape_never_runs_and_the_default_is_used(template):
    compiled = compile_template(template)  # loading is allowed; rendering must refuse
    assert render(compiled, {"labels": {"alertname": "A"}}) is None
    routing = routes(default=everything(templates={"summary": template, "source": template}))
    (event,) = events("alertmanager", fixture("alertmanager_0.25_firing_captured.json"), routing)
    assert event["payload"]["summary"] == DEFAULT_SUMMARY and event["payload"]["source"] == "db1:9100"


@pytest.mark.parametrize("template", [
    "{{ labels.team }}", "{{ labels.missing }}", "{{ labels.missing.deeper }}", "{{ labels.items() | list }}",
    "{{ labels.get('team') }}", "{{ labels.keys }}", "{{ labels.__class__ }}", "{{ labels._private }}",
    "{{ labels | attr('team') }}", "{{ labels | attr(5) }}", "{{ annotations.summary | default('none') }}",
    "{{ 'text'.upper() }}", "{{ alert.labels.team ~ '/' ~ alert.status }}",
])
def test_label_lookups_render_as_jinja_sandbox_renders_them(template):
    context = alert_context(Alert(source="alertmanager", status="firing", labels={"team": "db", "items": "x",
                                                                                 "_private": "p"}))
    reference = Sandbox.getattr  # the relay's shortcut for dicts, against Jinja's own lookup
    try:
        Sandbox.getattr = ImmutableSandboxedEnvironment.getattr
        expected = render(compile_template(template), context)
    finally:
        Sandbox.getattr = reference
    assert render(compile_template(template), context) == expected


# --- odd alerts still page ---------------------------------------------------------------------

def test_alert_without_annotations_and_with_empty_generator_url(pd, routing_key):
    payload = am_payload(am_alert(labels={"alertname": "NodeDown", "instance": "n1"}, annotations=None,
                                  generatorURL=""))
    payload["alerts"][0]["annotations"] = None
    (event,) = events("alertmanager", payload)
    assert load_event(event) == event
    assert event["payload"]["summary"] == "NodeDown (n1)" and event["links"] == []
    assert event["payload"]["custom_details"]["annotations"] == {}
    assert pagerduty_accepts(pd, event, routing_key).status_code == 202


def test_unicode_labels(pd, routing_key):
    labels = {"alertname": "Überhitzung 🔥", "instance": "サーバー-1", "team": "équipe"}
    payload = am_payload(am_alert(labels=labels, annotations={"summary": "Température élevée ≥ 90 °C"}))
    (event,) = events("alertmanager", payload)
    assert load_event(event) == event
    assert event["payload"]["summary"] == "Überhitzung 🔥: Température élevée ≥ 90 °C (サーバー-1)"
    assert event["payload"]["custom_details"]["labels"] == labels
    response = pagerduty_accepts(pd, event, routing_key)
    assert response.status_code == 202 and pd.alerts()[0]["summary"] == event["payload"]["summary"]


def test_five_thousand_character_summary_is_cut_to_1024():
    long_summary = "disk " * 1000
    (event,) = events("alertmanager", am_payload(am_alert(annotations={"summary": long_summary})))
    summary = event["payload"]["summary"]
    assert len(summary) == 1024 and summary.endswith("…") and summary.startswith("A: disk disk")
    assert event["payload"]["custom_details"]["annotations"]["summary"] == long_summary
    assert load_event(event) == event


MULTILINE_600_KB = "log line with détails\n" * (600 * 1024 // 22)


def test_600_kb_description_is_trimmed_under_512_kb(pd, routing_key):
    payload = am_payload(am_alert(annotations={"summary": "Huge", "description": MULTILINE_600_KB}))
    (event,) = events("alertmanager", payload)
    assert event_size(event) < EVENT_MAX_BYTES
    assert event["payload"]["custom_details"]["relay_note"].startswith("custom_details trimmed by relay")
    assert event["payload"]["summary"] == "A: Huge" and event["links"][0]["text"] == "Source"
    assert load_event(event) == event
    assert pagerduty_accepts(pd, event, routing_key).status_code == 202


def test_600_kb_single_line_description_keeps_the_small_details():
    payload = am_payload(am_alert(annotations={"summary": "Huge", "description": "y" * (600 * 1024)}))
    details = events("alertmanager", payload)[0]["payload"]["custom_details"]
    assert details["labels"] == {"alertname": "A"} and details["firing_since"] == "2024-05-01T10:00:00.123456789Z"
    assert details["annotations"]["summary"] == "Huge"
    assert details["annotations"]["description"].startswith("yyy") and details["annotations"]["description"].endswith("…")


def test_600_kb_multiline_description_keeps_the_small_details():
    payload = am_payload(am_alert(annotations={"summary": "Huge", "description": MULTILINE_600_KB}))
    details = events("alertmanager", payload)[0]["payload"]["custom_details"]
    assert details["labels"] == {"alertname": "A"} and details["annotations"]["summary"] == "Huge"
    assert details["annotations"]["description"].startswith("log line with détails\n")


def test_600_kb_description_without_summary_becomes_a_trimmed_summary():
    description = "x" * (600 * 1024)
    (event,) = events("alertmanager", am_payload(am_alert(annotations={"description": description})))
    assert len(event["payload"]["summary"]) == 1024 and event_size(event) < EVENT_MAX_BYTES
    assert load_event(event) == event


def test_every_fixture_yields_valid_events():
    for source, name in [("alertmanager", "alertmanager_0.25_firing_captured.json"),
                         ("alertmanager", "alertmanager_0.25_resolved_captured.json"),
                         ("alertmanager", "alertmanager_firing_v4.json"),
                         ("alertmanager", "alertmanager_resolved_v4.json"),
                         ("grafana", "grafana_unified_firing_docs.json"),
                         ("grafana", "grafana_unified_firing_v11_values_image.json"),
                         ("grafana", "grafana_unified_resolved.json")]:
        payload = fixture(name)
        found = events(source, copy.deepcopy(payload))
        assert len(found) == len(payload["alerts"]), name
        for event in found:
            assert load_event(event) == event, name


@pytest.mark.parametrize("item, summary", [
    ({"summary": "Nightly backup failed", "labels": {"host": "backup-1"}}, "Nightly backup failed (backup-1)"),
    ({"summary": "Nightly backup failed", "labels": {"alertname": "Backup"}}, "Backup: Nightly backup failed"),
    ({"labels": {"alertname": "Backup"}}, "Backup"),
    ({"labels": {"host": "backup-1"}}, "Alert (backup-1)"),
    ({"dedup_key": "backup"}, "Alert"),
])
def test_default_summary_of_generic_alerts(item, summary):
    (event,) = events("generic", item)
    assert event["payload"]["summary"] == summary


def test_generic_alert_details_are_its_other_fields_without_empty_times():
    (event,) = events("generic", {"summary": "Backup failed", "status": "problem", "host": "b1", "took_s": 5400})
    assert event["payload"]["custom_details"] == {"labels": {}, "annotations": {"summary": "Backup failed"},
                                                  "host": "b1", "took_s": 5400}


def test_a_fixed_routing_key_is_not_searched_for_in_alert_text():
    payload = fixture("alertmanager_0.25_firing_captured.json")
    payload["alerts"][0]["labels"]["component"] = KEY
    (event,) = events("alertmanager", payload)
    assert event["routing_key"] == KEY and event["payload"]["component"] == KEY


# --- every field fitted to PagerDuty's limits -------------------------------------------------------

def test_over_long_generator_and_external_urls_are_dropped_and_pagerduty_takes_the_event(pd, routing_key):
    huge = "http://prometheus:9090/graph?g0.expr=" + "x" * 600_000
    payload = {**am_payload(am_alert(generatorURL=huge, annotations={"runbook_url": "https://wiki.example/A"})),
               "externalURL": huge}
    (event,) = events("alertmanager", payload)
    assert event["links"] == [{"href": "https://wiki.example/A", "text": "Runbook"}] and "client_url" not in event
    assert [note.split(":")[0] for note in event["payload"]["custom_details"]["relay_dropped"]] == [
        "links[0] (Source)", "client_url"]
    assert event["payload"]["source"] == "prometheus"  # the sender's host, never its URL
    assert event_size(event) < 10_000
    assert pagerduty_accepts(pd, event, routing_key).status_code == 202


def test_a_refused_link_after_a_dropped_one_costs_only_itself_and_the_drop_is_still_named():
    huge = "http://prometheus:9090/graph?g0.expr=" + "x" * 9_000
    payload = am_payload(am_alert(generatorURL=huge, annotations={"runbook_url": "http://wiki_1/runbooks/A"}))
    (event,) = events("alertmanager", payload)  # the schema counts links after the drop: index 0 is the runbook
    assert event["links"] == []
    assert event["payload"]["custom_details"]["relay_dropped"] == [
        "links[0] (Source): a URL of 9037 characters, over the 8000 sent to PagerDuty"]


# --- a templated routing key is masked in every event of its alert (Hardening 10) --------------

LABEL_ROUTE = {"name": "by-label", "routing_key_template": "{{ labels.pd_service_key }}", "continue": True}


@pytest.mark.parametrize("order", [("by-label", "team"), ("team", "by-label")])
def test_a_templated_routing_key_is_masked_in_the_events_of_every_route(order):
    raw = {"by-label": LABEL_ROUTE, "team": everything("team", **{"continue": True})}
    routing = routes(*[raw[name] for name in order])
    payload = am_payload(am_alert(labels={"alertname": "A", "pd_service_key": OTHER_KEY},
                                  annotations={"summary": f"key {OTHER_KEY}"}))
    found = planned("alertmanager", payload, routing)
    keys = {"by-label": OTHER_KEY, "team": KEY}
    assert [(p.route, p.event["routing_key"]) for p in found] == [(name, keys[name]) for name in order]
    for item in found:
        body = {k: v for k, v in item.event.items() if k != "routing_key"}
        assert OTHER_KEY not in json.dumps(body), item.route
        assert OTHER_KEY not in json.dumps(item.alert.as_dict()), item.route  # the alert stored with the row
        assert item.event["payload"]["custom_details"]["labels"]["pd_service_key"] == "…" + OTHER_KEY[-4:]


def test_an_invalid_templated_key_is_masked_in_the_other_routes_events_too():
    routing = routes(LABEL_ROUTE, everything("team"))
    bad = "not a key but a secret"
    payload = am_payload(am_alert(labels={"alertname": "A", "pd_service_key": bad}))
    found = planned("alertmanager", payload, routing)
    assert [(p.route, p.routed) for p in found] == [(None, False), ("team", True)]
    assert all(bad not in json.dumps(p.event) and bad not in json.dumps(p.alert.as_dict()) for p in found)
