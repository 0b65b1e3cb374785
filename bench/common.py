"""Shared pieces of the benchmarks: fresh stores, a simulator process, free ports, waiting; gunicorn servers,
wrk runs, /proc memory figures, /metrics scraping."""
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import requests
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
POSTGRES_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    """Return a loopback port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.02):
    """Poll predicate until it returns a truthy value; raise after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"not done after {timeout}s")


@contextmanager
def fresh_store(kind: str, workdir: Path):
    """Yield the URL of an empty, migrated store: a SQLite file or a new PostgreSQL database."""
    if kind == "sqlite":
        url = f"sqlite:///{workdir / f'bench-{uuid.uuid4().hex[:8]}.sqlite3'}"
        migrate(url)
        yield url
        return
    name = f"relay_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    try:
        migrate(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def migrate(url: str) -> None:
    """Apply the migrations with the relay's own command."""
    env = {**os.environ, "DATABASE_URL": url}
    subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"], cwd=ROOT, env=env,
                   check=True, capture_output=True)


@contextmanager
def simulator_process(latency: float = 0.0):
    """Run the PagerDuty simulator in its own process (its own GIL), yielding its base URL."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tools.simulator", "--port", str(port),
                             "--latency", str(latency)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        proc.stdout.readline()  # "PagerDuty simulator listening on …"
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


def sim_events(base: str, since: int = 0) -> list[dict]:
    """What the simulator received, from index since."""
    return requests.get(f"{base}/_sim/events", params={"since": since}, timeout=30).json()


def sim_count(base: str) -> int:
    """How many requests the simulator has received."""
    return len(sim_events(base))


def percentile(values, pct: float) -> float:
    """The pct-th percentile of values (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))]


# --- added for ingest.py, isolation.py, memory.py and storm.py ------------------------------------------------
# Everything below is new; what is above (used by delivery.py) is unchanged.
GUNICORN_CONF = ROOT / "gunicorn.conf.py"
ROUTING_KEY = "0123456789abcdef0123456789abcdef"  # the default route's key in every benchmark relay
# Inherited settings that would make a run differ from the defaults it claims to measure.
_STRIPPED_ENV_PREFIXES = ("RELAY_", "PAGERDUTY_", "PROMETHEUS_MULTIPROC_DIR", "DATABASE_URL", "BENCH_DATABASE_URL")

http = requests.Session()
http.trust_env = False  # loopback only: never through an HTTP(S)_PROXY from the environment


