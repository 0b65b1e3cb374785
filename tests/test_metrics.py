"""GET /metrics: counters move with webhooks and deliveries, outbox gauges come from the store, and under
gunicorn every worker reports the sum of all workers (prometheus_client multiprocess mode)."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from conftest import app_config
from prometheus_client.parser import text_string_to_metric_families

from relay import create_app
from relay.delivery import worker
from relay.store.models import IncidentLog, db, utcnow
from tests.helpers import statuses, wait_until
from tests.processes import free_port
from tests.test_collapse import alert as one_alert
from tests.test_collapse import post

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DB_KEY = "d0d0d0d0d0d0d0d0d0d0d0d0d0d0d1b1"
WEB_KEY = "3eb03eb03eb03eb03eb03eb03eb03eb0"


# --- helpers ---------------------------------------------------------------------------------------

def parse(text: str) -> dict:
    """Map (sample name, labels) to value from a Prometheus exposition."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def scrape(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    return parse(response.get_data(as_text=True))


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: dict, after: dict, name: str, **labels) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def total(samples: dict, name: str) -> float:
    """The sum of a metric over all its label sets."""
    return sum(v for (sample, _), v in samples.items() if sample == name)


def alertmanager(*label_sets, status="firing") -> dict:
    """An Alertmanager v4 notification with one alert per label set."""
    return {
        "version": "4", "status": status, "receiver": "relay", "groupKey": '{}:{alertname="Test"}',
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am:9093",
        "alerts": [{"status": status, "labels": {"alertname": "Test", **labels},
                    "annotations": {"summary": "test alert"}, "startsAt": "2026-11-26T10:00:00Z",
                    "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom:9090/graph"}
                   for labels in label_sets],
    }



# --- webhooks and events ---------------------------------------------------------------------------

def test_webhooks_counted_by_source_and_outcome(make_app):
    app = make_app(DEFAULT_ROUTE={"name": "default", "routing_key": DB_KEY}, MAX_CONTENT_LENGTH=20_000,
                   WEBHOOK_AUTH={"grafana": {"bearer_token": "grafana-token-5150"}})
    client = app.test_client()
    before = scrape(client)
    assert client.post("/webhooks/alertmanager", json=alertmanager({"n": "1"})).status_code == 202
    assert client.post("/webhooks/alertmanager", json=alertmanager({"n": "2"})).status_code == 202
    assert client.post("/webhooks/alertmanager", data="{", content_type="application/json").status_code == 400
    assert client.post("/webhooks/alertmanager", data="x" * 30_000,
                       content_type="application/json").status_code == 413
    assert client.post("/webhooks/grafana", json={}, headers={"Authorization": "Bearer no"}).status_code == 401
    assert client.post("/webhooks/generic", json={}, environ_base={"REMOTE_ADDR": "203.0.113.9"}).status_code == 403
    assert client.post("/webhooks/no-such-source-1f3a", json={}).status_code == 404
    after = scrape(client)

    name = "relay_webhooks_received_total"
    assert delta(before, after, name, source="alertmanager", outcome="accepted") == 2
    assert delta(before, after, name, source="alertmanager", outcome="invalid") == 1
    assert delta(before, after, name, source="alertmanager", outcome="too_large") == 1
    assert delta(before, after, name, source="grafana", outcome="unauthorized") == 1
    assert delta(before, after, name, source="generic", outcome="forbidden") == 1
    # A source name from the URL never becomes a label value: label sets stay bounded.
    assert delta(before, after, name, source="unknown", outcome="unknown_source") == 1
    assert not any("no-such-source" in str(key) for key in after)
    # Other endpoints are not webhooks.
    client.get("/healthz")
    client.post("/api/v1/preview/alertmanager", json=alertmanager({"n": "3"}))
    assert total(scrape(client), name) == total(after, name)


