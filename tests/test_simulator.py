"""Tests for relay.simulator: the PagerDuty Events API v2 simulator, over real sockets."""
import copy
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.helpers import delete_at, set_at
from tests.processes import free_port
from tools.simulator import MAX_EVENT_BYTES, PagerDutySimulator, mask_key

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_DIRS = (ROOT / "tests" / "fixtures", Path("/work/shared/fixtures"))
KEY = "R0UT1NGKEY0123456789abcdefSECRET"  # 32 characters
OTHER_KEY = "0THERKEY0123456789abcdefghijWXYZ"
assert len(KEY) == len(OTHER_KEY) == 32


def load_fixture(name: str) -> dict:
    """Load a captured payload from tests/fixtures (or the shared copy)."""
    for directory in FIXTURE_DIRS:
        if (directory / name).exists():
            return json.loads((directory / name).read_text())
    raise FileNotFoundError(name)


@pytest.fixture
def sim():
    """A simulator accepting any routing key, on a free port."""
    simulator = PagerDutySimulator().start()
    yield simulator
    simulator.stop()


@pytest.fixture
def trigger() -> dict:
    """PagerDuty's documented trigger example, with a real-length routing key."""
    event = load_fixture("pagerduty_events_v2_trigger_example.json")
    event["routing_key"] = KEY
    return event


@pytest.fixture
def resolve() -> dict:
    """PagerDuty's documented resolve example, matching the trigger fixture's alert."""
    event = load_fixture("pagerduty_events_v2_resolve_example.json")
    event.update(routing_key=KEY, dedup_key="samplekeyhere")
    return event


def post(sim, event, session=None):
    """Send an event and return the response."""
    return (session or requests).post(sim.events_url, json=event, timeout=5)


def follow_up(trigger_event: dict, action: str) -> dict:
    """Build an acknowledge/resolve for the same alert as a trigger."""
    return {"routing_key": trigger_event["routing_key"], "dedup_key": trigger_event["dedup_key"], "event_action": action}


# --- validation ------------------------------------------------------------------------------

VALID = [
    ("documented example", lambda event: None),
    ("summary of exactly 1024", set_at(("payload", "summary"), "s" * 1024)),
    ("dedup_key of exactly 255", set_at(("dedup_key",), "d" * 255)),
    ("severity critical", set_at(("payload", "severity"), "critical")),
    ("severity error", set_at(("payload", "severity"), "error")),
    ("severity warning", set_at(("payload", "severity"), "warning")),
    ("timestamp with Z", set_at(("payload", "timestamp"), "2024-05-01T12:00:00Z")),
    ("no timestamp", delete_at(("payload", "timestamp"))),
    ("no images or links", lambda event: (event.pop("images"), event.pop("links"))),
    ("empty custom_details", set_at(("payload", "custom_details"), {})),
]

INVALID = [
    ("routing_key missing", delete_at(("routing_key",)), "'routing_key' is missing or blank"),
    ("routing_key 31 chars", set_at(("routing_key",), KEY[:31]), "'routing_key' must be 32 characters long (got 31)"),
    ("routing_key 33 chars", set_at(("routing_key",), KEY + "x"), "'routing_key' must be 32 characters long (got 33)"),
    ("event_action missing", delete_at(("event_action",)), "'event_action' is missing or blank"),
    ("event_action unknown", set_at(("event_action",), "fire"),
     "'event_action' must be one of trigger, acknowledge, resolve"),
    ("dedup_key 256", set_at(("dedup_key",), "d" * 256), "'dedup_key' must be at most 255 characters (got 256)"),
    ("payload missing", delete_at(("payload",)), "'payload' is required for trigger events"),
    ("payload not an object", set_at(("payload",), "down"), "'payload' must be an object"),
    ("summary missing", delete_at(("payload", "summary")), "'payload.summary' is missing or blank"),
    ("summary blank", set_at(("payload", "summary"), "  "), "'payload.summary' is missing or blank"),
    ("summary 1025", set_at(("payload", "summary"), "s" * 1025),
     "'payload.summary' must be at most 1024 characters (got 1025)"),
    ("source missing", delete_at(("payload", "source")), "'payload.source' is missing or blank"),
    ("severity missing", delete_at(("payload", "severity")), "'payload.severity' is missing or blank"),
    ("severity upper case", set_at(("payload", "severity"), "CRITICAL"),
     "'payload.severity' must be one of critical, error, warning, info"),
    ("severity is urgency", set_at(("payload", "severity"), "high"),
     "'payload.severity' must be one of critical, error, warning, info"),
    ("timestamp not ISO 8601", set_at(("payload", "timestamp"), "yesterday at noon"),
     "'payload.timestamp' must be an ISO 8601 timestamp"),
    ("timestamp a number", set_at(("payload", "timestamp"), 1714564800),
     "'payload.timestamp' must be an ISO 8601 timestamp"),
    ("custom_details a string", set_at(("payload", "custom_details"), "ping time 1500ms"),
     "'payload.custom_details' must be an object"),
    ("custom_details a list", set_at(("payload", "custom_details"), [1, 2]),
     "'payload.custom_details' must be an object"),
    ("image over http", set_at(("images", 0, "src"), "http://example.com/x.png"),
     "'images[0].src' must be an https URL"),
    ("image without src", delete_at(("images", 0, "src")), "'images[0].src' must be an https URL"),
    ("link without href", delete_at(("links", 0, "href")), "'links[0].href' is missing or blank"),
    ("images not an array", set_at(("images",), {"src": "https://x"}), "'images' must be an array"),
]


