"""The outbound event schema: PagerDuty's rules, and trimming instead of refusing."""
import json
import time
from pathlib import Path

import pytest
from marshmallow import ValidationError

from relay.pagerduty import event as event_module
from relay.pagerduty.event import (
    DROPPED_KEY,
    EVENT_MAX_BYTES,
    FIELD_MAX,
    LINKS_NOTE,
    SUMMARY_MAX,
    TRIM_NOTE,
    URL_MAX,
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


# --- every field fitted, in time that grows with the event ----------------------------------------

def test_the_event_limit_is_512000_bytes_as_alertmanager_reads_it():
    event = load_event(trigger(custom_details={"description": "d" * 515_000}))  # under 512 KiB, over 512,000
    assert EVENT_MAX_BYTES == 512_000
    assert 511_000 < event_size(event) <= EVENT_MAX_BYTES
    assert event["payload"]["custom_details"]["relay_note"] == TRIM_NOTE


def test_20000_short_labels_are_fitted_in_linear_time(monkeypatch):
    labels = {f"label_{index:05}": f"value-{index:05}-" + "v" * 16 for index in range(20_000)}
    whole_event_encodings = []
    measure = event_module.event_size
    monkeypatch.setattr(event_module, "event_size", lambda e: whole_event_encodings.append(1) or measure(e))
    started = time.process_time()
    event = load_event(trigger(custom_details={"labels": labels}))
    assert time.process_time() - started < 1.0  # 13.7 s when each cut encoded the whole event again
    assert len(whole_event_encodings) <= 4
    kept = event["payload"]["custom_details"]["labels"]
    assert measure(event) <= EVENT_MAX_BYTES and list(kept) == list(labels)  # every name kept, values cut
    assert sum(value == labels[name] for name, value in kept.items()) > 1_000


def test_over_long_urls_are_dropped_whole_and_named_in_the_details():
    long_url = "https://grafana.example/d/x?var=" + "a" * 600_000
    event = load_event({**trigger(custom_details={"team": "db"}), "client_url": long_url,
                        "links": [{"href": long_url, "text": "Source"}, {"href": "https://runbook.example/db"}],
                        "images": [{"src": long_url}, {"src": "https://img.example/p.png", "href": long_url}]})
    assert event["links"] == [{"href": "https://runbook.example/db"}] and "client_url" not in event
    assert event["images"] == [{"src": "https://img.example/p.png"}]
    assert event["payload"]["custom_details"] == {"team": "db", DROPPED_KEY: [
        f"images[0].src: a URL of {len(long_url)} characters, over the {URL_MAX} sent to PagerDuty",
        f"images[1].href: a URL of {len(long_url)} characters, over the {URL_MAX} sent to PagerDuty",
        f"links[0] (Source): a URL of {len(long_url)} characters, over the {URL_MAX} sent to PagerDuty",
        f"client_url: a URL of {len(long_url)} characters, over the {URL_MAX} sent to PagerDuty",
    ]}
    assert event_size(event) < 2_000


def test_a_url_at_the_limit_is_kept_whole():
    url = "https://grafana.example/d/x?var=" + "a" * (URL_MAX - 32)
    assert len(url) == URL_MAX
    assert load_event({**trigger(), "links": [{"href": url}], "client_url": url})["links"] == [{"href": url}]


def test_every_text_field_is_cut_to_its_limit():
    text = "t" * 5_000
    event = load_event({**trigger(source=text, component=text, group=text, **{"class": text}), "client": text,
                        "links": [{"href": "https://a.example", "text": text}],
                        "images": [{"src": "https://a.example/i.png", "alt": text}]})
    payload = event["payload"]
    fitted = [payload["source"], payload["component"], payload["group"], payload["class"], event["client"],
              event["links"][0]["text"], event["images"][0]["alt"]]
    assert [len(value) for value in fitted] == [FIELD_MAX] * 7 and all(v.endswith("…") for v in fitted)


def test_links_too_many_to_fit_are_dropped_as_a_last_resort():
    links = [{"href": f"https://a.example/{index}?" + "q" * 7_000} for index in range(100)]
    event = load_event({**trigger(custom_details={"team": "db"}), "links": links})
    assert event_size(event) <= EVENT_MAX_BYTES and "links" not in event
    assert event["payload"]["custom_details"] == {"relay_note": TRIM_NOTE, DROPPED_KEY: [LINKS_NOTE]}
