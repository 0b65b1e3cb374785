"""End-to-end harness: the relay under gunicorn, real Alertmanager and Prometheus, on loopback.

Every process gets a random free port on 127.0.0.1, every wait is bounded, and every process is killed on the
way out of its context manager, test failure or not. Configuration files are written as JSON, which YAML
(Alertmanager's and Prometheus's format) reads as it is, so no YAML library is needed.
"""
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from tests.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

ALERTMANAGER_BIN = "/usr/bin/prometheus-alertmanager"
AMTOOL_BIN = "/usr/bin/amtool"
PROMETHEUS_BIN = "/usr/bin/prometheus"

START_TIMEOUT = 30  # seconds for any process to answer its health check
STOP_TIMEOUT = 10  # seconds between SIGTERM and SIGKILL

# Loopback only: never let an HTTP(S)_PROXY in the environment carry the test's own requests.
http = requests.Session()
http.trust_env = False


def wait_for(predicate, timeout: float, interval: float = 0.1, message: str = "condition"):
    """Call predicate until it returns something truthy and return that; fail the test after timeout seconds.

    Exceptions from predicate count as "not yet" (a server still starting), but the last one is reported.
    """
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except AssertionError:
            raise  # a process died: no point waiting
        except Exception as exc:  # noqa: BLE001 - anything else means "not ready yet"
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {message}{detail}")
        time.sleep(interval)


def require_binaries(*paths: str) -> None:
    """Fail (never skip) when a binary the end-to-end tests need is not installed."""
    missing = [p for p in paths if not (os.path.isfile(p) and os.access(p, os.X_OK))]
    if missing:
        pytest.fail(
            f"missing {', '.join(missing)}: the end-to-end tests need Debian's prometheus-alertmanager and "
            f"prometheus packages. Run .ci/run as root (it installs them), or "
            f"apt-get install -y prometheus-alertmanager prometheus",
            pytrace=False,
        )


def write_config(path: Path, document) -> Path:
    """Write a YAML config file as JSON (valid YAML)."""
    path.write_text(json.dumps(document, indent=2))
    return path


# --- processes ---------------------------------------------------------------------------------------------

