"""The relay as it runs in production: migrated by the CLI, served by gunicorn over real sockets."""
import json
import os
import re
import sqlite3
import subprocess
import time

import pytest
import requests

from tests.helpers import wait_until
from tests.processes import BIN, ROOT, delivery_process, gunicorn, is_delivery_process, stat_fields, wait_for


@pytest.fixture
def relay_env(tmp_path, pd):
    """Environment for a relay process: a fresh SQLite file, the simulator as PagerDuty."""
    db_path = tmp_path / "relay.sqlite3"
    return {**os.environ, "DATABASE_URL": f"sqlite:///{db_path}", "PAGERDUTY_EVENTS_URL": pd.events_url,
            "RELAY_BIND": "127.0.0.1:1", "RELAY_SYNC_WAIT_SECONDS": "5", "RELAY_RETRY_BASE_SECONDS": "0.1",
            "PATH": f"{BIN}:{os.environ['PATH']}"}, db_path


@pytest.fixture
def served_relay(relay_env):
    """Migrate with the CLI and serve with gunicorn."""
    env, db_path = relay_env
    subprocess.run([BIN / "flask", "--app", "wsgi", "db", "upgrade"], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=60)
    with gunicorn(env) as (base, proc):
        wait_for(base + "/readyz", proc)  # ready: the delivery process beats, not only the web workers
        yield base, db_path, proc


def test_gunicorn_serves_the_job_end_to_end(served_relay, pd, routing_key):
    base, db_path, _ = served_relay
    response = requests.post(base + "/api/v1/incidents", timeout=10,
                             json={"title": "Served by gunicorn", "service_key": routing_key, "urgency": "low"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert pd.accepted()[0]["payload"]["summary"] == "Served by gunicorn"
    with sqlite3.connect(db_path) as conn:
        row = conn.execute("SELECT status, routing_key_masked, http_status FROM incident_log WHERE id = ?",
                           (body["log_id"],)).fetchone()
    assert row == ("delivered", "…" + routing_key[-4:], 202)


def test_bad_input_never_5xx_and_process_keeps_serving(served_relay):
    base, _, proc = served_relay
    for data in [b"{", b"\xff\xfe", b"[]", b'{"title": null}', b"x" * 5_000_000]:
        response = requests.post(base + "/api/v1/incidents", data=data, timeout=10,
                                 headers={"Content-Type": "application/json"})
        assert 400 <= response.status_code < 500, (data[:20], response.status_code)
        assert "error" in response.json()
    assert requests.get(base + "/healthz", timeout=5).status_code == 200 and proc.poll() is None


def test_gunicorn_logs_never_show_the_routing_key(served_relay, pd, routing_key):
    base, _, proc = served_relay
    pd.set_routing_keys(["a" * 32])
    requests.post(base + "/api/v1/incidents", json={"title": "t", "service_key": routing_key}, timeout=10)
    pd.set_outage("refuse")
    requests.post(base + "/api/v1/incidents", json={"title": "t", "service_key": routing_key}, timeout=10)
    proc.terminate()
    output = proc.stdout.read()
    proc.wait(timeout=30)
    assert "Booting worker" in output  # the log was captured, so its silence about the key means something
    assert routing_key not in output


def _nice(pid: int) -> int:
    return int(stat_fields(pid)[16])


def test_delivery_process_yields_the_cpu_to_the_web_workers(served_relay):
    _, _, proc = served_relay
    wait_until(lambda: _nice(delivery_process(proc.pid)) == _nice(proc.pid) + 10,  # RELAY_DELIVERY_NICE's default
               timeout=10, message="the delivery process at a lower priority than the web workers")


def test_delivery_process_stops_when_the_master_is_killed(served_relay):
    _, _, proc = served_relay
    delivery = delivery_process(proc.pid)
    proc.kill()  # SIGKILL: no on_exit hook runs
    proc.wait(timeout=10)
    wait_until(lambda: not is_delivery_process(delivery), timeout=10, message="the delivery process gone")


def test_every_process_freezes_its_start_up_objects(relay_env):
    env, _ = relay_env
    with gunicorn({**env, "RELAY_LOG_LEVEL": "DEBUG"}) as (base, proc):  # said at debug: nothing to act on
        wait_for(base + "/readyz", proc)
        proc.terminate()
        lines = [json.loads(line) for line in proc.stdout.read().splitlines() if line.startswith("{")]
        proc.wait(timeout=30)
    frozen = [line for line in lines if "start-up objects out of the garbage collector's way" in line["message"]]
    # Two web workers and the delivery process, each with the app loaded: tens of thousands of objects.
    assert len({line["pid"] for line in frozen}) == 3, frozen
    assert all(line["level"] == "DEBUG" for line in frozen), frozen
    assert all(int(re.search(r"froze (\d+)", line["message"])[1]) > 10_000 for line in frozen), frozen


OTHER_APP = '''
import gc
import sys

from flask import Flask

app = Flask(__name__)
app.config["RELAY_DELIVERY"] = False  # gunicorn.conf.py's post_worker_init sets it


@app.get("/")
def state():
    return {"relay_loaded": "relay" in sys.modules, "frozen": gc.get_freeze_count()}
'''


def test_the_gunicorn_config_keeps_the_relay_out_of_other_apps(tmp_path):
    """bench/bare_app.py is served with the same gunicorn.conf.py: its hooks must not import the relay (whose
    SQLAlchemy listeners would begin a second transaction on the other app's SQLite connections)."""
    (tmp_path / "other_app.py").write_text(OTHER_APP)
    env = {**os.environ, "RELAY_DELIVERY": "0", "PATH": f"{BIN}:{os.environ['PATH']}"}
    with gunicorn(env, "other_app:app", "--pythonpath", str(tmp_path)) as (base, proc):
        wait_for(base + "/", proc)
        state = requests.get(base + "/", timeout=5).json()
    assert state["relay_loaded"] is False
    assert state["frozen"] > 1_000  # Flask's own start-up objects, frozen all the same


def test_gunicorn_with_a_bad_setting_stops_with_the_line_that_names_it(relay_env):
    env, _ = relay_env
    env = {**env, "RELAY_CLAIM_LEASE_SECONDS": "1"}
    started = time.monotonic()
    with gunicorn(env) as (_, proc):
        output, _ = proc.communicate(timeout=30)  # it stops by itself: no worker started again and again
    assert proc.returncode != 0 and time.monotonic() - started < 30
    assert "relay: configuration error: RELAY_CLAIM_LEASE_SECONDS (1.0) must exceed" in output
    assert output.count("relay: configuration error") <= 3  # the web workers and the delivery process, once each