@pytest.mark.parametrize("mutate", [case[1] for case in VALID], ids=[case[0] for case in VALID])
def test_valid_trigger_is_accepted(sim, trigger, mutate):
    mutate(trigger)
    response = post(sim, trigger)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "success"
    assert response.json()["message"] == "Event processed"
    assert sim.accepted() == [trigger]


@pytest.mark.parametrize("mutate, error", [case[1:] for case in INVALID], ids=[case[0] for case in INVALID])
def test_invalid_trigger_is_rejected_with_one_error(sim, trigger, mutate, error):
    mutate(trigger)
    response = post(sim, trigger)
    assert response.status_code == 400
    assert response.json() == {"status": "invalid event", "message": "Event object is invalid", "errors": [error]}
    [record] = sim.received()
    assert (record["status"], record["outcome"], record["errors"]) == (400, "rejected", [error])
    assert sim.alerts() == []


@pytest.mark.parametrize("action", ["acknowledge", "resolve"])
def test_follow_up_without_dedup_key_is_rejected(sim, resolve, action):
    resolve.update(event_action=action)
    del resolve["dedup_key"]
    response = post(sim, resolve)
    assert response.status_code == 400
    assert response.json()["errors"] == [f"'dedup_key' is required for {action} events"]


def test_follow_up_needs_no_payload(sim, resolve):
    assert post(sim, resolve).status_code == 202


def test_every_problem_is_its_own_error(sim, trigger):
    del trigger["payload"]["summary"], trigger["payload"]["source"]
    trigger["payload"]["severity"] = "sev1"
    errors = post(sim, trigger).json()["errors"]
    assert errors == ["'payload.summary' is missing or blank", "'payload.source' is missing or blank",
                      "'payload.severity' must be one of critical, error, warning, info"]


def test_no_error_message_echoes_the_routing_key(sim, trigger):
    trigger["routing_key"] = KEY + "tail"
    body = post(sim, trigger).text
    assert "must be 32 characters" in body and KEY not in body


def sized_body(event: dict, size: int) -> bytes:
    """Serialise event padded (in custom_details) to exactly size bytes."""
    event = copy.deepcopy(event)
    event["payload"]["custom_details"]["pad"] = ""
    base = len(json.dumps(event).encode())
    event["payload"]["custom_details"]["pad"] = "p" * (size - base)
    body = json.dumps(event).encode()
    assert len(body) == size
    return body


@pytest.mark.parametrize("size, status", [(MAX_EVENT_BYTES - 1, 202), (MAX_EVENT_BYTES, 400), (MAX_EVENT_BYTES + 1, 400)])
def test_whole_event_must_be_under_512_kb(sim, trigger, size, status):
    assert MAX_EVENT_BYTES == 512 * 1024
    response = requests.post(sim.events_url, data=sized_body(trigger, size),
                             headers={"Content-Type": "application/json"}, timeout=5)
    assert response.status_code == status
    if status == 400:
        assert response.json()["errors"] == [f"Event must be smaller than 512 KB (524288 bytes; got {size})"]