class Process:
    """A child process in its own process group, its output in a log file."""

    def __init__(self, name: str, argv: list, log_path: Path, env: dict | None = None, cwd=None):
        """Start argv now."""
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([str(a) for a in argv], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the process's output."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def check_alive(self) -> None:
        """Fail with the process's output when it has exited."""
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")

    def wait_http_ok(self, url: str, timeout: float = START_TIMEOUT, verify=True) -> None:
        """Wait until url answers 200, failing early if the process died; verify as requests takes it (a CA file
        for a test certificate)."""
        def ready():
            self.check_alive()
            return http.get(url, timeout=1, verify=verify).status_code == 200
        try:
            wait_for(ready, timeout, message=f"{self.name} at {url}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- {self.name} output ---\n{self.log_tail()}") from None

    def kill(self) -> None:
        """kill -9 the whole process group at once (e.g. gunicorn's master and workers), as a crash would."""
        self._signal_group(signal.SIGKILL)
        self.proc.wait(timeout=STOP_TIMEOUT)

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it if it lingers; always close the log."""
        try:
            if self.proc.poll() is None:
                self._signal_group(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self._signal_group(signal.SIGKILL)
                    self.proc.wait(timeout=STOP_TIMEOUT)
            self._signal_group(signal.SIGKILL)  # leftovers of the group (e.g. gunicorn workers), if any
        finally:
            self._log.close()

    def _signal_group(self, sig) -> None:
        try:
            os.killpg(self.proc.pid, sig)  # the group this process leads: started by us, start_new_session
        except ProcessLookupError:
            pass


@contextmanager
def running(process: Process, health_url: str, verify=True):
    """Wait for a started process to be healthy, yield it, and stop it however the block ends."""
    try:
        process.wait_http_ok(health_url, verify=verify)
        yield process
    finally:
        process.stop()


# --- the relay ---------------------------------------------------------------------------------------------

class Relay:
    """A relay served by gunicorn like production, on a SQLite file (or the database_url it was given)."""

    def __init__(self, url: str, db_path: Path, process: Process, routing_key: str, database_url: str):
        self.url = url
        self.db_path = db_path  # rows() reads it; meaningless when database_url names PostgreSQL
        self.process = process
        self.routing_key = routing_key
        self.database_url = database_url

    @property
    def alertmanager_webhook(self) -> str:
        return self.url + "/webhooks/alertmanager"

    def rows(self, where: str = "1=1", params=()) -> list[dict]:
        """incident_log rows matching an SQL condition, oldest first, JSON columns decoded."""
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5)
        try:
            conn.row_factory = sqlite3.Row
            cursor = conn.execute(f"SELECT * FROM incident_log WHERE {where} ORDER BY id", params)
            rows = [dict(row) for row in cursor]
        finally:
            conn.close()
        for row in rows:
            for column in ("event", "alert", "pd_errors"):
                if isinstance(row.get(column), str):
                    row[column] = json.loads(row[column])
        return rows


def migrate_store(env: dict) -> None:
    """Bring the store env["DATABASE_URL"] names up to date with `flask db upgrade`."""
    done = subprocess.run([VENV_BIN / "flask", "--app", "wsgi", "db", "upgrade"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"flask db upgrade failed:\n{done.stdout}\n{done.stderr}"


@contextmanager
def relay_server(tmp_path: Path, events_url: str, routing_key: str | None = None, extra_env: dict | None = None,
                 database_url: str | None = None, name: str = "relay", migrate: bool = True,
                 tls: tuple[Path, Path] | None = None):
    """Migrate the store with the CLI, serve it with gunicorn, yield a Relay; stop it on exit.

    The store is tmp_path/relay.sqlite3 unless database_url names another. A store already migrated (a restart,
    a second instance) may skip that (migrate=False). name tells instances apart in tmp_path/<name>.log.
    tls=(certificate, key) serves HTTPS with gunicorn's --certfile and --keyfile.
    """
    routing_key = routing_key or secrets.token_hex(16)
    tmp_path.mkdir(parents=True, exist_ok=True)
    db_path = tmp_path / "relay.sqlite3"
    database_url = database_url or f"sqlite:///{db_path}"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "PAGERDUTY_EVENTS_URL": events_url,
        "PAGERDUTY_ROUTING_KEY": routing_key,  # so the shipped config.py has its default route
        "PAGERDUTY_CONNECT_TIMEOUT": "1",
        "PAGERDUTY_READ_TIMEOUT": "2",
        "RELAY_BIND": "127.0.0.1:1",  # -b below must win
        "RELAY_ACCESS_LOG": "1",
        "RELAY_RECONCILE_INTERVAL_SECONDS": "0",  # the reconciler's own tests turn it on (tests/e2e/test_reconcile.py)
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("RELAY_CONFIG", None)
    env.update(extra_env or {})
    if migrate:
        migrate_store(env)
    port = free_port()
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    certificate = ["--certfile", tls[0], "--keyfile", tls[1]] if tls else []
    # No control socket: relays running side by side must not share (and remove) ~/.gunicorn/gunicorn.ctl.
    process = Process(f"{name} (gunicorn)", [VENV_BIN / "gunicorn", "-c", "gunicorn.conf.py", "--no-control-socket",
                                             "-b", f"127.0.0.1:{port}", *certificate, "wsgi:app"],
                      tmp_path / f"{name}.log", env=env, cwd=ROOT)
    with running(process, url + "/readyz", verify=str(tls[0]) if tls else True):  # the delivery process is up too
        yield Relay(url, db_path, process, routing_key, database_url)


# --- Alertmanager ------------------------------------------------------------------------------------------

class Alertmanager:
    """A running Alertmanager and amtool pointed at it."""

    def __init__(self, url: str, process: Process, config: dict):
        self.url = url
        self.process = process
        self.config = config

    def amtool(self, *args: str, timeout: float = 15) -> str:
        """Run amtool against this Alertmanager; fail with its output when it fails."""
        argv = [AMTOOL_BIN, f"--alertmanager.url={self.url}", "--timeout=10s", *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              env={k: v for k, v in os.environ.items() if "proxy" not in k.lower()})
        assert done.returncode == 0, f"amtool {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
        return done.stdout

    def post_alerts(self, alerts: list[dict]) -> None:
        """POST alerts to Alertmanager's API v2, as Prometheus does."""
        response = http.post(self.url + "/api/v2/alerts", json=alerts, timeout=5)
        assert response.status_code == 200, (response.status_code, response.text)

    def alerts(self) -> list[dict]:
        """The alerts Alertmanager holds, active and not."""
        return http.get(self.url + "/api/v2/alerts", timeout=5).json()


def alertmanager_config(webhook_urls: list[str], bearer_token: str, receiver: str = "relay") -> dict:
    """An Alertmanager config sending every alert to the given webhooks, with short timings."""
    return {
        "global": {"resolve_timeout": "5s"},
        "route": {
            "receiver": receiver,
            "group_by": ["alertname"],
            "group_wait": "1s",
            "group_interval": "1s",
            # Short, yet longer than a test: a repeat would only add duplicate trigger rows.
            "repeat_interval": "1m",
        },
        "receivers": [{
            "name": receiver,
            "webhook_configs": [{
                "url": url,
                "send_resolved": True,
                "max_alerts": 0,
                "http_config": {"authorization": {"type": "Bearer", "credentials": bearer_token}},
            } for url in webhook_urls],
        }],
    }


@contextmanager
def alertmanager(tmp_path: Path, config: dict, port: int | None = None):
    """Start Alertmanager on a free loopback port (or the given one, as a restart would) with clustering off and its
    storage under tmp_path; yield it; stop it on exit."""
    require_binaries(ALERTMANAGER_BIN, AMTOOL_BIN)
    tmp_path.mkdir(parents=True, exist_ok=True)
    config_file = write_config(tmp_path / "alertmanager.yml", config)
    check = subprocess.run([AMTOOL_BIN, "check-config", config_file], capture_output=True, text=True, timeout=15)
    assert check.returncode == 0, f"amtool check-config:\n{check.stdout}{check.stderr}"
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    storage = tmp_path / "alertmanager-data"
    storage.mkdir(exist_ok=True)
    process = Process("alertmanager", [
        ALERTMANAGER_BIN,
        f"--config.file={config_file}",
        f"--storage.path={storage}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--web.external-url={url}",
        "--cluster.listen-address=",  # no gossip: a lone instance, no port 9094
        "--log.level=debug",
    ], tmp_path / "alertmanager.log")
    with running(process, url + "/-/ready"):
        yield Alertmanager(url, process, config)


# --- Prometheus --------------------------------------------------------------------------------------------

class Prometheus:
    """A running Prometheus."""

    def __init__(self, url: str, process: Process):
        self.url = url
        self.process = process

    def active_alerts(self) -> list[dict]:
        """The alerts Prometheus's rules currently hold (pending or firing)."""
        return http.get(self.url + "/api/v1/alerts", timeout=5).json()["data"]["alerts"]


@contextmanager
def prometheus(tmp_path: Path, scrape_target: str, alertmanager_url: str, rules: dict, interval: str = "1s"):
    """Start Prometheus scraping one target and alerting to one Alertmanager; yield it; stop it on exit."""
    require_binaries(PROMETHEUS_BIN)
    tmp_path.mkdir(parents=True, exist_ok=True)
    rules_file = write_config(tmp_path / "rules.yml", rules)
    am_host = alertmanager_url.split("://", 1)[1].rstrip("/")
    config_file = write_config(tmp_path / "prometheus.yml", {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "rule_files": [str(rules_file)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [am_host]}], "timeout": "5s"}]},
        "scrape_configs": [{"job_name": "relay-e2e", "static_configs": [{"targets": [scrape_target]}]}],
    })
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    storage = tmp_path / "prometheus-data"
    storage.mkdir(exist_ok=True)
    process = Process("prometheus", [
        PROMETHEUS_BIN,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={storage}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--web.external-url={url}",  # so generatorURL is an absolute link, not http://<hostname>:9090
        "--rules.alert.resend-delay=1s",
        "--log.level=debug",
    ], tmp_path / "prometheus.log")
    with running(process, url + "/-/ready"):
        yield Prometheus(url, process)


