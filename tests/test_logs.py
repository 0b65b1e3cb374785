"""Logs: one JSON object per line with a request id, sensible levels, and never a routing key or token."""
import hashlib
import hmac
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from relay.store.models import IncidentLog, db
from tests.helpers import alertmanager_notification, firing, statuses, wait_until

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
FIXTURES = Path(__file__).parent / "fixtures"


def alerts(*names, marker="") -> dict:
    """An Alertmanager notification with one firing alert per name."""
    return alertmanager_notification([firing(name, {"summary": f"{name} {marker}".strip()}) for name in names])


def json_lines(text: str) -> list[dict]:
    """Parse captured output; every non-empty line must be one JSON object with the common fields."""
    entries = []
    for line in text.splitlines():
        if line.strip():
            entry = json.loads(line)
            assert isinstance(entry, dict) and {"time", "level", "logger", "message", "pid"} <= entry.keys(), line
            entries.append(entry)
    return entries



# --- format and request ids ------------------------------------------------------------------------

def test_webhook_accepted_is_one_info_json_line_with_the_request_id(make_app, capfd):
    client = make_app(DEFAULT_ROUTE={"name": "default", "routing_key": "d" * 32}).test_client()
    capfd.readouterr()
    response = client.post("/webhooks/alertmanager", json=alerts("A", "B"), headers={"X-Request-ID": "req-42.a:b"})
    assert response.status_code == 202
    assert response.headers["X-Request-ID"] == "req-42.a:b"
    entries = json_lines(capfd.readouterr().err)
    accepted = [e for e in entries if e["message"] == "webhook accepted"]
    assert len(accepted) == 1
    assert accepted[0]["level"] == "INFO" and accepted[0]["logger"] == "relay.web.webhooks"
    assert accepted[0]["request_id"] == "req-42.a:b"
    assert accepted[0]["source"] == "alertmanager" and accepted[0]["events"] == 2 and accepted[0]["unrouted"] == 0


@pytest.mark.parametrize("given", [None, "", "has space", "x" * 200, "<script>", 'a"b', "-starts-with-dash"])
def test_unfit_request_ids_are_replaced(make_app, capfd, given):
    client = make_app().test_client()
    headers = {"X-Request-ID": given} if given is not None else {}
    first = client.post("/webhooks/alertmanager", data="{", content_type="application/json", headers=headers)
    second = client.get("/healthz", headers=headers)
    for response in (first, second):
        request_id = response.headers["X-Request-ID"]
        assert request_id != given and len(request_id) == 32 and int(request_id, 16) >= 0
    assert first.headers["X-Request-ID"] != second.headers["X-Request-ID"]
    refused = [e for e in json_lines(capfd.readouterr().err) if e["message"] == "webhook refused"]
    assert refused[-1]["request_id"] == first.headers["X-Request-ID"] and refused[-1]["outcome"] == "invalid"


def test_info_never_carries_bodies_or_headers(make_app, capfd):
    client = make_app(DEFAULT_ROUTE={"name": "default", "routing_key": "d" * 32}).test_client()
    body_marker, header_marker = "body-" + secrets.token_hex(8), "header-" + secrets.token_hex(8)
    client.post("/webhooks/alertmanager", json=alerts("A", marker=body_marker), headers={"X-Marker": header_marker})
    client.post("/webhooks/alertmanager", data='{"x": "' + body_marker + '"', content_type="application/json",
                headers={"X-Marker": header_marker})  # refused: invalid JSON, still no body in the log
    client.post("/webhooks/grafana", json={"note": body_marker}, headers={"X-Marker": header_marker})
    output = capfd.readouterr().err
    assert "webhook accepted" in output and "webhook refused" in output
    assert body_marker not in output and header_marker not in output


# --- levels of delivery outcomes ---------------------------------------------------------------------