@pytest.mark.parametrize("raw, error_start", [
    (b"{not json", "Request body is not valid JSON"),
    (b"", "Request body is not valid JSON"),
    (b"[1, 2]", "Event must be a JSON object"),
])
def test_body_that_is_not_an_event_object(sim, raw, error_start):
    response = requests.post(sim.events_url, data=raw, headers={"Content-Type": "application/json"}, timeout=5)
    assert response.status_code == 400
    body = response.json()
    assert body["status"] == "invalid event" and body["message"] == "Event object is invalid"
    assert len(body["errors"]) == 1 and body["errors"][0].startswith(error_start)
    assert sim.received()[0]["body"] == (raw.decode() if error_start.startswith("Request") else [1, 2])


# --- dedup keys and alert state --------------------------------------------------------------

def test_trigger_without_dedup_key_gets_a_generated_one(sim, trigger):
    del trigger["dedup_key"]
    dedup_key = post(sim, trigger).json()["dedup_key"]
    assert len(dedup_key) == 32 and int(dedup_key, 16) >= 0
    assert post(sim, trigger).json()["dedup_key"] != dedup_key  # each gets its own alert
    resolve = {"routing_key": KEY, "dedup_key": dedup_key, "event_action": "resolve"}
    assert post(sim, resolve).status_code == 202
    assert [alert["status"] for alert in sim.alerts()] == ["resolved", "triggered"]
    assert sim.received()[0]["dedup_key"] == dedup_key


def test_trigger_acknowledge_resolve(sim, trigger):
    for action in ("trigger", "trigger", "acknowledge", "resolve"):
        event = trigger if action == "trigger" else follow_up(trigger, action)
        assert post(sim, event).json() == {"status": "success", "message": "Event processed", "dedup_key": "samplekeyhere"}
    [alert] = sim.alerts()
    assert alert["status"] == "resolved"
    assert alert["trigger_count"] == 2
    assert alert["acknowledged_at"] <= alert["resolved_at"]
    assert (alert["summary"], alert["severity"]) == ("Example alert on host1.example.com", "info")
    assert [r["outcome"] for r in sim.received()] == ["accepted"] * 4


def test_acknowledge_keeps_alert_open(sim, trigger):
    post(sim, trigger)
    post(sim, follow_up(trigger, "acknowledge"))
    assert [alert["status"] for alert in sim.alerts()] == ["acknowledged"]


@pytest.mark.parametrize("action", ["acknowledge", "resolve"])
def test_follow_up_for_unknown_alert_is_accepted_but_dropped(sim, resolve, action):
    resolve["event_action"] = action
    response = post(sim, resolve)
    assert response.status_code == 202
    assert response.json()["dedup_key"] == "samplekeyhere"
    assert [r["outcome"] for r in sim.received()] == ["dropped"]
    assert sim.alerts() == [] and sim.accepted() == []


def test_follow_up_after_resolve_is_dropped(sim, trigger):
    for event in (trigger, follow_up(trigger, "resolve"), follow_up(trigger, "acknowledge"), follow_up(trigger, "resolve")):
        assert post(sim, event).status_code == 202
    assert [r["outcome"] for r in sim.received()] == ["accepted", "accepted", "dropped", "dropped"]


def test_trigger_after_resolve_opens_a_new_alert(sim, trigger):
    for event in (trigger, follow_up(trigger, "resolve"), trigger):
        post(sim, event)
    assert [(a["dedup_key"], a["status"]) for a in sim.alerts()] == [
        ("samplekeyhere", "resolved"), ("samplekeyhere", "triggered")]


def test_follow_up_with_other_routing_key_does_not_touch_the_alert(sim, trigger):
    post(sim, trigger)
    other = follow_up(trigger, "resolve") | {"routing_key": OTHER_KEY}
    assert post(sim, other).status_code == 202
    assert sim.received()[-1]["outcome"] == "dropped"
    assert [a["status"] for a in sim.alerts()] == ["triggered"]


def test_unknown_routing_key_is_rejected():
    with PagerDutySimulator(routing_keys={KEY}) as sim:
        trigger = load_fixture("pagerduty_events_v2_trigger_example.json") | {"routing_key": OTHER_KEY}
        response = post(sim, trigger)
        assert response.status_code == 400
        assert response.json() == {"status": "invalid event", "message": "Event object is invalid",
                                   "errors": ["Invalid routing key"]}
        assert post(sim, trigger | {"routing_key": KEY}).status_code == 202
        assert [(r["status"], r["outcome"]) for r in sim.received()] == [(400, "rejected"), (202, "accepted")]
        sim.set_routing_keys(None)
        assert post(sim, trigger).status_code == 202
        assert len(sim.alerts()) == 2


