"""The delivery process comes back: every way of starting the relay, killed at every moment, delivers again."""
import json
import os
import re
import signal
import sqlite3
import subprocess
import threading
import time

import pytest
import requests

from tests.helpers import alertmanager_notification, firing, wait_until
from tests.processes import BIN, ROOT, delivery_process, delivery_processes, free_port, gunicorn_master

pytestmark = pytest.mark.system  # gunicorn, make and sh, as a user starts them


def docker_command() -> list[str]:
    """The Dockerfile's CMD, as the image runs it."""
    return json.loads(re.search(r"^CMD (\[.*\])$", (ROOT / "Dockerfile").read_text(), re.M)[1])


START_PATHS = {  # on a fresh database each time: gunicorn's master brings its schema up to date
    "make run": lambda: ["make", "--no-print-directory", "run"],
    "gunicorn": lambda: [BIN / "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
    "docker CMD": docker_command,
}


class Churn:
    """Requests in a loop: with --max-requests the master forks new web workers all the time, also while it
    starts a delivery process (the moment that left the old supervisor stuck for good)."""

    def __init__(self, base):
        self.base, self.stopping = base, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stopping.is_set():
            try:
                requests.get(self.base + "/healthz", timeout=2)
            except requests.RequestException:
                time.sleep(0.05)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join(5)


def ready(base) -> bool:
    """Tell whether /readyz answers 200 (a worker being replaced may keep it waiting)."""
    try:
        return requests.get(base + "/readyz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def post_alert(base, name):
    notification = alertmanager_notification([firing(name)])
    response = requests.post(base + "/webhooks/alertmanager", json=notification, timeout=10)
    assert response.status_code == 202, response.text


def delivered(pd) -> list[str]:
    """The summaries PagerDuty accepted (an alert's summary starts with its alertname)."""
    return [event["payload"]["summary"] for event in pd.accepted()]


def claimed(db_path, name) -> bool:
    """Tell whether a delivery process holds the alert's row (its send is under way)."""
    with sqlite3.connect(db_path) as conn:
        return bool(conn.execute("SELECT 1 FROM incident_log WHERE summary = ? AND claimed_by IS NOT NULL",
                                 (name,)).fetchone())


def replacement(master, old, timeout=20) -> int:
    """The delivery process the master starts in place of old."""
    return wait_until(lambda: [pid for pid in delivery_processes(master) if pid != old], timeout=timeout,
                      message=f"a delivery process in place of {old}", interval=0.1)[0]


@pytest.mark.parametrize("path", list(START_PATHS))
def test_the_delivery_process_is_restarted_whenever_it_dies(path, tmp_path, pd, routing_key):
    port, db_path = free_port(), tmp_path / "relay.sqlite3"
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{db_path}",
           "PAGERDUTY_EVENTS_URL": pd.events_url, "PAGERDUTY_ROUTING_KEY": routing_key,
           "RELAY_BIND": f"127.0.0.1:{port}", "RELAY_CLAIM_LEASE_SECONDS": "3",
           "PAGERDUTY_CONNECT_TIMEOUT": "0.5", "PAGERDUTY_READ_TIMEOUT": "2",
           "GUNICORN_CMD_ARGS": "--max-requests 5", "PATH": f"{BIN}:{os.environ['PATH']}"}
    proc = subprocess.Popen(START_PATHS[path](), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    log = []
    reader = threading.Thread(target=lambda: log.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        master = gunicorn_master(proc)
        # 1. Killed while it starts, before it has beaten once.
        first = delivery_process(master, timeout=60)
        with Churn(base):
            os.kill(first, signal.SIGKILL)
            current = replacement(master, first)
            wait_until(lambda: ready(base), timeout=30, message="ready after the first restart", interval=0.2)
            # 2. Killed while idle; what arrives meanwhile waits in the outbox and goes once it is back.
            os.kill(current, signal.SIGKILL)
            post_alert(base, "WhileDead")
            current = replacement(master, current)
            wait_until(lambda: "WhileDead" in delivered(pd), timeout=20, message="the alert sent while it was dead")
            # 3. Killed in the middle of a send: the lease runs out and the new process sends it.
            pd.set_latency(1.0)
            post_alert(base, "MidSend")
            wait_until(lambda: claimed(db_path, "MidSend"), timeout=10, message="a send in flight")
            os.kill(current, signal.SIGKILL)
            pd.set_latency(0)
            replacement(master, current)
            wait_until(lambda: "MidSend" in delivered(pd), timeout=20, message="the alert in flight when killed")
        assert requests.get(base + "/healthz", timeout=5).status_code == 200
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        reader.join(5)
        print("".join(log)[-5000:])  # shown when the test fails
    output = "".join(log)
    assert output.count("starting a new one in 1 s") >= 3, output[-3000:]
    assert not delivery_processes(master)  # stopped with the master, not left behind
