"""Tests for the generic JSON source: dotted paths, status words, labels and details."""
import inspect

import pytest
from marshmallow import ValidationError

from relay.intake.alert import FIRING, RESOLVED, Alert
from relay.intake.sources import SOURCES, generic, get_source

# The settings a config would give for a sender that names things its own way.
CUSTOM = generic.SETTINGS_SCHEMA.load({
    "summary": "title",
    "status": "state",
    "severity": "level",
    "dedup_key": "id",
    "labels": "tags",
    "details": "data",
})


def test_registry_lists_every_source_and_nothing_else():
    assert get_source("generic") is generic
    assert set(SOURCES) == {"alertmanager", "grafana", "generic", "pagerduty"}
    assert all(module.NAME == name for name, module in SOURCES.items())
    assert get_source("nagios") is None
    assert list(inspect.signature(generic.to_alerts).parameters) == ["payload", "settings"]


def test_default_settings_map_a_plain_object():
    payload = {
        "summary": "Disk almost full on db1",
        "status": "resolved",
        "severity": "critical",
        "labels": {"service": "db", "host": "db1"},
        "dedup_key": "disk-db1",
        "runbook": "https://runbooks.example.com/disk",
    }
    (alert,) = generic.to_alerts(payload)
    assert alert == Alert(
        source="generic",
        status=RESOLVED,
        labels={"service": "db", "host": "db1", "severity": "critical"},
        annotations={"summary": "Disk almost full on db1"},
        fingerprint="disk-db1",
        dedup_key="disk-db1",
        details={"runbook": "https://runbooks.example.com/disk"},  # what no path took
        derived_labels=("severity",),  # read by the severity path: no part of the alert's identity
    )


def test_missing_status_means_firing_and_missing_fields_stay_empty():
    (alert,) = generic.to_alerts({"title": "Disk full", "host": "db1"})
    assert alert.status == FIRING
    assert (alert.labels, alert.annotations, alert.dedup_key) == ({}, {"summary": "Disk full"}, None)
    assert alert.details == {"host": "db1"}


def test_custom_settings_read_the_configured_paths():
    payload = {
        "title": "Queue backlog",
        "state": "OK",
        "level": "warning",
        "id": 4711,
        "tags": {"queue": "billing", "replicas": 3, "canary": False},
        "data": {"depth": 12000},
        "ignored": "yes",
    }
    (alert,) = generic.to_alerts(payload, CUSTOM)
    assert alert.status == RESOLVED
    assert alert.annotations == {"summary": "Queue backlog"}
    assert alert.labels == {"queue": "billing", "replicas": "3", "canary": "false", "severity": "warning"}
    assert alert.dedup_key == "4711"
    assert alert.details == {"depth": 12000}


def test_dotted_paths_reach_into_objects_and_arrays():
    settings = generic.SETTINGS_SCHEMA.load({"summary": "alert.messages.1.text", "status": "alert.state",
                                             "labels": "meta.labels"})
    payload = {
        "alert": {"state": "triggered", "messages": [{"text": "first"}, {"text": "second"}]},
        "meta": {"labels": {"env": "prod"}},
    }
    (alert,) = generic.to_alerts(payload, settings)
    assert alert.annotations["summary"] == "second"
    assert alert.status == FIRING
    assert alert.labels == {"env": "prod"}
    assert alert.details == payload  # nested paths take no top-level field


def test_first_path_found_wins():
    (alert,) = generic.to_alerts({"title": "from title", "message": "from message"})
    assert alert.annotations["summary"] == "from title"
    assert alert.details == {"message": "from message"}


@pytest.mark.parametrize(
    "word, status",
    [("firing", FIRING), ("Alerting", FIRING), (" TRIGGERED ", FIRING), ("critical", FIRING),
     ("resolved", RESOLVED), ("OK", RESOLVED), ("closed", RESOLVED), ("recovered", RESOLVED)],
)
def test_status_words_are_case_insensitive(word, status):
    assert generic.to_alerts({"status": word, "summary": "x"})[0].status == status


def test_configured_status_words_replace_the_defaults():
    settings = generic.SETTINGS_SCHEMA.load({"firing_values": ["1"], "resolved_values": ["0"]})
    alerts = generic.to_alerts([{"status": 1, "title": "x"}, {"status": 0, "title": "x"}], settings)
    assert [a.status for a in alerts] == [FIRING, RESOLVED]
    with pytest.raises(ValidationError) as err:
        generic.to_alerts({"status": "firing"}, settings)
    assert err.value.messages == {"status": ["Unknown status 'firing': expected one of 1 (firing) or 0 (resolved)."]}


def test_unknown_status_is_named_with_its_path():
    with pytest.raises(ValidationError) as err:
        generic.to_alerts({"title": "x", "state": "paused"}, CUSTOM)
    (message,) = err.value.messages["state"]
    assert message.startswith("Unknown status 'paused': expected one of ")
    assert "resolved" in message and "firing" in message


def test_severity_label_already_present_wins():
    (alert,) = generic.to_alerts({"severity": "critical", "labels": {"severity": "info"}})
    assert alert.labels == {"severity": "info"} and alert.derived_labels == ()  # the sender's: part of its identity


