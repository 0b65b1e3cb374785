"""The reconciler end to end with the real Alertmanager 0.25: alerts posted to Alertmanager fire through the relay
under gunicorn to the PagerDuty simulator; what Alertmanager never sends (the resolve of a silenced or inhibited
alert, of an alert a restart forgot) the reconciler sends, asking Alertmanager's API at the externalURL it sent."""
import secrets
import sqlite3
import time
from datetime import datetime, timedelta, timezone

import pytest

from .harness import (
    ALERTMANAGER_BIN,
    AMTOOL_BIN,
    alertmanager,
    alertmanager_config,
    http,
    relay_server,
    require_binaries,
    wait_for,
)

TOKEN = "e2e-" + secrets.token_hex(12)
INTERVAL = 2  # seconds between checks: the relay's RELAY_RECONCILE_INTERVAL_SECONDS here
WAIT = 20  # for a notification to reach the relay and be delivered


@pytest.fixture(scope="module", autouse=True)
def binaries():
    require_binaries(ALERTMANAGER_BIN, AMTOOL_BIN)


@pytest.fixture(scope="module")
def relay(tmp_path_factory, simulator):
    workdir = tmp_path_factory.mktemp("reconcile")
    config = workdir / "relay_config.py"
    config.write_text('DEFAULT_ROUTE = {"name": "default", "routing_key_env": "PAGERDUTY_ROUTING_KEY", '
                      '"on_muted": "resolve"}\n')
    simulator.reset()
    with relay_server(workdir / "relay", simulator.events_url, extra_env={
            "RELAY_CONFIG": str(config), "RELAY_ALERTMANAGER_TOKEN": TOKEN,
            "RELAY_RECONCILE_INTERVAL_SECONDS": str(INTERVAL)}) as served:
        served.workdir = workdir
        yield served


def _am_config(relay):
    config = alertmanager_config([relay.alertmanager_webhook], TOKEN)
    config["inhibit_rules"] = [{"source_matchers": ["alertname=Upstream"], "target_matchers": ["alertname=Downstream"]}]
    return config


def _post(am, alertname: str) -> None:
    """Post a firing alert that lasts an hour unless resolved (no sender has to keep re-posting it)."""
    now = datetime.now(timezone.utc)
    response = http.post(am.url + "/api/v2/alerts", json=[{
        "labels": {"alertname": alertname, "suite": "reconcile"}, "annotations": {"summary": f"{alertname} fires"},
        "startsAt": now.isoformat(), "endsAt": (now + timedelta(hours=1)).isoformat()}], timeout=5)
    assert response.status_code == 200, response.text


def _rows(relay, alertname: str) -> list[dict]:
    return relay.rows("json_extract(alert, '$.labels.alertname') = ?", (alertname,))


def _sent(simulator, alertname: str, relay) -> list[str]:
    """The actions PagerDuty accepted for the alert's dedup key, in order."""
    rows = _rows(relay, alertname)
    if not rows:
        return []
    return [e["event_action"] for e in simulator.accepted() if e.get("dedup_key") == rows[0]["dedup_key"]]


def _fires(simulator, relay, alertname: str) -> str:
    """Wait until the alert's trigger is delivered; return its dedup key."""
    wait_for(lambda: _sent(simulator, alertname, relay) == ["trigger"], WAIT, message=f"{alertname}'s trigger sent")
    return _rows(relay, alertname)[0]["dedup_key"]