def clean_env(**overrides) -> dict:
    """os.environ without relay settings (so defaults such as the worker count hold), plus overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_STRIPPED_ENV_PREFIXES)}
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def relay_env(store_url: str, events_url: str | None = None, delivery: bool = True,
              rate_limit: int | None = None, **extra) -> dict:
    """Settings for a benchmark relay: its store, one default route, delivery on or off, warnings-only logs."""
    env = {"DATABASE_URL": store_url, "PAGERDUTY_ROUTING_KEY": ROUTING_KEY,
           "PAGERDUTY_EVENTS_URL": events_url or "http://127.0.0.1:9/v2/enqueue",  # discard port: never used
           "RELAY_DELIVERY": "1" if delivery else "0", "RELAY_LOG_LEVEL": "WARNING"}
    if rate_limit is not None:
        env["RELAY_RATE_LIMIT_PER_MINUTE"] = str(rate_limit)
    env.update({k: str(v) for k, v in extra.items()})
    return env


class Gunicorn:
    """A gunicorn master (and its workers) in its own process group, output in a log file."""

    def __init__(self, name: str, url: str, proc: subprocess.Popen, log_path: Path):
        self.name = name
        self.url = url
        self.proc = proc
        self.log_path = log_path

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def workers(self) -> list[int]:
        """PIDs of the master's worker processes."""
        return children(self.proc.pid)

    def wait_healthy(self, path: str, timeout: float, workers: int | None = None) -> None:
        """Wait until path answers 200 and (if given) that many workers are up; fail early if gunicorn died."""
        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                up = http.get(self.url + path, timeout=2).status_code == 200
            except requests.RequestException:
                return False
            return up and (workers is None or len(self.workers()) >= workers)
        try:
            wait_until(ready, timeout, interval=0.1)
        except TimeoutError:
            raise RuntimeError(f"{self.name} not healthy after {timeout}s:\n{self.log_tail()}") from None

    def stop(self, timeout: float = 25.0) -> None:
        """SIGTERM the whole group (graceful), SIGKILL it if it lingers, and SIGKILL any leftover."""
        try:
            if self.proc.poll() is None:
                _killpg(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            _killpg(self.proc.pid, signal.SIGKILL)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


def _killpg(pgid: int, sig) -> None:
    try:
        os.killpg(pgid, sig)  # the group we created with start_new_session
    except (ProcessLookupError, PermissionError):
        pass


@contextmanager
def gunicorn(app: str, env: dict, workdir: Path, name: str, health_path: str = "/healthz",
             start_timeout: float = 60, workers: int | None = 2, options=()):
    """Serve app (e.g. "wsgi:app", "bench.bare_app:app") with the project's gunicorn.conf.py on a free loopback
    port, cwd the project root; yield a Gunicorn. env is laid over clean_env(); each server gets its own
    PROMETHEUS_MULTIPROC_DIR under workdir, so servers never mix their metrics files; options go to gunicorn."""
    port = free_port()
    metrics_dir = workdir / f"metrics-{name}-{uuid.uuid4().hex[:6]}"
    metrics_dir.mkdir(parents=True)
    log_path = workdir / f"{name}-{port}.log"
    full_env = clean_env(PROMETHEUS_MULTIPROC_DIR=metrics_dir, **env)
    argv = [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), "-b", f"127.0.0.1:{port}", *options, app]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, env=full_env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    server = Gunicorn(name, f"http://127.0.0.1:{port}", proc, log_path)
    try:
        server.wait_healthy(health_path, start_timeout, workers)
        yield server
    finally:
        server.stop()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def children(pid: int) -> list[int]:
    """PIDs whose parent is pid (read from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry))
    return sorted(found)


def memory_of(pid: int) -> dict:
    """A process's memory in MB: VmRSS and its split (anonymous, file-backed, shared memory), and PSS."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
            fields[key] = round(int(value.split()[0]) / 1024, 1)
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                fields["Pss"] = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return fields


