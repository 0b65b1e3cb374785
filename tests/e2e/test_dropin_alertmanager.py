"""Alertmanager's own PagerDuty integration pointed at the relay: one receiver with two `pagerduty_configs`, one
sending natively to the simulator, one whose `url` is the relay's /v2/enqueue. The relay's event reaches the
simulator exactly as the native one (same dedup key, summary, severity, details), the resolve too; with PagerDuty
down meanwhile nothing is lost."""
import secrets
from datetime import datetime, timezone

import pytest

from .harness import alertmanager, alertmanager_config, relay_server, wait_for

ALERT = "RelayE2EDropIn"
WAIT = 30


@pytest.fixture(scope="module")
def stack(tmp_path_factory, simulator):
    """The relay (its allow-list holding the relayed key) and Alertmanager with a native and a relayed config."""
    simulator.reset()
    workdir = tmp_path_factory.mktemp("dropin")
    native_key, relayed_key = secrets.token_hex(16), secrets.token_hex(16)
    env = {"RELAY_PAGERDUTY_ROUTING_KEYS": relayed_key, "RELAY_OUTAGE_PROBE_MAX_SECONDS": "1",
           "RELAY_RETRY_MAX_SECONDS": "1"}
    with relay_server(workdir / "relay", simulator.events_url, extra_env=env) as relay:
        config = alertmanager_config([], "unused")
        config["receivers"][0]["pagerduty_configs"] = [
            {"routing_key": native_key, "url": simulator.events_url, "send_resolved": True},
            {"routing_key": relayed_key, "url": relay.url + "/v2/enqueue", "send_resolved": True},
        ]
        with alertmanager(workdir / "alertmanager", config) as am:
            yield relay, am, simulator, native_key, relayed_key


def by_key(simulator, action: str, keys: tuple[str, str]):
    """The native and the relayed event of an action, once both reached the simulator."""
    found = {event["routing_key"]: event for event in simulator.accepted()
             if event.get("event_action") == action and event["routing_key"] in keys}
    return found if len(found) == 2 else None


def without_key(event: dict) -> dict:
    return {name: value for name, value in event.items() if name != "routing_key"}


def test_alertmanager_pagerduty_configs_through_the_relay_match_the_native_integration(stack):
    relay, am, simulator, native_key, relayed_key = stack
    labels = [f"alertname={ALERT}", "severity=critical", "instance=db1:9100"]
    am.amtool("alert", "add", *labels, "--annotation=summary=Replica lag over 60 s")

    triggers = wait_for(lambda: by_key(simulator, "trigger", (native_key, relayed_key)), WAIT,
                        message="the native and the relayed trigger at the simulator")
    native, relayed = triggers[native_key], triggers[relayed_key]
    assert without_key(relayed) == without_key(native)  # dedup key, summary, severity, details, client: all alike
    assert ALERT in relayed["payload"]["summary"] and relayed["dedup_key"]
    [row] = relay.rows("event_action = 'trigger'")
    assert row["source"] == "pagerduty" and row["route"] == "proxy" and row["status"] == "delivered"

    simulator.set_outage("503")  # PagerDuty goes down before the resolve
    [held] = [a for a in am.alerts() if a["labels"].get("alertname") == ALERT]
    ended = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    am.amtool("alert", "add", *labels, "--annotation=summary=Replica lag over 60 s", f"--start={held['startsAt']}",
              f"--end={ended}")
    wait_for(lambda: relay.rows("event_action = 'resolve'"), WAIT, message="the relay stored the resolve")
    wait_for(lambda: any(r["outcome"] == "injected-fault" and (r["body"] or {}).get("routing_key") == relayed_key
                         for r in simulator.received()), WAIT, message="the relay tried during the outage")
    simulator.set_outage(None)

    wait_for(lambda: [a for a in simulator.alerts() if a["routing_key"] == relayed_key
                      and a["status"] == "resolved"], WAIT, message="the relayed alert resolved")
    [resolve] = relay.rows("event_action = 'resolve'")
    assert resolve["status"] == "delivered" and resolve["dedup_key"] == relayed["dedup_key"]
    relayed_resolves = [r for r in simulator.received() if r["status"] == 202 and isinstance(r["body"], dict)
                        and r["body"].get("routing_key") == relayed_key
                        and r["body"].get("event_action") == "resolve"]
    # As Alertmanager sent it, less what PagerDuty ignores on a resolve (its payload).
    assert [without_key(r["body"]) for r in relayed_resolves] == [{
        "event_action": "resolve", "dedup_key": relayed["dedup_key"], "client": relayed["client"],
        "client_url": relayed["client_url"]}]