def test_webhook_durations_timed_refused_ones_included(make_app):
    app = make_app(DEFAULT_ROUTE={"name": "default", "routing_key": DB_KEY},
                   WEBHOOK_AUTH={"grafana": {"bearer_token": "grafana-token-5150"}})
    client = app.test_client()
    before = scrape(client)
    assert client.post("/webhooks/alertmanager", json=alertmanager({"n": "1"})).status_code == 202
    assert client.post("/webhooks/grafana", json={}, headers={"Authorization": "Bearer no"}).status_code == 401
    after = scrape(client)

    name = "relay_webhook_duration_seconds"
    assert delta(before, after, name + "_count", source="alertmanager") == 1
    assert delta(before, after, name + "_count", source="grafana") == 1  # refused before the view: still timed
    assert 0 < delta(before, after, name + "_sum", source="alertmanager") < 5
    assert delta(before, after, name + "_bucket", source="alertmanager", le="+Inf") == 1


def test_events_counted_by_route_and_action(make_app):
    app = make_app(ROUTES=[{"name": "db", "matchers": ['service="db"'], "routing_key": DB_KEY}],
                   DEFAULT_ROUTE=None, RELAY_SYNC_WAIT_SECONDS=0.1)
    client = app.test_client()
    before = scrape(client)
    firing = alertmanager({"service": "db", "n": "1"}, {"service": "db", "n": "2"}, {"service": "web"})
    assert client.post("/webhooks/alertmanager", json=firing).status_code == 202
    resolved = alertmanager({"service": "db", "n": "1"}, status="resolved")
    assert client.post("/webhooks/alertmanager", json=resolved).status_code == 202
    job = client.post("/api/v1/incidents", json={"title": "job", "service_key": DB_KEY})
    assert job.status_code == 202  # no worker here: stored, answered "queued"
    after = scrape(client)

    name = "relay_events_stored_total"
    assert delta(before, after, name, source="alertmanager", route="db", action="trigger") == 2
    assert delta(before, after, name, source="alertmanager", route="unrouted", action="trigger") == 1
    assert delta(before, after, name, source="alertmanager", route="db", action="resolve") == 1
    assert delta(before, after, name, source="api", route="direct", action="trigger") == 1
    assert len(statuses(app)) == 5


def test_events_stored_never_to_be_sent_counted_by_reason(make_app, pd):
    web = {"name": "web", "matchers": ['team="web"'], "routing_key": WEB_KEY, "storm": {"max_triggers": 1}}
    app = make_app(ROUTES=[web], DEFAULT_ROUTE={"name": "default", "routing_key": DB_KEY})
    client = app.test_client()
    before = scrape(client)
    post(client, one_alert("DiskFull"))  # waits for the worker started below
    assert post(client, one_alert("DiskFull"))[0]["status"] == "superseded"  # a repeat of the waiting trigger
    (resolve,) = post(client, one_alert("DiskFull", "resolved"))  # supersedes the unsent trigger, and itself
    assert resolve["status"] == "superseded"
    assert post(client, one_alert("DiskFull"))[0]["status"] == "stale"  # firing since before that resolve
    storm = post(client, one_alert("Down", team="web", host="h1"), one_alert("Down", team="web", host="h2"))
    assert [event.get("status") for event in storm] == [None, "held"]  # past the valve's one new alert
    after = scrape(client)

    name = "relay_events_not_sent_total"
    assert delta(before, after, name, source="alertmanager", route="default", reason="superseded") == 3
    assert delta(before, after, name, source="alertmanager", route="default", reason="stale") == 1
    assert delta(before, after, name, source="alertmanager", route="web", reason="held") == 1
    assert total(after, name) - total(before, name) == sum(status in ("superseded", "stale", "held")
                                                           for status in statuses(app)) == 5
    worker.start(app)
    try:  # what was counted as not sent is never sent: only the first web alert and the storm's summary incident
        wait_until(lambda: statuses(app).count("delivered") == 2, timeout=10, message="the two events to send")
        paged = {alert["dedup_key"]: alert["summary"] for alert in pd.alerts()}
        assert paged.pop("relay-storm-web").startswith("storm on route web")
        assert list(paged.values()) == ["Down: disk full (h1)"]
    finally:
        worker.stop()