# --- faults ----------------------------------------------------------------------------------

def timed_post(sim, event, session):
    """Post and return (response, seconds taken)."""
    started = time.perf_counter()
    response = post(sim, event, session)
    return response, time.perf_counter() - started


def test_latency_is_added_to_events_not_to_control(sim, trigger):
    with requests.Session() as session:
        post(sim, trigger, session)  # warm the connection
        assert timed_post(sim, trigger, session)[1] < 0.15
        sim.set_latency(0.3)
        response, seconds = timed_post(sim, trigger, session)
        assert response.status_code == 202 and seconds >= 0.3
        started = time.perf_counter()
        session.get(sim.url + "/_sim/events", timeout=5)
        assert time.perf_counter() - started < 0.15
        sim.set_latency(0)
        assert timed_post(sim, trigger, session)[1] < 0.15


@pytest.mark.parametrize("status, retry_after", [(503, None), (429, "2"), (500, None)])
def test_scripted_faults_then_back_to_normal(sim, trigger, status, retry_after):
    sim.inject(status, count=2, retry_after=retry_after)
    with requests.Session() as session:
        answers = [post(sim, trigger, session) for _ in range(3)]
    assert [a.status_code for a in answers] == [status, status, 202]
    assert [a.headers.get("Retry-After") for a in answers] == [retry_after, retry_after, None]
    assert answers[0].json()["message"]
    assert [r["outcome"] for r in sim.received()] == ["injected-fault", "injected-fault", "accepted"]
    assert [a["trigger_count"] for a in sim.alerts()] == [1]  # faults did not touch alert state


def test_scripted_faults_are_consumed_in_order(sim, trigger):
    sim.inject(503)
    sim.inject(429, retry_after=7)
    statuses = [post(sim, trigger).status_code for _ in range(3)]
    assert statuses == [503, 429, 202]


def test_scripted_refusal(sim, trigger):
    sim.inject("refuse")
    with pytest.raises(requests.ConnectionError):
        post(sim, trigger)
    assert post(sim, trigger).status_code == 202


def test_outage_503(sim, trigger):
    sim.set_outage("503")
    with requests.Session() as session:
        assert [post(sim, trigger, session).status_code for _ in range(3)] == [503, 503, 503]
        assert requests.get(sim.url + "/healthz", timeout=5).status_code == 200  # control stays up
        sim.set_outage(None)
        assert post(sim, trigger, session).status_code == 202
    assert [r["outcome"] for r in sim.received()] == ["injected-fault"] * 3 + ["accepted"]
    assert len(sim.alerts()) == 1


def test_error_rate_answers_a_random_share_of_events(sim, trigger):
    sim.set_error_rate(0.3, status=502, seed=7)
    with requests.Session() as session:
        statuses = [post(sim, trigger, session).status_code for _ in range(400)]
    assert set(statuses) == {202, 502}
    assert 80 <= statuses.count(502) <= 160  # about 30 % of 400
    sim.set_error_rate(0.3, status=502, seed=7)
    with requests.Session() as session:
        assert [post(sim, trigger, session).status_code for _ in range(400)] == statuses  # the seed repeats it
    records = sim.received()
    assert [r["outcome"] == "injected-fault" for r in records[:400]] == [s == 502 for s in statuses]
    assert sim.alerts()[0]["trigger_count"] == 2 * statuses.count(202)  # faults did not touch alert state


def test_error_rate_comes_after_scripted_faults_and_over_http(sim, trigger):
    sim.inject(429, retry_after=3)
    config = requests.post(sim.url + "/_sim/config", json={"error_rate": 1, "error_status": 500}, timeout=5).json()
    assert (config["error_rate"], config["error_status"]) == (1.0, 500)
    assert [post(sim, trigger).status_code for _ in range(3)] == [429, 500, 500]
    requests.post(sim.url + "/_sim/config", json={"error_rate": 0}, timeout=5)
    assert post(sim, trigger).status_code == 202


def test_outage_refuse_closes_the_connection(sim, trigger):
    sim.set_outage("refuse")
    with requests.Session() as session:
        for _ in range(2):
            with pytest.raises(requests.ConnectionError):
                post(sim, trigger, session)
        sim.set_outage(None)
        assert post(sim, trigger, session).status_code == 202
    records = sim.received()
    assert [(r["status"], r["outcome"]) for r in records] == [(None, "injected-fault")] * 2 + [(202, "accepted")]
    assert records[0]["body"] == trigger


