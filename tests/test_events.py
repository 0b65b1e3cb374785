"""The outbound event schema: PagerDuty's rules, and trimming instead of refusing."""
import json
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from marshmallow import Schema, ValidationError, fields

from relay.intake.mapping import trigger_event
from relay.intake.render import alert_context
from relay.intake.routing import load_routing
from relay.intake.sources import get_source
from relay.pagerduty.event import (
    EVENT_MAX_BYTES,
    SUMMARY_MAX,
    TRIM_NOTE,
    LinkSchema,
    encode,
    event_schema,
    event_size,
    load_event,
    parse_iso8601,
    quick_load,
)
from tests.helpers import mutated

FIXTURES = Path(__file__).parent / "fixtures"
KEY = "0123456789abcdef0123456789abcdef"


def trigger(**payload):
    base = {"summary": "CPU high on web-1", "source": "web-1", "severity": "warning"}
    return {"routing_key": KEY, "event_action": "trigger", "payload": {**base, **payload}}


def test_pagerduty_docs_example_loads_unchanged():
    example = json.loads((FIXTURES / "pagerduty_events_v2_trigger_example.json").read_text())
    assert load_event(example) == example


def test_resolve_example_loads():
    example = json.loads((FIXTURES / "pagerduty_events_v2_resolve_example.json").read_text())
    assert load_event(example)["event_action"] == "resolve"


@pytest.mark.parametrize("event, field", [
    ({"event_action": "trigger", "payload": trigger()["payload"]}, "routing_key"),
    ({**trigger(), "event_action": "open"}, "event_action"),
    (trigger(severity="high"), "payload"),
    (trigger(severity="Critical"), "payload"),
    (trigger(summary=""), "payload"),
    (trigger(timestamp="yesterday"), "payload"),
    ({"routing_key": KEY, "event_action": "trigger"}, "payload"),
    ({"routing_key": KEY, "event_action": "resolve"}, "dedup_key"),
    ({**trigger(), "dedup_key": "k" * 256}, "dedup_key"),
    ({**trigger(), "links": [{"text": "no href"}]}, "links"),
    ({**trigger(), "client_url": "ftp://x"}, "client_url"),
    (trigger(custom_details=["not", "an", "object"]), "payload"),
])
def test_invalid_event_names_the_field(event, field):
    with pytest.raises(ValidationError) as info:
        load_event(event)
    assert field in info.value.messages


def test_dedup_key_of_255_characters_is_kept():
    assert load_event({**trigger(), "dedup_key": "k" * 255})["dedup_key"] == "k" * 255


@pytest.mark.parametrize("stamp", ["2015-07-17T08:42:58.315+0000", "2024-01-01T00:00:00Z",
                                   "2024-01-01T00:00:00.123456789Z"[:26] + "Z"])
def test_iso8601_timestamps_are_accepted(stamp):
    assert load_event(trigger(timestamp=stamp))["payload"]["timestamp"] == stamp


def test_long_summary_is_truncated_with_ellipsis_not_refused():
    summary = load_event(trigger(summary="x" * 5000))["payload"]["summary"]
    assert len(summary) == SUMMARY_MAX and summary.endswith("…")


def test_summary_at_the_limit_is_untouched():
    assert load_event(trigger(summary="y" * SUMMARY_MAX))["payload"]["summary"] == "y" * SUMMARY_MAX


def test_non_https_images_are_dropped_not_refused():
    event = {**trigger(), "images": [{"src": "http://insecure/x.png"}, {"src": "https://ok/y.png"}]}
    assert load_event(event)["images"] == [{"src": "https://ok/y.png"}]


def test_follow_up_events_drop_payload():
    event = {"routing_key": KEY, "event_action": "acknowledge", "dedup_key": "d", "payload": trigger()["payload"]}
    assert "payload" not in load_event(event)


def test_oversized_event_is_trimmed_under_512_kb_keeping_small_details():
    event = load_event(trigger(custom_details={"description": "d" * 600_000, "team": "db", "é": "é" * 200_000}))
    details = event["payload"]["custom_details"]
    assert event_size(event) < EVENT_MAX_BYTES
    assert details["team"] == "db"
    assert details["description"].endswith("…") or details["description"] == "…"
    assert details["relay_note"] == TRIM_NOTE
    json.dumps(event)  # still serializable after cutting multibyte text


def test_event_under_the_limit_keeps_its_details():
    details = {"description": "d" * 400_000}
    assert load_event(trigger(custom_details=details))["payload"]["custom_details"] == details


@pytest.mark.parametrize("text, ok", [
    ("2024-05-01T12:00:00.123456789Z", True), ("2024-05-01T12:00:00Z", True), ("2024-05-01", True),
    ("2024-13-01T00:00:00Z", False), ("", False), (None, False), ("12:00", False),
])
def test_parse_iso8601_accepts_go_nanoseconds(text, ok):
    assert (parse_iso8601(text) is not None) == ok