def _cpu_times() -> tuple[int, int]:
    """Jiffies the machine's CPUs spent in all states, and of those stolen by the hypervisor (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(values[:8]), values[7]


class StealMeter:
    """The share of CPU time the hypervisor took from this machine while a figure was measured: on a shared VM
    it moves throughput by tens of percent, so each figure is reported with it."""

    def __init__(self):
        self.total, self.stolen = _cpu_times()

    def percent(self) -> float:
        """Stolen share of all CPU time since the meter started, in percent."""
        total, stolen = _cpu_times()
        return round(100 * (stolen - self.stolen) / max(1, total - self.total), 1)


def count_rows(store_url: str, table: str = "incident_log", where: str = "") -> int:
    """SELECT count(*) from a table of the store."""
    engine = sa.create_engine(store_url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(f"SELECT count(*) FROM {table} {where}")).scalar_one()
    finally:
        engine.dispose()


def alertmanager_notification(n: int, alerts: int = 2, prefix: str = "Bench") -> dict:
    """An Alertmanager webhook (version 4) whose alerts are all distinct (own labels, own fingerprint)."""
    return {
        "version": "4", "groupKey": f'{{}}:{{alertname="{prefix}{n}"}}', "status": "firing", "receiver": "relay",
        "groupLabels": {"alertname": f"{prefix}{n}"}, "commonLabels": {"alertname": f"{prefix}{n}"},
        "commonAnnotations": {}, "externalURL": "http://alertmanager.example:9093", "truncatedAlerts": 0,
        "alerts": [{"status": "firing",
                    "labels": {"alertname": f"{prefix}{n}", "instance": f"host-{j}", "severity": "critical",
                               "job": "bench"},
                    "annotations": {"summary": f"{prefix} alert {n}/{j}", "runbook_url": "https://runbooks.example/b"},
                    "startsAt": "2026-11-26T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "http://prometheus.example:9090/graph?g0.expr=up", "fingerprint": f"{n:012x}{j:04x}"}
                   for j in range(alerts)],
    }


UNIQUE = b"@N@"


def alertmanager_template(alerts: int = 2, prefix: str = "Bench") -> bytes:
    """An Alertmanager webhook for run_wrk in which @N@ makes every request's alerts distinct (own alertname,
    own fingerprint, so own dedup keys), as a stream of different alerts would be."""
    body = alertmanager_notification(0, alerts, prefix=prefix)
    text = json.dumps(body).replace(f"{prefix}0", f"{prefix}@N@")
    for j in range(alerts):
        text = text.replace(f'"{0:012x}{j:04x}"', f'"@N@-{j}"')
    assert text.count("@N@") >= 2 * alerts, text
    return text.encode()


def dropin_template(routing_key: str = "0123456789abcdef0123456789abcdef") -> bytes:
    """An Events API v2 trigger for run_wrk's drop-in target (POST /v2/enqueue) in which @N@ gives every request
    its own dedup key and summary, as a stream of different alerts would."""
    event = {"routing_key": routing_key, "event_action": "trigger", "dedup_key": "bench-@N@",
             "payload": {"summary": "Bench@N@ replica lag over 60 s", "source": "bench-host", "severity": "error",
                         "custom_details": {"team": "db", "instance": "db-1:9100"}},
             "links": [{"href": "https://prometheus.example/graph", "text": "Source"}], "client": "bench"}
    return json.dumps(event).encode()


# --- wrk -------------------------------------------------------------------------------------------------------

_WRK_LUA = r"""
-- generated by bench/common.py: POST one body from a file, count answers by status, report JSON at the end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open([==[%(body_path)s]==], "rb"))
wrk.body = f:read("*a")
f:close()
local max_requests = %(max_requests)d  -- per thread, 0 for no limit
local marker_prefix = [==[%(marker_prefix)s]==]  -- a file per thread that reached max_requests

if %(unique)s then  -- every request its own body: @N@ becomes <thread>x<counter>
  local template = wrk.body
  local counter = 0
  function request()
    counter = counter + 1
    return wrk.format(nil, nil, nil, (template:gsub("@N@", thread_number .. "x" .. counter)))
  end
end

local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_number", #threads)
end

function init(args)
  responses = 0
  statuses = {}
  marked = false
end

function response(status, headers, body)
  responses = responses + 1
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
  if max_requests > 0 and responses >= max_requests then
    if not marked then  -- wrk runs for its whole -d anyway: the marker tells run_wrk to interrupt it
      local marker = io.open(marker_prefix .. tostring(thread_number), "w")
      if marker then marker:close() end
      marked = true
    end
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local all = {}
  for _, thread in ipairs(threads) do
    local counts = thread:get("statuses") or {}
    for key, value in pairs(counts) do all[key] = (all[key] or 0) + value end
  end
  local parts = {}
  for key, value in pairs(all) do table.insert(parts, string.format('"%%s": %%d', key, value)) end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"duration_us": %%.0f, "requests": %%.0f, "bytes": %%.0f, ' ..
    '"errors": {"connect": %%.0f, "read": %%.0f, "write": %%.0f, "status": %%.0f, "timeout": %%.0f}, ' ..
    '"latency_us": {"min": %%.0f, "max": %%.0f, "mean": %%.1f, "stdev": %%.1f, "p50": %%.0f, "p90": %%.0f, ' ..
    '"p99": %%.0f, "p999": %%.0f}, "statuses": {%%s}}\n',
    summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.max, latency.mean, latency.stdev, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), table.concat(parts, ", ")))
