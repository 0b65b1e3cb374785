"""Real senders' bodies (tests/upstream/, MANIFEST.md says where each comes from) replayed through POST
/webhooks/<source>, and the pages they make compared with tests/golden/pages.txt.

The golden file is what an on-call engineer reads: each event's action, severity, source, group and summary. A change
in what pages say shows as a diff of it. After a deliberate change, regenerate it and review the diff line by line:

    UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q -m "not system" tests/test_upstream_payloads.py -k golden
"""
import json
import os
from pathlib import Path

import pytest

from relay.store import states
from relay.store.models import IncidentLog, db

UPSTREAM = Path(__file__).parent / "upstream"
GOLDEN = Path(__file__).parent / "golden" / "pages.txt"
ACCEPTED = sorted(UPSTREAM.glob("*.json"))
REFUSED = sorted((UPSTREAM / "refused").glob("*.json"))
DEFAULT_ROUTE = {"name": "default", "routing_key": "defa0000000000000000000000000f17"}
TEST_NOTIFICATION = "grafana-pytorch-test-notification.json"  # also gets its own resolve, held back
ACTION = {"firing": "trigger", "resolved": "resolve"}


def source_of(path: Path) -> str:
    """The webhook a corpus file is sent to, by its name (MANIFEST.md)."""
    return "alertmanager" if path.name.startswith("am-") else "grafana"


def replay(client, path: Path):
    return client.post(f"/webhooks/{source_of(path)}", data=path.read_bytes(), content_type="application/json")


def rows(app) -> list[IncidentLog]:
    with app.app_context():
        found = db.session.query(IncidentLog).order_by(IncidentLog.id).all()
        db.session.expunge_all()
        return found


@pytest.fixture
def replayed(make_app):
    """Every accepted file sent in name order to an app with only a default route, then every refused one:
    (file, answer events) pairs of the accepted ones, and the stored rows."""
    app = make_app(ROUTES=[], DEFAULT_ROUTE=DEFAULT_ROUTE)
    client = app.test_client()
    answers = []
    for path in ACCEPTED:
        response = replay(client, path)
        assert response.status_code == 202, (path.name, response.get_json())
        answers.append((path, response.get_json()["events"]))
    stored = rows(app)
    for path in REFUSED:
        response = replay(client, path)
        assert 400 <= response.status_code < 500 and response.get_json()["error"], path.name
    assert len(rows(app)) == len(stored)
    return answers, stored


def test_the_corpus_replayed_through_the_webhooks_makes_one_event_per_alert(replayed):
    answers, stored = replayed
    for path, events in answers:
        expected = [ACTION[alert["status"]] for alert in json.loads(path.read_bytes())["alerts"]]
        if path.name == TEST_NOTIFICATION:
            expected.append("resolve")  # the test's own resolve, sent after test_resolve_after_seconds
        assert [event["event_action"] for event in events] == expected, path.name
    assert len(stored) == sum(len(events) for _, events in answers)
    # A resolve carries the dedup key of the trigger it follows.
    keys = {path.name: [event["dedup_key"] for event in events] for path, events in answers}
    assert keys["grafana-pytorch-nodata-resolved.json"] == keys["grafana-pytorch-nodata-firing.json"]
    assert keys["grafana-zulip-v9-2-mixed-resolved-firing.json"] == keys["grafana-zulip-v9-1-multiple-firing.json"]
    assert keys[TEST_NOTIFICATION][0] == keys[TEST_NOTIFICATION][1]
    # None unrouted; kept back only what is older than what the relay already has.
    files = [path.name for path, events in answers for _ in events]
    # Nothing is delivered during the replay, so what later files say of the same alerts collapses
    # (docs/delivery.md, "Only the latest state is sent").
    not_sent = [(name, row.event_action, row.status) for name, row in zip(files, stored) if row.status != states.PENDING]
    assert not_sent == [
        # v1 fired, then resolved before either was sent: neither is; v2 fired again while its trigger waits.
        ("am-alertmanager025-capture-1-firing-group.json", "trigger", states.SUPERSEDED),
        ("am-alertmanager025-capture-2-mixed-group.json", "resolve", states.SUPERSEDED),
        ("am-alertmanager025-capture-2-mixed-group.json", "trigger", states.SUPERSEDED),
        # Replayed in name order, the max_alerts webhook's firing v1 (t≈2 s) comes after the mixed group's resolve
        # of v1 (t≈7 s).
        ("am-alertmanager025-capture-3-max-alerts-firing.json", "trigger", states.STALE),
        # v1's resolve again, after its trigger and resolve collapsed.
        ("am-alertmanager025-capture-4-max-alerts-resolved-shown.json", "resolve", states.SUPERSEDED),
        # The same resolve as the previous file's, still waiting.
        ("am-prom2teams-resolved-no-fingerprint.json", "resolve", states.SUPERSEDED),
        # Fired and resolved before either was sent.
        ("grafana-pytorch-nodata-firing.json", "trigger", states.SUPERSEDED),
        ("grafana-pytorch-nodata-resolved.json", "resolve", states.SUPERSEDED),
        # These two resolves ended (01:08) before the alerts the previous file fired began (01:11).
        ("grafana-zulip-v9-2-mixed-resolved-firing.json", "resolve", states.STALE),
        ("grafana-zulip-v9-2-mixed-resolved-firing.json", "resolve", states.STALE),
        # The same trigger as the previous file's, still waiting.
        ("grafana-zulip-v9-2-mixed-resolved-firing.json", "trigger", states.SUPERSEDED),
    ]


def page_lines(answers, stored) -> list[str]:
    """The golden file's text: per file, one line per event in the order stored."""
    lines, by_row = [], iter(stored)
    for path, events in answers:
        lines.append(f"== {path.name}")
        for _ in events:
            row = next(by_row)
            payload = row.event.get("payload") or {}
            kept_back = "" if row.status == states.PENDING else f"  [{row.status}: not sent]"
            if row.event_action == "trigger":
                lines.append(f"trigger  {payload['severity']:<8} source={payload['source']}  "
                             f"group={payload.get('group', '-')}  | {payload['summary']}{kept_back}")
            else:
                lines.append(f"resolve{kept_back}")
    return lines


def test_the_pages_the_corpus_makes_match_the_golden_file(replayed):
    text = "\n".join(page_lines(*replayed)) + "\n"
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(text, encoding="utf-8")
    assert text == GOLDEN.read_text(encoding="utf-8"), "pages changed: review, then regenerate (module docstring)"