def test_silence_resolves_within_one_interval_and_its_expiry_triggers_again(relay, simulator, tmp_path):
    with alertmanager(tmp_path / "am", _am_config(relay)) as am:
        _post(am, "Silenced")
        dedup_key = _fires(simulator, relay, "Silenced")
        now = datetime.now(timezone.utc)
        created = http.post(am.url + "/api/v2/silences", json={
            "matchers": [{"name": "alertname", "value": "Silenced", "isRegex": False}], "startsAt": now.isoformat(),
            "endsAt": (now + timedelta(hours=1)).isoformat(), "createdBy": "ann", "comment": "swap the disk"},
            timeout=5)
        silence_id = created.json()["silenceID"]
        silenced_at = time.monotonic()
        wait_for(lambda: _sent(simulator, "Silenced", relay) == ["trigger", "resolve"], INTERVAL + 3,
                 message="the silenced alert resolved within one interval")
        assert time.monotonic() - silenced_at < INTERVAL + 3
        resolve = [row for row in _rows(relay, "Silenced") if row["event_action"] == "resolve"][0]
        assert resolve["cause"] == f"reconciled: silenced by {silence_id} (ann: swap the disk)"
        assert resolve["dedup_key"] == dedup_key
        assert "swap the disk" in relay.process.log_tail(100_000)
        assert [a["status"] for a in simulator.alerts() if a["dedup_key"] == dedup_key] == ["resolved"]

        assert http.delete(f"{am.url}/api/v2/silence/{silence_id}", timeout=5).status_code == 200
        wait_for(lambda: _sent(simulator, "Silenced", relay) == ["trigger", "resolve", "trigger"], INTERVAL + 3,
                 message="the alert triggered again once its silence expired")
        again = _rows(relay, "Silenced")[-1]
        assert (again["event_action"], again["dedup_key"], again["cause"]) == \
            ("trigger", dedup_key, "reconciled: unmuted and still firing")


def test_an_inhibited_alert_is_resolved_naming_what_inhibits_it(relay, simulator, tmp_path):
    with alertmanager(tmp_path / "am", _am_config(relay)) as am:
        _post(am, "Downstream")
        _fires(simulator, relay, "Downstream")
        _post(am, "Upstream")
        wait_for(lambda: _sent(simulator, "Downstream", relay) == ["trigger", "resolve"], WAIT,
                 message="the inhibited alert resolved")
        upstream = [a for a in am.alerts() if a["labels"]["alertname"] == "Upstream"][0]
        resolve = _rows(relay, "Downstream")[-1]
        assert resolve["cause"] == f"reconciled: inhibited by {upstream['fingerprint']} (Upstream)"
        _fires(simulator, relay, "Upstream")  # the inhibiting alert fires, and stays open
        time.sleep(INTERVAL + 1)
        assert _sent(simulator, "Upstream", relay) == ["trigger"]


def _misses(relay) -> list[int]:
    conn = sqlite3.connect(f"file:{relay.db_path}?mode=ro", uri=True, timeout=5)
    try:
        return [row[0] for row in conn.execute(
            "SELECT misses FROM reconcile_watch JOIN incident_log ON incident_log.id = reconcile_watch.log_id "
            "WHERE json_extract(alert, '$.labels.alertname') = 'Forgotten'")]
    finally:
        conn.close()


def test_unreachable_resolves_nothing_and_an_emptied_restart_resolves_after_two_checks(relay, simulator, tmp_path):
    with alertmanager(tmp_path / "before", _am_config(relay)) as am:
        port = int(am.url.rsplit(":", 1)[1])
        _post(am, "Forgotten")
        _fires(simulator, relay, "Forgotten")
    log_before = relay.process.log_tail(1_000_000).count("cannot read the alerts of alertmanager")
    time.sleep(3 * INTERVAL + 1)  # Alertmanager is down: three checks or more
    assert _sent(simulator, "Forgotten", relay) == ["trigger"]
    assert relay.process.log_tail(1_000_000).count("cannot read the alerts of alertmanager") == log_before + 1  # once
    assert _misses(relay) == [0]

    with alertmanager(tmp_path / "after", _am_config(relay), port=port):  # same URL, empty storage
        wait_for(lambda: _misses(relay) == [1], INTERVAL + 3, interval=0.05, message="absent at one check")
        assert _sent(simulator, "Forgotten", relay) == ["trigger"]  # not yet
        wait_for(lambda: _sent(simulator, "Forgotten", relay) == ["trigger", "resolve"], 2 * INTERVAL + 3,
                 message="resolved at the second check")
    resolve = _rows(relay, "Forgotten")[-1]
    assert resolve["cause"] == f"reconciled: gone from http://127.0.0.1:{port}/api/v2/alerts for 2 checks"