@pytest.mark.parametrize("call", [
    lambda sim: sim.set_outage("502"),
    lambda sim: sim.set_latency(-1),
    lambda sim: sim.inject(99),
    lambda sim: sim.inject(503, count=0),
    lambda sim: sim.set_error_rate(1.5),
    lambda sim: sim.set_error_rate(0.3, status=42),
])
def test_bad_fault_settings_are_refused(sim, call):
    with pytest.raises(ValueError):
        call(sim)


# --- control over HTTP -----------------------------------------------------------------------

def test_control_endpoints(sim, trigger):
    base = sim.url
    with requests.Session() as control:
        assert control.get(base + "/healthz", timeout=5).json() == {"status": "ok"}
        config = control.post(base + "/_sim/config", json={"latency": 0.05, "routing_keys": [KEY], "outage": None},
                              timeout=5).json()
        assert config["latency"] == 0.05 and config["routing_keys"] == [mask_key(KEY)] and config["outage"] is None
        assert post(sim, trigger | {"routing_key": OTHER_KEY}).json()["errors"] == ["Invalid routing key"]
        assert control.post(base + "/_sim/faults", json={"status": 503, "count": 2, "retry_after": "2"},
                            timeout=5).json()["faults"] == [{"status": 503, "count": 2, "retry_after": "2"}]
        assert [post(sim, trigger).status_code for _ in range(3)] == [503, 503, 202]
        control.post(base + "/_sim/config", json={"outage": "503"}, timeout=5)
        assert post(sim, trigger).status_code == 503
        control.post(base + "/_sim/config", json={"outage": None, "latency": 0}, timeout=5)

        events = control.get(base + "/_sim/events", timeout=5).json()
        assert [(e["index"], e["status"], e["outcome"]) for e in events] == [
            (0, 400, "rejected"), (1, 503, "injected-fault"), (2, 503, "injected-fault"),
            (3, 202, "accepted"), (4, 503, "injected-fault")]
        assert events[3]["body"] == trigger and events[0]["received_at"] <= events[3]["received_at"] <= time.time()
        assert [e["index"] for e in control.get(base + "/_sim/events?since=3", timeout=5).json()] == [3, 4]
        [alert] = control.get(base + "/_sim/alerts", timeout=5).json()
        assert (alert["dedup_key"], alert["status"]) == ("samplekeyhere", "triggered")

        assert control.post(base + "/_sim/reset", timeout=5).status_code == 200
        assert control.get(base + "/_sim/events", timeout=5).json() == []
        assert control.get(base + "/_sim/alerts", timeout=5).json() == []
        assert control.get(base + "/_sim/config", timeout=5).json() == {
            "latency": 0.0, "outage": None, "error_rate": 0.0, "error_status": 503, "routing_keys": [], "faults": []}
        assert post(sim, trigger | {"routing_key": OTHER_KEY}).status_code == 202  # keys cleared


@pytest.mark.parametrize("path, body", [
    ("/_sim/config", {"latency": "slow"}),
    ("/_sim/config", {"outage": "sometimes"}),
    ("/_sim/config", {"colour": "red"}),
    ("/_sim/config", {"error_rate": -0.1}),
    ("/_sim/faults", {"count": 2}),
    ("/_sim/faults", {"status": 503, "count": -1}),
])
def test_bad_control_requests_answer_400(sim, path, body):
    response = requests.post(sim.url + path, json=body, timeout=5)
    assert response.status_code == 400 and response.json()["error"]


def test_unknown_paths(sim, trigger):
    assert requests.get(sim.url + "/_sim/nothing", timeout=5).status_code == 404
    assert requests.post(sim.url + "/v1/enqueue", json=trigger, timeout=5).status_code == 404
    assert requests.get(sim.events_url, timeout=5).status_code == 405
    assert [(r["path"], r["outcome"]) for r in sim.received()] == [("/v1/enqueue", "rejected"), ("/v2/enqueue", "rejected")]


# --- connections, throughput, quietness ------------------------------------------------------

def test_keep_alive_reuses_one_connection(sim, trigger):
    with requests.Session() as session:
        first = post(sim, trigger, session)
        bad = session.post(sim.events_url, data=b"{oops", timeout=5)  # an error answer must not break the stream
        last = post(sim, follow_up(trigger, "resolve"), session)
    assert [first.status_code, bad.status_code, last.status_code] == [202, 400, 202]
    assert all("Content-Length" in r.headers for r in (first, bad, last))
    assert len({record["client_port"] for record in sim.received()}) == 1