def test_label_values_become_strings_and_nulls_are_dropped():
    labels = {"n": 1, "f": 2.5, "t": True, "none": None, "obj": {"b": 1, "a": [1, "x"]}, "s": "ü"}
    (alert,) = generic.to_alerts({"labels": labels})
    assert alert.labels == {"n": "1", "f": "2.5", "t": "true", "obj": '{"a":[1,"x"],"b":1}', "s": "ü"}


def test_details_path_that_is_not_an_object_is_wrapped():
    (alert,) = generic.to_alerts({"summary": "x", "data": [1, 2]}, generic.SETTINGS_SCHEMA.load({"details": "data"}))
    assert alert.details == {"data": [1, 2]}


def test_a_disabled_path_leaves_the_field_in_details():
    (alert,) = generic.to_alerts({"summary": "x", "severity": "critical"},
                                 generic.SETTINGS_SCHEMA.load({"severity": None}))
    assert alert.labels == {}
    assert alert.details == {"severity": "critical"}


def test_an_array_gives_one_alert_per_object():
    alerts = generic.to_alerts([{"summary": "a"}, {"summary": "b", "status": "ok"}])
    assert [(a.annotations["summary"], a.status) for a in alerts] == [("a", FIRING), ("b", RESOLVED)]
    assert generic.to_alerts([]) == []


def test_errors_in_an_array_are_keyed_by_index():
    with pytest.raises(ValidationError) as err:
        generic.to_alerts([{"status": "ok", "summary": "x"}, 42, {"status": "paused", "labels": ["a"]}])
    messages = err.value.messages
    assert set(messages) == {1, 2}
    assert messages[1] == ["Must be a JSON object, not a number."]
    assert messages[2]["status"][0].startswith("Unknown status 'paused'")
    assert messages[2]["labels"] == ["Labels must be an object of names to values, not an array."]


@pytest.mark.parametrize(
    "payload, kind",
    [("firing", "a string"), (3, "a number"), (None, "null"), (True, "a boolean")],
)
def test_payload_that_is_not_an_object_or_array(payload, kind):
    with pytest.raises(ValidationError) as err:
        generic.to_alerts(payload)
    assert err.value.messages == {
        "_schema": [f"Payload must be a JSON object or an array of objects, not {kind}."]
    }


def test_unicode_and_long_summary_are_kept():
    summary = "ß" * 5000
    (alert,) = generic.to_alerts({"summary": summary, "labels": {"команда": "базы"}})
    assert alert.annotations["summary"] == summary
    assert alert.labels == {"команда": "базы"}


@pytest.mark.parametrize(
    "settings, field",
    [
        ({"sumary": "title"}, "sumary"),
        ({"summary": 5}, "summary"),
        ({"summary": ["title", ""]}, "summary"),
        ({"firing_values": []}, "firing_values"),
        ({"firing_values": ["ok"]}, "resolved_values"),  # "ok" is a default resolved word
    ],
)
def test_bad_settings_are_refused(settings, field):
    with pytest.raises(ValidationError) as err:
        generic.SETTINGS_SCHEMA.load(settings)
    assert field in err.value.messages


# --- what tells a generic alert apart (issue 13, item 2) -----------------------------------------------------

def test_without_labels_an_alert_is_told_apart_by_its_summary_not_its_severity():
    disk, cpu, disk_again, disk_resolved = generic.to_alerts([
        {"title": "Disk full on db1", "severity": "critical"},
        {"title": "CPU hot on db1", "severity": "critical"},
        {"title": " Disk full on db1", "severity": "warning"},
        {"title": "Disk full on db1", "status": "resolved"},
    ])
    assert (disk.identity, cpu.identity) == ("Disk full on db1", "CPU hot on db1")
    assert disk_again.identity == disk_resolved.identity == disk.identity
    assert disk.labels == {"severity": "critical"}  # still a label for routes; only no identity


def test_an_alert_with_labels_or_only_a_dedup_key_has_no_other_identity():
    labelled, keyed = generic.to_alerts([{"title": "Disk full", "labels": {"host": "db1"}},
                                         {"dedup_key": "disk-db1"}])
    assert (labelled.identity, keyed.identity) == (None, None)


@pytest.mark.parametrize("item", [{}, {"host": "db1"}, {"title": "  ", "labels": {}}, {"labels": {"host": None}},
                                  {"severity": "critical", "dedup_key": ""}])
def test_an_alert_nothing_tells_apart_is_refused_naming_where_it_looked(item):
    with pytest.raises(ValidationError) as err:
        generic.to_alerts(item)
    assert err.value.messages == [
        "Nothing tells this alert apart from others: send labels (at labels), a dedup key (at dedup_key, "
        "fingerprint) or a summary (at summary, title, message); GENERIC_WEBHOOK sets where these are read."]


def test_the_refusal_names_the_configured_paths_and_those_turned_off():
    settings = generic.SETTINGS_SCHEMA.load({"summary": ["alert.text", "name"], "labels": None, "dedup_key": "id"})
    with pytest.raises(ValidationError) as err:
        generic.to_alerts([{"name": "ok"}, {"labels": {"host": "db1"}}], settings)
    assert list(err.value.messages) == [1]
    (message,) = err.value.messages[1]
    assert ("send labels (at no path: GENERIC_WEBHOOK turns it off), a dedup key (at id) or a summary "
            "(at alert.text, name)") in message
