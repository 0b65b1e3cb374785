"""The outbound event schema: PagerDuty's rules, and trimming instead of refusing."""
import json
from pathlib import Path

import pytest
from marshmallow import ValidationError

from relay.pagerduty.event import (
    EVENT_MAX_BYTES,
    SUMMARY_MAX,
    TRIM_NOTE,
    event_size,
    load_event,
    parse_iso8601,
)

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


def test_links_keep_href_and_text_only():
    links = [{"href": "http://a", "text": "t", "extra": 1}, {"href": "https://x.example/p?q=1#f"}]
    assert load_event({**trigger(), "links": links})["links"] == [{"href": "http://a", "text": "t"},
                                                                   {"href": "https://x.example/p?q=1#f"}]


@pytest.mark.parametrize("links, messages", [
    ([{"href": "ftp://a"}], {0: {"href": ["Not a valid URL."]}}),
    ([{"href": "http://a"}, {"href": "javascript:alert(1)"}], {1: {"href": ["Not a valid URL."]}}),
    ([{"text": "t"}], {0: {"href": ["Missing data for required field."]}}),
    ("not a list", ["Not a valid list."]),
])
def test_bad_links_are_named_by_index(links, messages):
    with pytest.raises(ValidationError) as info:
        load_event({**trigger(), "links": links})
    assert info.value.messages == {"links": messages}


def test_a_remembered_url_check_still_refuses_what_never_passed():
    for _ in range(2):
        assert load_event({**trigger(), "client_url": "http://grafana:3000/d/x"})["client_url"]
        with pytest.raises(ValidationError) as info:
            load_event({**trigger(), "client_url": "http://grafana:3000/d/x y"})
        assert info.value.messages == {"client_url": ["Not a valid URL."]}
