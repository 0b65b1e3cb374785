"""A row's PagerDuty endpoint is fixed when it is stored, whoever sends it; the delivery-process registry says who
delivers; the CLI never delivers behind a running delivery process's back, and says where events go (issue 13,
items 1 and 9)."""
import json
import os
import subprocess
from datetime import timedelta

import pytest

from relay.delivery import worker
from relay.pagerduty.client import safe_url
from relay.store import outbox, processes
from relay.store.models import IncidentLog, db, utcnow
from tests.helpers import alertmanager_notification, firing, wait_until
from tests.processes import BIN, ROOT
from tools.simulator import PagerDutySimulator


@pytest.fixture
def elsewhere():
    """A second PagerDuty endpoint: one that must receive nothing."""
    with PagerDutySimulator() as other:
        yield other


def trigger(runner, *args):
    """Run `relay trigger` through the app's CLI runner; return the result and its JSON answer."""
    result = runner.invoke(args=["relay", "trigger", "--title", "t", *args])
    return result, json.loads(result.stdout)


def stored_row(app, log_id) -> IncidentLog:
    with app.app_context():
        row = db.session.get(IncidentLog, log_id)
        db.session.expunge(row)
        db.session.commit()
        return row


def test_a_row_goes_to_the_url_it_was_stored_for_not_the_senders_and_so_does_its_retry(
        delivering, make_app, pd, elsewhere, routing_key):
    sender = delivering(PAGERDUTY_EVENTS_URL=elsewhere.events_url)  # the delivery worker's own setting: B
    storer = make_app(DEFAULT_ROUTE={"name": "default", "routing_key": routing_key})  # stores for the simulator: A
    pd.set_routing_keys(["e" * 32])  # A refuses the first attempt: the row fails, to be retried by hand
    answer = storer.test_client().post("/webhooks/alertmanager", json=alertmanager_notification([firing("Disk")]))
    log_id = answer.get_json()["events"][0]["log_id"]
    wait_until(lambda: stored_row(sender, log_id).status == "failed", 10, "the refused attempt recorded")

    pd.set_routing_keys([routing_key])
    assert sender.test_client().post(f"/api/v1/log/{log_id}/retry").status_code == 202
    wait_until(lambda: stored_row(sender, log_id).status == "delivered", 10, "the retried row delivered")
    assert [record["status"] for record in pd.received()] == [400, 202]
    assert elsewhere.received() == []
    assert stored_row(sender, log_id).events_url == pd.events_url


def test_a_job_row_is_bound_for_the_storing_process_url(delivering, make_app, pd, elsewhere, routing_key):
    delivering(PAGERDUTY_EVENTS_URL=elsewhere.events_url)
    storer = make_app()
    response = storer.test_client().post("/api/v1/incidents", json={"title": "t", "service_key": routing_key})
    assert response.status_code == 200, response.get_json()
    assert len(pd.accepted()) == 1 and elsewhere.received() == []
    detail = storer.test_client().get(f"/api/v1/log/{response.get_json()['log_id']}").get_json()
    assert detail["events_url"] == pd.events_url


def test_the_log_entry_shows_the_endpoint_without_credentials(make_app, routing_key):
    app = make_app()
    with app.app_context():
        row = outbox.record({"routing_key": routing_key, "event_action": "resolve", "dedup_key": "d"}, source="test",
                            events_url="https://user:secret@proxy.example:8443/v2/enqueue?token=abc")
        db.session.commit()
        log_id = row.id
    client = app.test_client()
    entry = client.get(f"/api/v1/log/{log_id}").get_json()
    assert entry["events_url"] == "https://proxy.example:8443/v2/enqueue"
    page = client.get(f"/log/{log_id}").get_data(as_text=True)
    assert "https://proxy.example:8443/v2/enqueue" in page and "secret" not in page and "token=abc" not in page


def test_the_cli_with_no_delivery_process_delivers_itself_and_says_so(make_app, pd, routing_key):
    app = make_app()
    result, body = trigger(app.test_cli_runner(), "--service-key", routing_key)
    assert result.exit_code == 0 and body["success"] is True
    assert result.stderr.strip() == (f"relay: sending to {pd.events_url} from this command: no delivery process is "
                                     "running (start one with `make run` or `flask --app wsgi relay worker`)")
    assert len(pd.accepted()) == 1 and worker.current() is None  # its own worker stopped with it


def test_the_cli_with_a_delivery_process_sends_through_it_to_its_endpoint(delivering, pd, elsewhere, routing_key):
    app = delivering()
    runner = app.test_cli_runner()
    app.config["PAGERDUTY_EVENTS_URL"] = elsewhere.events_url  # as in a shell that set its own, after the worker
    result, body = trigger(runner, "--service-key", routing_key)
    assert result.exit_code == 0 and body["success"] is True
    running = worker.current()
    assert result.stderr.strip() == (
        f"relay: sending to {pd.events_url} through the running delivery process on host {running.host} pid "
        f"{running.pid}; this shell's PAGERDUTY_EVENTS_URL {elsewhere.events_url} is not used")
    assert len(pd.accepted()) == 1 and elsewhere.received() == []
    assert stored_row(app, body["log_id"]).events_url == pd.events_url


