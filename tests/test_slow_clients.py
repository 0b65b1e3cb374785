"""Intake does not depend on how many clients are slow: requests are read whole before they are handled, the
job's waiting requests have threads of their own, and a request not received within its deadline is closed."""
import json
import os
import select
import socket
import subprocess
import threading
import time

import pytest
import requests

from tests.helpers import alertmanager_notification, firing
from tests.processes import BIN, ROOT, gunicorn, wait_for

pytestmark = pytest.mark.system

SLOW = 30  # connections of each kind: idle, trickling
DEADLINE = 2.0


def prompt(n: int) -> dict:
    """A well-behaved sender's notification: one firing alert of its own."""
    return alertmanager_notification([firing(f"Prompt{n}")])


class Trickler:
    """A connection that sends its request's head one byte at a time, a byte every half second."""

    HEAD = b"POST /webhooks/alertmanager HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n" \
           b"Content-Length: 100\r\n\r\n"

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.closed_after = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.started = time.monotonic()
        self.thread.start()

    def _run(self):
        for byte in self.HEAD * 10:
            try:
                self.sock.send(bytes([byte]))
                if select.select([self.sock], [], [], 0.5)[0] and not self.sock.recv(1024):
                    raise ConnectionResetError  # the relay closed the connection
            except OSError:
                self.closed_after = time.monotonic() - self.started
                return


@pytest.fixture
def relay(tmp_path, pd, routing_key):
    db_path = tmp_path / "relay.sqlite3"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{db_path}", "PAGERDUTY_EVENTS_URL": pd.events_url,
           "PAGERDUTY_ROUTING_KEY": routing_key, "RELAY_DELIVERY": "0", "RELAY_SYNC_WAIT_SECONDS": "8",
           "RELAY_REQUEST_DEADLINE_SECONDS": str(DEADLINE), "PATH": f"{BIN}:{os.environ['PATH']}"}
    subprocess.run([BIN / "flask", "--app", "wsgi", "db", "upgrade"], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=60)
    with gunicorn(env) as (base, proc):
        wait_for(base + "/healthz", proc)
        yield base, proc


def test_slow_clients_and_waiting_jobs_leave_webhooks_prompt(relay, routing_key):
    base, proc = relay
    port = int(base.rsplit(":", 1)[1])
    for n in range(4):  # each worker's first requests load what the app loads lazily
        requests.post(base + "/webhooks/alertmanager", json=prompt(100 + n), timeout=10)
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(SLOW)]
    tricklers = [Trickler(port) for _ in range(SLOW)]
    jobs = [threading.Thread(target=requests.post, args=(base + "/api/v1/incidents",), daemon=True,
                             kwargs={"json": {"title": "waits", "service_key": routing_key}, "timeout": 20})
            for _ in range(4)]  # no delivery process: each waits RELAY_SYNC_WAIT_SECONDS for an outcome
    for job in jobs:
        job.start()
    time.sleep(0.5)
    latencies = []
    for n in range(20):
        started = time.monotonic()
        response = requests.post(base + "/webhooks/alertmanager", json=prompt(n), timeout=10)
        latencies.append(time.monotonic() - started)
        assert response.status_code == 202, response.text
    assert max(latencies) < 1.0, latencies

    time.sleep(DEADLINE + 1.5)
    closed = [t.closed_after for t in tricklers]
    assert all(after is not None and after < DEADLINE + 2.0 for after in closed), closed
    assert proc.poll() is None
    for sock in idle:
        sock.close()


def raw_exchange(port: int, request: bytes, pause_after_head: float = 0.0) -> bytes:
    """Send request (its head, then after a pause its body) on a new connection; return all the relay answered."""
    head, _, body = request.partition(b"\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + b"\r\n\r\n")
        time.sleep(pause_after_head)
        sock.sendall(body)
        return read_all(sock)


def read_all(sock) -> bytes:
    """Read what the relay answers until it closes the connection."""
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


def test_a_request_arriving_in_pieces_is_handled_once_whole(relay):
    base, _ = relay
    port = int(base.rsplit(":", 1)[1])
    body = json.dumps(prompt(7)).encode()
    head = (b"POST /webhooks/alertmanager HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    assert raw_exchange(port, head + body, pause_after_head=0.3).startswith(b"HTTP/1.1 202")

    chunked = (b"POST /webhooks/alertmanager HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    assert raw_exchange(port, chunked, pause_after_head=0.3).startswith(b"HTTP/1.1 202")


def test_expect_100_continue_is_answered_before_the_body_is_sent(relay):
    base, _ = relay
    port = int(base.rsplit(":", 1)[1])
    body = json.dumps(prompt(8)).encode()
    head = (b"POST /webhooks/alertmanager HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head)
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"  # as curl waits for before sending a body
        sock.sendall(body)
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 202") and answer.count(b"100 Continue") == 0


def test_a_body_over_the_limit_is_refused_without_waiting_for_it(relay):
    base, _ = relay
    port = int(base.rsplit(":", 1)[1])
    head = (b"POST /webhooks/alertmanager HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: 999999999\r\n\r\n")
    started = time.monotonic()
    answer = raw_exchange(port, head + b"{")
    assert answer.startswith(b"HTTP/1.1 413") and time.monotonic() - started < DEADLINE
    assert b'"the request body is 999999999 bytes; at most 4194304 are taken in one request (RELAY_MAX_BODY_BYTES)"' \
        in answer


def test_a_worker_leaving_at_max_requests_answers_the_connections_it_accepted(tmp_path, pd, routing_key):
    """A worker takes every connection waiting at its listener; when it reaches --max-requests it must still answer
    those it took, not close them unanswered (the sender would see its connection reset)."""
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'relay.sqlite3'}",
           "PAGERDUTY_EVENTS_URL": pd.events_url, "PAGERDUTY_ROUTING_KEY": routing_key, "RELAY_DELIVERY": "0",
           "RELAY_WORKERS": "1", "PATH": f"{BIN}:{os.environ['PATH']}"}
    with gunicorn(env, "wsgi:app", "--max-requests", "1") as (base, proc):
        wait_for(base + "/healthz", proc, timeout=60)  # the first worker's one request: a second one boots
        port = int(base.rsplit(":", 1)[1])
        body = json.dumps(prompt(1)).encode()
        head = (f"POST /webhooks/alertmanager HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        partial = socket.create_connection(("127.0.0.1", port))
        partial.sendall(head)  # taken by the second worker as it starts, its body still to come
        assert requests.get(base + "/healthz", timeout=30).status_code == 200  # that worker's last request
        time.sleep(0.5)
        partial.sendall(body)
        partial.settimeout(10)
        with partial:
            answer = read_all(partial)
        assert answer.startswith(b"HTTP/1.1 202"), answer[:200]