def test_delivery_outcome_levels(delivering, pd, routing_key, capfd):
    app = delivering(DEFAULT_ROUTE={"name": "default", "routing_key": routing_key})
    client = app.test_client()
    capfd.readouterr()
    pd.inject(503, count=1)
    client.post("/webhooks/alertmanager", json=alerts("retried"))
    wait_until(lambda: statuses(app) == ["delivered"], message="delivered after a retry")
    client.post("/webhooks/alertmanager", json=alerts("plain"))
    wait_until(lambda: statuses(app) == ["delivered", "delivered"], message="plain delivery")
    pd.set_routing_keys(["f" * 32])
    client.post("/webhooks/alertmanager", json=alerts("refused"))
    wait_until(lambda: statuses(app)[-1] == "failed", message="refused")
    time.sleep(0.1)
    entries = [e for e in json_lines(capfd.readouterr().err) if e["logger"] == "relay.delivery.worker"]
    assert [(e["level"], e["outcome"], e["http_status"]) for e in entries] == [
        ("WARNING", "retry", 503), ("ERROR", "failed", 400)]  # plain successes say nothing at INFO
    retry, failed = entries
    with app.app_context():
        first, _, third = [row.id for row in db.session.query(IncidentLog).order_by(IncidentLog.id)]
    assert retry["log_id"] == first and retry["attempt"] == 1 and retry["routing_key"] == "…" + routing_key[-4:]
    assert failed["log_id"] == third and failed["pd_errors"] == ["Invalid routing key"]


def test_given_up_is_an_error(delivering, pd, routing_key, capfd):
    app = delivering(DEFAULT_ROUTE={"name": "default", "routing_key": routing_key}, RELAY_GIVE_UP_AFTER_SECONDS=0)
    capfd.readouterr()
    pd.inject("refuse", count=1)
    app.test_client().post("/webhooks/alertmanager", json=alerts("dead"))
    wait_until(lambda: statuses(app) == ["dead"], message="dead")
    time.sleep(0.1)
    [entry] = [e for e in json_lines(capfd.readouterr().err) if e["logger"] == "relay.delivery.worker"]
    assert entry["level"] == "ERROR" and "given up" in entry["message"]
    assert entry["http_status"] is None and entry["error"]


# --- secrets -----------------------------------------------------------------------------------------

@pytest.fixture
def store_fails():
    """Make every insert into incident_log fail inside the database (install(app)), until the test ends."""
    installed = []

    def install(app):
        with app.app_context():
            if db.engine.dialect.name == "sqlite":
                db.session.execute(sa.text("CREATE TRIGGER relay_test_boom BEFORE INSERT ON incident_log "
                                           "BEGIN SELECT RAISE(ABORT, 'boom'); END"))
            else:
                db.session.execute(sa.text("CREATE FUNCTION relay_test_boom() RETURNS trigger LANGUAGE plpgsql "
                                           "AS $$ BEGIN RAISE EXCEPTION 'boom'; END $$"))
                db.session.execute(sa.text("CREATE TRIGGER relay_test_boom BEFORE INSERT ON incident_log "
                                           "FOR EACH ROW EXECUTE FUNCTION relay_test_boom()"))
            db.session.commit()
        installed.append(app)

    yield install
    for app in installed:
        with app.app_context():
            if db.engine.dialect.name == "sqlite":
                db.session.execute(sa.text("DROP TRIGGER IF EXISTS relay_test_boom"))
            else:
                db.session.execute(sa.text("DROP TRIGGER IF EXISTS relay_test_boom ON incident_log"))
                db.session.execute(sa.text("DROP FUNCTION IF EXISTS relay_test_boom()"))
            db.session.commit()


