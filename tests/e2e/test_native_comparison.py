"""Side by side with Alertmanager's own PagerDuty integration: one receiver, the relay's webhook and the native
`pagerduty_configs` (its `url` pointed at the simulator). With dedup "group" the relay's key equals the native one.

Set RELAY_E2E_COMPARE_OUT=file.json to keep the two events for the README's comparison table.
"""
import hashlib
import json
import os
import secrets
from datetime import datetime, timezone

import pytest

from .harness import (
    ALERTMANAGER_BIN,
    AMTOOL_BIN,
    alertmanager,
    alertmanager_config,
    relay_server,
    require_binaries,
    wait_for,
)

TOKEN = "e2e-" + secrets.token_hex(12)
ALERT = "RelayE2ENativeCompare"
NATIVE_CLIENT = "Alertmanager"  # alertmanager template/default.tmpl: pagerduty.default.client
WAIT = 20


@pytest.fixture(scope="module")
def stack(tmp_path_factory, simulator):
    """Relay (bearer-protected, dedup "group") and Alertmanager sending to it and natively to the simulator."""
    require_binaries(ALERTMANAGER_BIN, AMTOOL_BIN)
    simulator.reset()  # shared with other modules' tests, which leave outages and faults behind
    workdir = tmp_path_factory.mktemp("native")
    routes = workdir / "routes.py"
    routes.write_text('DEFAULT_ROUTE = {"name": "migrated", "routing_key_env": "PAGERDUTY_ROUTING_KEY", '
                      '"dedup": "group"}\n')
    env = {"RELAY_CONFIG": str(routes), "RELAY_ALERTMANAGER_TOKEN": TOKEN}
    with relay_server(workdir / "relay", simulator.events_url, extra_env=env) as relay:
        config = alertmanager_config([relay.alertmanager_webhook], TOKEN)
        config["receivers"][0]["pagerduty_configs"] = [{
            "routing_key": relay.routing_key, "url": simulator.events_url, "send_resolved": True}]
        with alertmanager(workdir / "alertmanager", config) as am:
            yield relay, am, simulator


def sent(simulator, action):
    """The relay's and the native integration's events for the test alert, once both have arrived."""
    events = [e for e in simulator.accepted() if e["event_action"] == action and (
        action != "trigger" or ALERT in e["payload"]["summary"] or ALERT in json.dumps(e["payload"]))]
    by_client = {("native" if e.get("client") == NATIVE_CLIENT else "relay"): e for e in events}
    return by_client if len(by_client) == 2 else None


def resolves_for(simulator, dedup_key):
    """The two resolves (relay's and native) for the key, once both got a 202 (the second one is "dropped",
    as PagerDuty drops a resolve for an alert that is already resolved)."""
    found = [r["body"] for r in simulator.received() if r["status"] == 202 and isinstance(r["body"], dict)
             and r["body"].get("event_action") == "resolve" and r["body"].get("dedup_key") == dedup_key]
    return found if len(found) == 2 else None


def test_relay_and_native_agree_on_the_dedup_key_and_the_relay_keeps_more(stack):
    relay, am, simulator = stack
    labels = [f"alertname={ALERT}", "severity=critical", "instance=db1:9100", "team=db"]
    annotations = ["--annotation=summary=Replica lag over 60 s", "--annotation=runbook_url=https://rb.example/lag"]
    generator = "http://prometheus.example:9090/graph?g0.expr=lag"
    am.amtool("alert", "add", *labels, *annotations, f"--generator-url={generator}")

    triggers = wait_for(lambda: sent(simulator, "trigger"), WAIT, message="both triggers at the simulator")
    native, ours = triggers["native"], triggers["relay"]
    [row] = relay.rows("event_action = 'trigger'")
    group_key = row["alert"]["group_key"]
    assert ours["dedup_key"] == native["dedup_key"] == hashlib.sha256(group_key.encode()).hexdigest()

    # What each keeps: the relay maps severity and keeps labels and annotations as fields, with links.
    assert ours["payload"]["severity"] == "critical" and native["payload"]["severity"] == "error"
    assert ours["payload"]["custom_details"]["labels"]["team"] == "db"
    assert {link["href"] for link in ours["links"]} == {generator, "https://rb.example/lag"}

    [held] = [a for a in am.alerts() if a["labels"].get("alertname") == ALERT]
    ended = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    am.amtool("alert", "add", *labels, *annotations, f"--start={held['startsAt']}", f"--end={ended}")
    resolves = wait_for(lambda: resolves_for(simulator, ours["dedup_key"]), WAIT,
                        message="both resolves at the simulator")
    assert resolves
    [alert] = [a for a in simulator.alerts() if a["dedup_key"] == ours["dedup_key"]]
    assert alert["status"] == "resolved"

    if os.environ.get("RELAY_E2E_COMPARE_OUT"):
        with open(os.environ["RELAY_E2E_COMPARE_OUT"], "w") as out:
            json.dump({"relay": ours, "native": native}, out, indent=2, ensure_ascii=False)