def test_the_queued_answer_says_the_relay_keeps_trying_only_while_a_delivery_process_beats(make_app, delivering,
                                                                                            pd, routing_key):
    app = make_app(RELAY_SYNC_WAIT_SECONDS=0.3)  # no worker here, none elsewhere
    body = app.test_client().post("/api/v1/incidents", json={"title": "t", "service_key": routing_key}).get_json()
    assert body["status"] == "queued" and body["message"] == (
        "stored; PagerDuty has not confirmed it yet, and no delivery process is running: it is sent once one runs "
        "(`make run` or `flask --app wsgi relay worker`)")
    assert pd.received() == []

    app = delivering(RELAY_SYNC_WAIT_SECONDS=0.3)
    pd.set_outage("503")
    body = app.test_client().post("/api/v1/incidents", json={"title": "t", "service_key": routing_key}).get_json()
    assert body["status"] == "queued" and "the relay keeps trying (last attempt: " in body["message"]


def test_the_clis_queued_answer_does_not_count_its_own_worker_which_stops_with_it(make_app, pd, routing_key):
    app = make_app(RELAY_SYNC_WAIT_SECONDS=0.3)
    pd.set_outage("503")
    result, body = trigger(app.test_cli_runner(), "--service-key", routing_key)
    assert result.exit_code == 3 and body["status"] == "queued"
    assert "keeps trying" not in body["message"] and "no delivery process is running" in body["message"]
    assert "(last attempt: " in body["message"]


def test_registry_beats_expire_and_are_forgotten(make_app):
    app = make_app()
    now = utcnow()
    with app.app_context(), db.engine.begin() as conn:
        long_ago = now - timedelta(hours=1)
        processes.beat(conn, "h:1:a", "h", 1, "http://a/v2/enqueue", now, now - timedelta(minutes=5), long_ago)
        processes.beat(conn, "h:2:b", "h", 2, "http://b/v2/enqueue", now, now, long_ago)
        assert [row.id for row in processes.beating(conn, now - timedelta(seconds=30))] == ["h:2:b"]  # a is late
        processes.beat(conn, "h:1:a", "h", 1, "http://a/v2/enqueue", now, now + timedelta(seconds=1), long_ago)
        found = processes.beating(conn, now - timedelta(seconds=30))
        assert [(row.id, row.pid, row.events_url) for row in found] == [("h:1:a", 1, "http://a/v2/enqueue"),
                                                                       ("h:2:b", 2, "http://b/v2/enqueue")]
        processes.forget(conn, "h:1:a")
        processes.beat(conn, "h:3:c", "h", 3, "http://c/v2/enqueue", now, now, now + timedelta(seconds=1))
        assert [row.id for row in processes.beating(conn, now - timedelta(days=1))] == ["h:3:c"]  # b: long silent


def test_a_worker_registers_while_it_runs_and_leaves_on_a_clean_stop(make_app, pd):
    app = make_app()
    running = worker.start(app)

    def registered():
        with app.app_context():
            found = processes.beating(db.session, utcnow() - timedelta(seconds=30))
            db.session.commit()
            return found

    try:
        row = wait_until(registered, 5, "the worker's registry row")[0]
        assert (row.id, row.host, row.pid, row.events_url) == (running.id, running.host, os.getpid(), pd.events_url)
    finally:
        worker.stop()
    assert registered() == []


@pytest.mark.system
def test_a_cli_run_beside_a_delivery_process_leaves_every_attempt_to_it(make_app, pd, elsewhere, routing_key):
    """The issue's case: the server's delivery process points at the simulator, a shell's CLI at another URL."""
    app = make_app()
    env = {**os.environ, "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"], "PAGERDUTY_EVENTS_URL": pd.events_url,
           "RELAY_DELIVERY_POLL_SECONDS": "0.2", "RELAY_RETRY_BASE_SECONDS": "0.05", "RELAY_RETRY_MAX_SECONDS": "0.2",
           "RELAY_LOG_LEVEL": "WARNING"}
    delivery = subprocess.Popen([BIN / "flask", "--app", "wsgi", "relay", "worker"], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def beating():
            with app.app_context():
                found = processes.beating(db.session, utcnow() - timedelta(seconds=30))
                db.session.commit()
                return [row for row in found if row.pid == delivery.pid]

        wait_until(beating, 30, "the delivery process in the registry")
        pd.inject(503, count=2)  # three attempts, each one the delivery process's
        cli = subprocess.run([BIN / "flask", "--app", "wsgi", "relay", "trigger", "--title", "from a shell",
                              "--service-key", routing_key],
                             cwd=ROOT, env={**env, "PAGERDUTY_EVENTS_URL": elsewhere.events_url,
                                            "RELAY_SYNC_WAIT_SECONDS": "15"},
                             capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0, cli.stdout + cli.stderr
        body = json.loads(cli.stdout)
        assert body["success"] is True
        assert (f"relay: sending to {safe_url(pd.events_url)} through the running delivery process on host "
                f"{beating()[0].host} pid {delivery.pid}; this shell's PAGERDUTY_EVENTS_URL "
                f"{elsewhere.events_url} is not used") in cli.stderr
        assert elsewhere.received() == []
        assert [record["status"] for record in pd.received()] == [503, 503, 202]
        row = stored_row(app, body["log_id"])
        assert (row.events_url, row.attempts) == (pd.events_url, 3)
    finally:
        delivery.terminate()
        delivery.wait(timeout=30)
    assert beating() == []  # a clean stop leaves the registry