def test_invalid_webhook_stores_and_counts_no_event(make_app):
    client = make_app(DEFAULT_ROUTE={"name": "default", "routing_key": DB_KEY}).test_client()
    before = scrape(client)
    assert client.post("/webhooks/alertmanager", json={"alerts": "nope"}).status_code == 400
    assert total(scrape(client), "relay_events_stored_total") == total(before, "relay_events_stored_total")


# --- deliveries ------------------------------------------------------------------------------------

def counted(client, before, name, expected=1, **labels):
    """Scrape once the delivery loop has counted its last outcome: it counts right after the commit that a test
    sees in the rows' statuses, so a scrape at once can come a moment early."""
    wait_until(lambda: delta(before, scrape(client), name, **labels) >= expected, message=f"{name} counted")
    return scrape(client)


def test_retry_then_delivery_counted(delivering, pd, routing_key):
    app = delivering(DEFAULT_ROUTE={"name": "default", "routing_key": routing_key})
    client = app.test_client()
    before = scrape(client)
    pd.inject(503, count=1)
    assert client.post("/webhooks/alertmanager", json=alertmanager({"n": "1"})).status_code == 202
    wait_until(lambda: statuses(app) == ["delivered"], message="delivered after one retry")
    after = counted(client, before, "relay_deliveries_total", outcome="delivered", http_status="202")

    assert delta(before, after, "relay_deliveries_total", outcome="retry", http_status="503") == 1
    assert delta(before, after, "relay_deliveries_total", outcome="delivered", http_status="202") == 1
    assert delta(before, after, "relay_retries_scheduled_total") == 1
    assert delta(before, after, "relay_rows_given_up_total") == 0
    # Latency: one row delivered, created → 202, which took at least the retry's backoff.
    assert delta(before, after, "relay_delivery_latency_seconds_count") == 1
    assert 0 < delta(before, after, "relay_delivery_latency_seconds_sum") < 15
    # PagerDuty response time: both attempts.
    assert delta(before, after, "relay_pagerduty_request_duration_seconds_count") == 2
    assert delta(before, after, "relay_pagerduty_request_duration_seconds_bucket", le="+Inf") == 2


def test_refused_event_counted_as_failed(delivering, pd, routing_key):
    app = delivering(DEFAULT_ROUTE={"name": "default", "routing_key": routing_key})
    client = app.test_client()
    pd.set_routing_keys(["f" * 32])  # PagerDuty answers 400 Invalid routing key
    before = scrape(client)
    assert client.post("/webhooks/alertmanager", json=alertmanager({"n": "1"})).status_code == 202
    wait_until(lambda: statuses(app) == ["failed"], message="failed")
    after = counted(client, before, "relay_deliveries_total", outcome="failed", http_status="400")
    assert delta(before, after, "relay_deliveries_total", outcome="failed", http_status="400") == 1
    assert delta(before, after, "relay_retries_scheduled_total") == 0
    assert delta(before, after, "relay_rows_given_up_total") == 0
    assert delta(before, after, "relay_delivery_latency_seconds_count") == 0


def test_given_up_rows_counted(delivering, pd, routing_key):
    app = delivering(DEFAULT_ROUTE={"name": "default", "routing_key": routing_key}, RELAY_GIVE_UP_AFTER_SECONDS=0)
    client = app.test_client()
    pd.inject("refuse", count=1)  # no HTTP answer at all
    pd.inject(502, count=1)
    before = scrape(client)
    assert client.post("/webhooks/alertmanager", json=alertmanager({"n": "1"}, {"n": "2"})).status_code == 202
    wait_until(lambda: statuses(app) == ["dead", "dead"], message="both dead")
    after = counted(client, before, "relay_rows_given_up_total", expected=2)
    assert delta(before, after, "relay_deliveries_total", outcome="retry", http_status="none") == 1
    assert delta(before, after, "relay_deliveries_total", outcome="retry", http_status="502") == 1
    assert delta(before, after, "relay_rows_given_up_total") == 2
    assert delta(before, after, "relay_retries_scheduled_total") == 0