def test_handles_hundreds_of_events_per_second(sim, trigger):
    count = 300
    started = time.perf_counter()
    with requests.Session() as session:
        for index in range(count):
            assert post(sim, trigger | {"dedup_key": f"alert-{index}"}, session).status_code == 202
    # Nagle + delayed ACK on a split answer would cost ~40 ms each, i.e. 12 s here.
    assert time.perf_counter() - started < 3
    assert len(sim.alerts()) == count


def test_in_process_simulator_is_quiet(sim, trigger, capfd):
    post(sim, trigger)
    post(sim, {"routing_key": KEY})
    sim.set_outage("refuse")
    with pytest.raises(requests.ConnectionError):
        post(sim, trigger)
    assert capfd.readouterr() == ("", "")


def test_context_manager_releases_the_port(trigger):
    with PagerDutySimulator() as sim:
        url = sim.events_url
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v2/enqueue")
        assert post(sim, trigger).status_code == 202
    with pytest.raises(requests.ConnectionError):
        requests.post(url, json=trigger, timeout=2)


def test_mask_key_shows_only_the_tail():
    assert mask_key(KEY) == "…CRET"
    assert mask_key("short") == "…"
    assert mask_key(None) == "…"


# --- CLI -------------------------------------------------------------------------------------

def read_line(stream, timeout: float) -> str:
    """Read one line from a pipe, failing after timeout seconds."""
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, "simulator printed nothing"
    return stream.readline()


def start_cli(*args):
    """Start `python -m tools.simulator` on a free port; return (process, base url)."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tools.simulator", "--port", str(port), *args], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        line = read_line(process.stdout, timeout=20)
    except BaseException:
        process.kill()
        process.communicate()
        raise
    assert line == f"PagerDuty simulator listening on http://127.0.0.1:{port}\n"
    return process, f"http://127.0.0.1:{port}"


def stop_cli(process, signum) -> tuple[str, str]:
    """Stop the CLI with a signal; return its remaining (stdout, stderr)."""
    process.send_signal(signum)
    try:
        out, err = process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    assert process.returncode == 0, err
    return out, err


@pytest.mark.timeout(40)
def test_cli_serves_events_and_stops_on_sigterm(trigger):
    process, url = start_cli("--latency", "0")
    try:
        response = requests.post(url + "/v2/enqueue", json=trigger, timeout=5)
        assert response.status_code == 202 and response.json()["dedup_key"] == "samplekeyhere"
        assert requests.get(url + "/_sim/alerts", timeout=5).json()[0]["status"] == "triggered"
    finally:
        out, err = stop_cli(process, signal.SIGTERM)
    assert out == "" and err == ""  # quiet without --verbose: no per-request logging


@pytest.mark.timeout(40)
def test_cli_never_prints_a_full_routing_key(trigger):
    process, url = start_cli("--routing-key", KEY, "--verbose")
    try:
        events = [trigger, trigger | {"routing_key": OTHER_KEY}, trigger | {"routing_key": KEY + "x"},
                  follow_up(trigger, "resolve"), {"routing_key": KEY, "event_action": "resolve"}]
        statuses = [requests.post(url + "/v2/enqueue", json=event, timeout=5).status_code for event in events]
        assert statuses == [202, 400, 400, 202, 400]
        requests.post(url + "/_sim/faults", json={"status": 429}, timeout=5)
        assert requests.post(url + "/v2/enqueue", json=trigger, timeout=5).status_code == 429
        assert requests.get(url + "/_sim/config", timeout=5).json()["routing_keys"] == [mask_key(KEY)]
    finally:
        out, err = stop_cli(process, signal.SIGINT)
    lines = err.splitlines()
    assert len(lines) == 6  # one short line per event
    assert "key=…CRET" in lines[0] and "key=…WXYZ" in lines[1]
    for secret in (KEY, OTHER_KEY, KEY[:-4], OTHER_KEY[:-4]):
        assert secret not in out and secret not in err


def test_request_sleeping_through_a_reset_is_not_recorded(sim, trigger):
    sim.set_latency(0.4)
    worker = threading.Thread(target=post, args=(sim, trigger))
    worker.start()
    time.sleep(0.1)  # the request is now inside its injected latency
    sim.reset()
    worker.join(timeout=5)
    assert sim.received() == [] and sim.alerts() == []