# --- in-process HTTP servers: a gauge to scrape, a webhook capture -----------------------------------------

class _QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - signature fixed by BaseHTTPRequestHandler
        pass

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self):
        """Bind without the reverse-DNS lookup of HTTPServer.server_bind."""
        import socketserver
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


@contextmanager
def _serve(handler_class, owner):
    server = _Server(("127.0.0.1", 0), handler_class)
    server.owner = owner
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()


class Gauge:
    """A metrics endpoint serving one gauge whose value the test sets."""

    def __init__(self, name: str, labels: dict):
        self.name = name
        self.labels = labels
        self.value = 0.0
        self.scrapes = 0
        self.target = None  # host:port once served

    def set(self, value: float) -> None:
        self.value = float(value)

    def exposition(self) -> str:
        labels = ",".join(f'{k}="{v}"' for k, v in self.labels.items())
        return f"# TYPE {self.name} gauge\n{self.name}{{{labels}}} {self.value}\n"


class _GaugeHandler(_QuietHandler):
    def do_GET(self):
        gauge = self.server.owner
        if self.path.split("?")[0] != "/metrics":
            self._answer(404, b"not found\n", "text/plain")
            return
        gauge.scrapes += 1
        self._answer(200, gauge.exposition().encode(), "text/plain; version=0.0.4")


@contextmanager
def gauge_server(name: str, labels: dict):
    """Serve a Gauge at http://127.0.0.1:PORT/metrics; yield it with .target set."""
    gauge = Gauge(name, labels)
    with _serve(_GaugeHandler, gauge) as target:
        gauge.target = target
        yield gauge


class Capture:
    """A webhook receiver that keeps every request: headers and the exact body."""

    def __init__(self):
        self.requests = []
        self.url = None
        self._lock = threading.Lock()

    def add(self, record: dict) -> None:
        with self._lock:
            self.requests.append(record)

    def bodies(self) -> list[dict]:
        with self._lock:
            return [json.loads(r["raw"]) for r in self.requests]

    def find(self, predicate) -> list[dict]:
        """Captured requests (with parsed "body") for which predicate(body) holds."""
        with self._lock:
            records = list(self.requests)
        found = []
        for record in records:
            body = json.loads(record["raw"])
            if predicate(body):
                found.append({**record, "body": body})
        return found


class _CaptureHandler(_QuietHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        self.server.owner.add({"received_at": time.time(), "path": self.path, "headers": dict(self.headers),
                               "raw": raw.decode("utf-8")})
        self._answer(200, b"{}", "application/json")


@contextmanager
def capture_server():
    """Serve a Capture at http://127.0.0.1:PORT/capture; yield it."""
    capture = Capture()
    with _serve(_CaptureHandler, capture) as target:
        capture.url = f"http://{target}/capture"
        yield capture