# --- outbox gauges ---------------------------------------------------------------------------------

def test_outbox_gauges_read_from_the_store(make_app):
    app = make_app(DEFAULT_ROUTE={"name": "default", "routing_key": DB_KEY})  # no worker: rows stay open
    client = app.test_client()
    empty = scrape(client)
    assert value(empty, "relay_store_up") == 1
    assert value(empty, "relay_outbox_backlog", status="pending") == 0
    assert value(empty, "relay_outbox_oldest_pending_age_seconds") == 0

    client.post("/webhooks/alertmanager", json=alertmanager({"n": "1"}, {"n": "2"}, {"n": "3"}))
    samples = scrape(client)
    assert value(samples, "relay_outbox_backlog", status="pending") == 3
    assert value(samples, "relay_outbox_backlog", status="retrying") == 0
    assert 0 <= value(samples, "relay_outbox_oldest_pending_age_seconds") < 60

    with app.app_context():
        first, second, _ = [row.id for row in db.session.query(IncidentLog).order_by(IncidentLog.id)]
        db.session.query(IncidentLog).filter(IncidentLog.id == first).update(
            {"status": "retrying", "created_at": utcnow() - timedelta(hours=1)})
        db.session.query(IncidentLog).filter(IncidentLog.id == second).update({"status": "delivered"})
        db.session.commit()
    samples = scrape(client)
    assert value(samples, "relay_outbox_backlog", status="pending") == 1
    assert value(samples, "relay_outbox_backlog", status="retrying") == 1
    assert 3600 <= value(samples, "relay_outbox_oldest_pending_age_seconds") < 3700


@pytest.mark.parametrize("url", ["postgresql+psycopg://postgres@127.0.0.1:1/nowhere",
                                 "sqlite:////nonexistent-relay-dir/relay.sqlite3"])
def test_scrape_survives_a_store_that_is_down(url, pd, caplog):
    app = create_app(app_config(url, pd.events_url))
    response = app.test_client().get("/metrics")
    assert response.status_code == 200
    samples = parse(response.get_data(as_text=True))
    assert value(samples, "relay_store_up") == 0
    assert ("relay_outbox_backlog", (("status", "pending"),)) not in samples
    assert "relay_webhooks_received_total" in response.get_data(as_text=True)  # the counters still answer
    assert "metrics: cannot read the outbox: database unreachable: " in caplog.text  # why, not an exception's name


def test_openmetrics_when_asked(make_app):
    response = make_app().test_client().get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.status_code == 200
    assert response.content_type.startswith("application/openmetrics-text")
    assert response.get_data(as_text=True).rstrip().endswith("# EOF")


# --- several gunicorn workers ----------------------------------------------------------------------

def log_lines(path: Path) -> list[dict]:
    """Every line gunicorn and the app wrote, each of which must be a JSON object."""
    lines = []
    for line in path.read_text().splitlines():
        if line.strip():
            entry = json.loads(line)  # fails the test on any line that is not JSON
            assert isinstance(entry, dict) and {"time", "level", "logger", "message"} <= entry.keys(), line
            lines.append(entry)
    return lines


def stale_counter_file(directory: Path) -> None:
    """Leave counts from an "earlier run" in the metrics directory; gunicorn must empty it at start."""
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    stale = MmapedDict(str(directory / "counter_999999.db"))
    stale.write_value(mmap_key("relay_webhooks_received_total", "relay_webhooks_received_total",
                               ["source", "outcome"], ["alertmanager", "accepted"], "stale"), 1000.0, 0.0)
    stale.close()