def test_trimming_reaches_nested_text_and_counts_json_escapes():
    details = {"labels": {"team": "db"}, "annotations": {"description": 'quote " and é\n' * 60_000}}
    event = load_event(trigger(custom_details=details))
    kept = event["payload"]["custom_details"]
    assert event_size(event) < EVENT_MAX_BYTES
    assert kept["labels"] == {"team": "db"} and kept["annotations"]["description"].endswith("…")
    assert len(kept["annotations"]["description"]) > 100_000  # cut to fit, not emptied


class NestedLinks(Schema):
    """links[] as marshmallow loads it without LinkList's one-pass check: the reference for its answers."""

    links = fields.List(fields.Nested(LinkSchema))


@pytest.mark.parametrize("links", [
    [], [{"href": "http://a"}], [{"href": "http://a", "text": "t", "extra": 1}], [{"href": "ftp://a"}],
    [{"href": "http://a b"}], [{"text": "t"}], ["x"], [{"href": None}], [{"href": 5}],
    [{"href": "http://a", "text": None}], [{"href": "http://a", "text": 3}], "not a list", None,
    [{"href": "https://x.example/p?q=1#f", "text": "ok"}, {"href": "javascript:alert(1)"}],
])
def test_links_load_and_fail_exactly_as_nested_link_schemas_do(links):
    def outcome(load):
        try:
            return load().get("links")
        except ValidationError as exc:
            return exc.messages
    expected = outcome(lambda: NestedLinks().load({"links": links}))
    assert outcome(lambda: load_event({**trigger(), "links": links})) == expected


# quick_load against the schema: every event it answers for must get the schema's own answer, byte for byte.
_JUNK = st.one_of(st.none(), st.integers(), st.just(""), st.lists(st.integers(), max_size=1), st.text(max_size=3),
                  st.sampled_from(["ftp://a", "http://a b", "javascript:alert(1)", "yesterday", "k" * 256]))
_TEXT = st.one_of(st.text(min_size=1, max_size=4), st.just("x" * (SUMMARY_MAX + 5)))
_URL = st.sampled_from(["http://a", "https://x.example/p?q=1#f", "http://10.0.0.1:9090/graph?g0.expr=up"])
_PAYLOAD = st.fixed_dictionaries(
    {"summary": _TEXT, "source": _TEXT, "severity": st.sampled_from(["critical", "error", "warning", "info"])},
    optional={"timestamp": st.sampled_from(["2026-11-27T10:00:00Z", "2026-11-27T10:00:00.123456789+01:00"]),
              "component": _TEXT, "group": _TEXT, "class": _TEXT,
              "custom_details": st.dictionaries(st.text(max_size=3), st.one_of(_TEXT, st.integers()), max_size=3)})
_EVENT = st.fixed_dictionaries(
    {"routing_key": _TEXT, "event_action": st.sampled_from(["trigger", "resolve", "acknowledge"]),
     "payload": _PAYLOAD},
    optional={"dedup_key": _TEXT, "client": _TEXT, "client_url": _URL, "links": st.lists(
        st.fixed_dictionaries({"href": _URL}, optional={"text": _TEXT}), max_size=3)})
_FIELDS = ["routing_key", "event_action", "dedup_key", "payload", "links", "client", "client_url", "images", "extra",
           "payload.summary", "payload.source", "payload.severity", "payload.timestamp", "payload.class",
           "payload.custom_details", "payload.extra"]


@st.composite
def _events(draw):
    """A well-formed event, then up to two fields removed or replaced by junk."""
    return mutated(draw, draw(_EVENT), _FIELDS, _JUNK)


@settings(max_examples=600, deadline=None)
@given(_events())
@example({**trigger(timestamp="yesterday")})
@example({**trigger(summary="x" * (SUMMARY_MAX + 5), severity="info")})
@example({"routing_key": KEY, "event_action": "resolve", "dedup_key": "k", "payload": trigger()["payload"]})
@example({"routing_key": KEY, "event_action": "resolve", "dedup_key": "k" * 256})
@example({**trigger(), "client_url": "ftp://x"})
def test_quick_load_answers_exactly_as_the_schema_or_not_at_all(event):
    quick = quick_load(event)
    if quick is not None:
        assert encode(quick) == encode(event_schema.load(event))


@pytest.mark.parametrize("source, fixture", [("alertmanager", "alertmanager_0.25_firing_captured.json"),
                                             ("alertmanager", "captured_e2e_prometheus_firing.json"),
                                             ("grafana", "grafana_unified_firing_docs.json")])
def test_quick_load_takes_the_events_the_relay_maps(source, fixture):
    route = load_routing([], {"name": "default", "routing_key": KEY}, environ={}).default
    for alert in get_source(source).to_alerts(json.loads((FIXTURES / fixture).read_text()), None):
        built = trigger_event(alert, route, KEY, "k", alert_context(alert))
        assert quick_load(built) is not None and encode(quick_load(built)) == encode(event_schema.load(built))
    assert quick_load({"routing_key": KEY, "event_action": "resolve", "dedup_key": "k"}) is not None