def test_no_secret_in_any_output(delivering, pd, capfd, store_fails):
    """Known routing keys and tokens through success, PagerDuty 400, 5xx, a dropped connection and exceptions:
    none of them in the captured log or in any response; their masked forms and the paths' lines are there."""
    route_key, job_key, refused_key = (secrets.token_hex(16) for _ in range(3))
    webhook_token, hmac_secret, api_token = (secrets.token_hex(16) for _ in range(3))
    known = {"route_key": route_key, "job_key": job_key, "refused_key": refused_key,
             "webhook_token": webhook_token, "hmac_secret": hmac_secret, "api_token": api_token}
    app = delivering(DEFAULT_ROUTE={"name": "default", "routing_key": route_key}, RELAY_API_TOKEN=api_token,
                     WEBHOOK_AUTH={"alertmanager": {"bearer_token": webhook_token},
                                   "grafana": {"hmac_secret": hmac_secret}})
    client = app.test_client()
    api = {"Authorization": f"Bearer {api_token}"}
    responses = []

    def call(method, url, **kwargs):
        response = getattr(client, method)(url, **kwargs)
        responses.append(response)
        return response

    def job(key):
        return call("post", "/api/v1/incidents", json={"title": "t", "service_key": key}, headers=api)

    # Success: webhooks with their credentials (bearer; Grafana's HMAC), and the job.
    assert call("post", "/webhooks/alertmanager", json=alerts("ok"),
                headers={"Authorization": f"Bearer {webhook_token}"}).status_code == 202
    grafana = (FIXTURES / "grafana_unified_firing_docs.json").read_bytes()
    signature = hmac.new(hmac_secret.encode(), grafana, hashlib.sha256).hexdigest()
    assert call("post", "/webhooks/grafana", data=grafana, content_type="application/json",
                headers={"X-Grafana-Alerting-Signature": signature}).status_code == 202
    assert job(job_key).status_code == 200
    # Wrong credentials: 401, nothing echoed.
    assert call("post", "/webhooks/alertmanager", json=alerts("x"),
                headers={"Authorization": f"Bearer {webhook_token}x"}).status_code == 401
    assert call("post", "/api/v1/incidents", json={"title": "t", "service_key": job_key},
                headers={"Authorization": f"Bearer {api_token}x"}).status_code == 401
    # PagerDuty 400: the key is refused.
    pd.set_routing_keys([route_key, job_key])
    refused = job(refused_key)
    assert refused.status_code == 422 and "Invalid routing key" in refused.get_data(as_text=True)
    # 5xx, then a dropped connection (an exception inside requests): retried, then delivered.
    pd.inject(503, count=2)
    assert job(job_key).status_code == 200
    pd.inject("refuse", count=1)
    assert job(job_key).status_code == 200
    # Exceptions: the store fails mid-request (a database error's text would quote the row, key included).
    store_fails(app)
    assert job(job_key).status_code == 500
    assert call("post", "/webhooks/alertmanager", json=alerts("boom"),
                headers={"Authorization": f"Bearer {webhook_token}"}).status_code == 500
    wait_until(lambda: statuses(app).count("delivered") >= 5, message="deliveries recorded")
    time.sleep(0.2)

    captured = capfd.readouterr()
    output = captured.out + captured.err
    answers = "\n".join(r.get_data(as_text=True) + "\n" + str(r.headers) for r in responses)
    for name, secret in known.items():
        assert secret not in output, f"{name} in the log"
        assert secret not in answers, f"{name} in a response"
    # The capture saw every path, with masked keys where a key is worth naming.
    entries = json_lines(captured.err)
    messages = [e["message"] for e in entries]
    assert messages.count("webhook accepted") == 2
    assert "PagerDuty refused the event; it will not be retried" in messages
    assert messages.count("delivery failed; will retry") == 3
    assert messages.count("unhandled error") == 2
    assert any("Traceback" in e.get("exception", "") and "boom" in e["exception"] for e in entries)
    assert any(e.get("routing_key") == "…" + job_key[-4:] for e in entries)
    assert any(e.get("routing_key") == "…" + refused_key[-4:] for e in entries)


# --- gunicorn ----------------------------------------------------------------------------------------

def test_gunicorn_logs_json_without_access_log_by_default(tmp_path, pd):
    db_path = tmp_path / "relay.sqlite3"
    env = {key: value for key, value in os.environ.items()
           if key not in ("RELAY_ACCESS_LOG", "PROMETHEUS_MULTIPROC_DIR")}
    env.update(DATABASE_URL=f"sqlite:///{db_path}", PAGERDUTY_EVENTS_URL=pd.events_url, RELAY_WORKERS="1",
               PATH=f"{BIN}:{os.environ['PATH']}")
    subprocess.run([BIN / "flask", "--app", "wsgi", "db", "upgrade"], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=120)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen([BIN / "gunicorn", "-c", "gunicorn.conf.py", "-b", f"127.0.0.1:{port}", "wsgi:app"],
                                cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        def up():
            try:
                return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
            except requests.RequestException:
                return proc.poll() is not None
        wait_until(up, timeout=90, message="gunicorn up")
        response = requests.post(f"http://127.0.0.1:{port}/webhooks/alertmanager", json=alerts("A"), timeout=10,
                                 headers={"X-Request-ID": "from-the-balancer-1"})
        assert response.status_code == 202 and response.headers["X-Request-ID"] == "from-the-balancer-1"
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    entries = json_lines(log_path.read_text())  # every line, gunicorn's own included, is JSON
    loggers = {e["logger"] for e in entries}
    assert {"gunicorn.error", "relay.web.webhooks"} <= loggers
    assert "gunicorn.access" not in loggers
    assert any(e["message"].startswith("Booting worker") for e in entries)
    [accepted] = [e for e in entries if e["message"] == "webhook accepted"]
    assert accepted["request_id"] == "from-the-balancer-1"