@pytest.fixture
def two_workers(tmp_path, pd, routing_key):
    """gunicorn with 2 workers on a SQLite file, logging to a file, with an explicit metrics directory."""
    db_path = tmp_path / "relay.sqlite3"
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    stale_counter_file(metrics_dir)
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{db_path}", "PAGERDUTY_EVENTS_URL": pd.events_url,
           "PAGERDUTY_ROUTING_KEY": routing_key, "RELAY_WORKERS": "2", "RELAY_ACCESS_LOG": "1",
           "RELAY_RETRY_BASE_SECONDS": "0.1", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
           "PATH": f"{BIN}:{os.environ['PATH']}"}
    subprocess.run([BIN / "flask", "--app", "wsgi", "db", "upgrade"], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=120)
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen([BIN / "gunicorn", "-c", "gunicorn.conf.py", "-b", f"127.0.0.1:{port}", "wsgi:app"],
                                cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: proc.poll() is not None or len(booted(log_path)) >= 2 and up(base), timeout=90,
                   message="gunicorn and both workers up")
        assert proc.poll() is None, log_path.read_text()[-3000:]
        yield base, db_path, log_path, proc
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def booted(log_path: Path) -> set[int]:
    text = log_path.read_text() if log_path.exists() else ""
    return {json.loads(line)["pid"] for line in text.splitlines() if "Booting worker" in line}


def up(base: str) -> bool:
    try:
        return requests.get(base + "/readyz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def accepted_by_pid(log_path: Path) -> dict[int, int]:
    counts = {}
    for entry in log_lines(log_path):
        if entry["message"] == "webhook accepted":
            counts[entry["pid"]] = counts.get(entry["pid"], 0) + entry["events"]
    return counts


def scrapes_by_pid(log_path: Path, request_ids) -> dict[str, int]:
    return {entry["request_id"]: entry["pid"] for entry in log_lines(log_path)
            if entry["logger"] == "gunicorn.access" and entry.get("request_id") in request_ids}


def test_gunicorn_workers_report_the_total(two_workers):
    base, db_path, log_path, proc = two_workers
    sent = 0

    def post(n):
        response = requests.post(base + "/webhooks/alertmanager", json=alertmanager({"n": str(n)}), timeout=30)
        assert response.status_code == 202, response.text
        return 1

    # Concurrent requests keep both sync workers busy, so both take some; go on until the log shows they did.
    with ThreadPoolExecutor(8) as pool:
        for _ in range(10):
            sent += sum(pool.map(post, range(sent, sent + 24)))
            if len(accepted_by_pid(log_path)) >= 2:
                break
    split = accepted_by_pid(log_path)
    assert len(split) == 2 and sum(split.values()) == sent, split  # each worker saw only part of them

    def all_delivered():
        with sqlite3.connect(db_path) as conn:
            return conn.execute("SELECT count(*) FROM incident_log WHERE status = 'delivered'").fetchone()[0] == sent
    wait_until(all_delivered, timeout=60, message="every event delivered")

    def check_scrape(request_id):
        response = requests.get(base + "/metrics", headers={"X-Request-ID": request_id}, timeout=30)
        assert response.status_code == 200
        samples = parse(response.text)
        # The stale file from the "earlier run" was removed at start: exactly what this run saw, from any worker.
        assert value(samples, "relay_webhooks_received_total", source="alertmanager", outcome="accepted") == sent
        assert value(samples, "relay_events_stored_total", source="alertmanager", route="default",
                     action="trigger") == sent
        assert value(samples, "relay_deliveries_total", outcome="delivered", http_status="202") == sent
        assert value(samples, "relay_delivery_latency_seconds_count") == sent
        assert value(samples, "relay_outbox_backlog", status="pending") == 0
        return request_id

    ids = []
    with ThreadPoolExecutor(4) as pool:
        for round_ in range(10):
            ids += pool.map(check_scrape, [f"scrape-{round_}-{i}" for i in range(8)])
            time.sleep(0.2)  # the access log line is written after the response
            if len(set(scrapes_by_pid(log_path, ids).values())) >= 2:
                break
    assert set(scrapes_by_pid(log_path, ids).values()) == set(split), "scrapes landed on both workers"

    # A worker that dies takes nothing with it: its counts stay in the sum the new worker reports.
    victim = next(iter(split))
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(booted(log_path) - set(split)) >= 1 and up(base), timeout=90, message="worker replaced")
    for i in range(6):
        check_scrape(f"after-kill-{i}-{uuid.uuid4().hex[:6]}")
    assert proc.poll() is None
