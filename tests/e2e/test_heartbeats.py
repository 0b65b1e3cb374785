"""End to end, the dead man's switch: Prometheus 2.42 fires an always-on `Watchdog` (vector(1)) through
Alertmanager 0.25 to a relay under gunicorn whose route declares it a heartbeat. While Prometheus runs nothing is
paged; once it stops, the relay pages within the window plus one evaluation after the last heartbeat; started
again, it resolves the page."""
import secrets
import time
from datetime import datetime

from .harness import (
    ALERTMANAGER_BIN,
    PROMETHEUS_BIN,
    alertmanager,
    alertmanager_config,
    gauge_server,
    http,
    prometheus,
    relay_server,
    require_binaries,
    wait_for,
)

WITHIN = 6  # seconds: the route's heartbeat window
CHECK = 1  # seconds between evaluations
# Once Prometheus stops, Alertmanager keeps the alert until its endsAt, 4 x max(resend delay, evaluation interval)
# after the last evaluation (REFERENCE.md), and sends repeats of it until then.
HELD = 4
WATCHDOG_RULES = {"groups": [{"name": "meta", "interval": "1s", "rules": [
    {"alert": "Watchdog", "expr": "vector(1)", "labels": {"severity": "none"},
     "annotations": {"summary": "The alerting pipeline works"}}]}]}


def heartbeat(relay) -> dict:
    items = http.get(relay.url + "/api/v1/heartbeats", timeout=5).json()["items"]
    assert len(items) <= 1, items
    return items[0] if items else {}


def test_stopping_prometheus_pages_within_the_window_and_starting_it_resolves(tmp_path, simulator):
    require_binaries(ALERTMANAGER_BIN, PROMETHEUS_BIN)
    simulator.reset()
    config = tmp_path / "relay_config.py"
    config.write_text(f"""ROUTES = [{{"name": "watchdog", "matchers": ['alertname="Watchdog"'],
           "routing_key_env": "PAGERDUTY_ROUTING_KEY", "heartbeat": {{"within": "{WITHIN}s"}}}}]
""")
    am_config = alertmanager_config([], "unused", receiver="relay")
    with relay_server(tmp_path / "relay", simulator.events_url, routing_key=secrets.token_hex(16), extra_env={
            "RELAY_CONFIG": str(config), "RELAY_HEARTBEAT_CHECK_SECONDS": str(CHECK)}) as relay, \
            gauge_server("relay_e2e_up", {}) as gauge:
        am_config["receivers"][0]["webhook_configs"] = [{"url": relay.alertmanager_webhook, "send_resolved": True}]
        am_config["route"]["repeat_interval"] = "2s"  # a heartbeat every 2 s, well within the window
        with alertmanager(tmp_path / "alertmanager", am_config) as am:
            with prometheus(tmp_path / "prometheus", gauge.target, am.url, WATCHDOG_RULES):
                first = wait_for(lambda: heartbeat(relay).get("state") == "up" and heartbeat(relay), 30,
                                 message="the first heartbeat")
                assert first["subject"] == f"Prometheus Alertmanager at {am.url}"
                time.sleep(WITHIN + 3)  # a full window and more of Prometheus running: nothing paged
                assert heartbeat(relay)["state"] == "up"
                assert relay.rows() == [] and simulator.accepted() == []
                stopped = time.monotonic()
            # Prometheus is stopped: the heartbeats end once Alertmanager's copy of the alert runs out.
            page = wait_for(lambda: simulator.accepted(), HELD + WITHIN + CHECK + 10, message="the page")
            paged_after = time.monotonic() - stopped
            down = heartbeat(relay)
            assert down["state"] == "down" and [e["event_action"] for e in page] == ["trigger"]
            assert page[0]["routing_key"] == relay.routing_key and page[0]["dedup_key"] == down["dedup_key"]
            assert page[0]["payload"]["summary"].startswith(f"No heartbeat from Prometheus Alertmanager at {am.url} "
                                                            f"for {WITHIN}s; last seen ")
            assert paged_after <= HELD + WITHIN + CHECK + 3, paged_after  # + slack for the processes
            details = page[0]["payload"]["custom_details"]
            silent = (datetime.fromisoformat(page[0]["payload"]["timestamp"])
                      - datetime.fromisoformat(details["last_seen"])).total_seconds()
            assert WITHIN < silent <= WITHIN + CHECK + 0.5, silent  # paged within the window plus one evaluation
            with prometheus(tmp_path / "prometheus", gauge.target, am.url, WATCHDOG_RULES):
                wait_for(lambda: [e["event_action"] for e in simulator.accepted()] == ["trigger", "resolve"], 30,
                         message="the resolve once Prometheus is back")
                assert simulator.accepted()[1]["dedup_key"] == page[0]["dedup_key"]
                assert heartbeat(relay)["state"] == "up"
    assert [row["source"] for row in relay.rows()] == ["heartbeats", "heartbeats"]