end
"""


def wrk_available() -> str:
    """The wrk binary, or exit with how to install it."""
    path = shutil.which("wrk")
    if not path:
        raise SystemExit("wrk not found: install it with `apt-get install -y wrk` (Debian's package)")
    return path


def run_wrk(url: str, body: bytes, workdir: Path, duration: float, threads: int = 1, connections: int = 8,
            total_requests: int = 0, timeout: float = 10) -> dict:
    """POST body to url with wrk at saturation for duration seconds (or until total_requests answers, spread over
    the threads); return wrk's figures: requests/s, latency percentiles in ms, answers by HTTP status, errors.
    Where body holds UNIQUE (@N@), each request replaces it with its own token (see alertmanager_template)."""
    wrk = wrk_available()
    tag = uuid.uuid4().hex[:8]
    body_path = workdir / f"wrk-body-{tag}.json"
    body_path.write_bytes(body)
    script_path = workdir / f"wrk-{tag}.lua"
    per_thread = math.ceil(total_requests / threads) if total_requests else 0
    marker_prefix = workdir / f"wrk-done-{tag}-"
    script_path.write_text(_WRK_LUA % {"body_path": body_path, "max_requests": per_thread,
                                       "marker_prefix": marker_prefix, "unique": str(UNIQUE in body).lower()})
    argv = [wrk, "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(duration))}s",
            "--timeout", f"{max(1, round(timeout))}s", "-s", str(script_path), url]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        if total_requests:
            # wrk has no request count: each thread stops at its share and leaves a marker; SIGINT then ends
            # the run early, and wrk still reports (its done() runs).
            deadline = time.monotonic() + duration + 5
            while proc.poll() is None and time.monotonic() < deadline:
                if len(list(workdir.glob(marker_prefix.name + "*"))) >= threads:
                    proc.send_signal(signal.SIGINT)
                    break
                time.sleep(0.05)
        stdout, stderr = proc.communicate(timeout=duration + timeout + 60)
    finally:
        if proc.poll() is None:
            _killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    line = next((ln for ln in stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{stdout}\n{stderr}")
    raw = json.loads(line[len("WRK_JSON "):])
    seconds = raw["duration_us"] / 1e6
    statuses = {int(k): v for k, v in raw["statuses"].items()}
    lat = raw["latency_us"]
    return {
        "seconds": round(seconds, 2), "requests": raw["requests"],
        "requests_per_s": round(raw["requests"] / seconds, 1) if seconds else 0.0,
        "statuses": statuses, "non_2xx": sum(v for k, v in statuses.items() if not 200 <= k < 300),
        "socket_errors": {k: v for k, v in raw["errors"].items() if k != "status"},
        "latency_ms": {k: round(lat[k] / 1000, 2) for k in ("p50", "p90", "p99", "p999", "max")},
        "threads": threads, "connections": connections,
    }


# --- Prometheus text format ----------------------------------------------------------------------------------

def scrape(url: str) -> dict[str, float]:
    """GET /metrics and return {'name{labels}': value} for every sample (comments skipped)."""
    samples = {}
    for line in http.get(url + "/metrics", timeout=30).text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            samples[name] = float(value)
        except ValueError:
            continue
    return samples


def rolling_max(timestamps, window: float = 60.0) -> tuple[int, float | None]:
    """The most timestamps in any half-open window [t, t+window) (t one of them), and where it starts."""
    ordered = sorted(timestamps)
    best, start, j = 0, None, 0
    for i, t in enumerate(ordered):
        while j < len(ordered) and ordered[j] < t + window:
            j += 1
        if j - i > best:
            best, start = j - i, t
    return best, start


def cpu_seconds(pids) -> float:
    """User + system CPU seconds the processes have used so far (from /proc/<pid>/stat; gone ones count 0)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / ticks
