"""gunicorn settings; anything given on the command line (e.g. -b HOST:PORT) wins over these."""
import glob
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile


def _relay_module(name: str):
    """Load relay/<name>.py (name may be a path: delivery/supervisor) on its own. Importing the relay package would
    load the app into the master, and workers forked after a HUP reload would then keep running the old code; in
    a worker it would load the relay into whatever app this file serves (bench/bare_app.py), with its SQLAlchemy
    event listeners."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "relay", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"relay_gunicorn_{name.replace('/', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _env_number(name: str, default: str, cast=int, least=1):
    """Read a numeric setting from the environment; a bad one stops gunicorn with one line naming it."""
    text = os.environ.get(name, default)
    try:
        value = cast(text)
    except ValueError:
        value = None
    if value is None or value < least:
        expected = "a number of seconds or a duration such as 30s" if cast is _seconds else "a whole number"
        _stop(f"{name} must be {expected}, at least {least}, not {text!r}")
    return value


def _stop(problem: str):
    """Stop gunicorn before it starts anything, with one line naming the bad setting."""
    print(f"relay: configuration error: {problem}", file=sys.stderr)
    sys.exit(_relay_module("startup/process").BAD_CONFIGURATION)


_seconds = _relay_module("timeutil").parse_seconds


bind = os.environ.get("RELAY_BIND", "127.0.0.1:8080")
workers = _env_number("RELAY_WORKERS", "2")
timeout = round(_env_number("RELAY_WORKER_TIMEOUT", "30", _seconds))
graceful_timeout = 20
keepalive = 5
accesslog = "-" if os.environ.get("RELAY_ACCESS_LOG", "0") == "1" else None
errorlog = "-"
_logs = _relay_module("logs")
loglevel = os.environ.get("RELAY_LOG_LEVEL", "info").lower()
if loglevel.upper() not in _logs.LEVELS:
    _stop(f"RELAY_LOG_LEVEL must be one of {', '.join(_logs.LEVELS)}, not {os.environ['RELAY_LOG_LEVEL']!r}")
_delivery = {"supervisor": None}

# Metrics: prometheus_client's multiprocess mode keeps each worker's counters in files in this directory and a
# scrape sums them all. It must be in the environment before a worker imports prometheus_client (workers import
# the app after the fork, so setting it here is early enough). A directory already set is honoured.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="relay-metrics-")
    os.environ["RELAY_TEMPORARY_METRICS_DIR"] = os.environ["PROMETHEUS_MULTIPROC_DIR"]  # removed on exit

_STARTS_DELIVERY = os.environ.get("RELAY_DELIVERY", "1") == "1"  # this master runs the host's delivery process

# The delivery process started below touches this file every second; /readyz in the web workers reads its age.
if _STARTS_DELIVERY and not os.environ.get("RELAY_DELIVERY_HEARTBEAT_FILE"):
    os.environ["RELAY_DELIVERY_HEARTBEAT_FILE"] = os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"],
                                                               "delivery.heartbeat")


# gunicorn's own log as JSON lines on stderr, like the app's (each worker's app swaps in its own handler, which
# also knows the request id and the secrets to mask). The access log stays off unless RELAY_ACCESS_LOG=1.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": loglevel.upper(), "handlers": ["json"]},
    "loggers": {
        "gunicorn.error": {"level": loglevel.upper(), "handlers": [], "propagate": True},
        "gunicorn.access": {"level": "INFO" if accesslog else "CRITICAL", "handlers": [], "propagate": True},
        "alembic": {"level": "WARNING"},  # its plugin set-up chatter at import, in every worker
    },
    "handlers": {"json": {"()": _logs.json_handler}},
}

# Requests are read whole before they are handled, and closed unless whole within RELAY_REQUEST_DEADLINE_SECONDS;
# the create-incident job's requests, which wait for PagerDuty, are handled by RELAY_THREADS threads
# (relay/web/serving.py).
worker_class = _relay_module("web/serving").ArrivedRequestWorker
worker_class.request_deadline = _env_number("RELAY_REQUEST_DEADLINE_SECONDS", "10", _seconds, least=0.1)
worker_class.threads = _env_number("RELAY_THREADS", "4")


def _prepare_relay(server):
    """Check the relay's settings, bring its store's schema up to date and say what it will do, once, before any
    worker starts (in a process of its own: the master must not import the app). A bad setting stops gunicorn
    here, with the one line the check printed, instead of in every worker."""
    if server.app.app_uri.partition(":")[0] != "wsgi":
        return  # another app served with these settings (bench/bare_app.py): nothing of the relay's to check
    done = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "relay", "prepare"])
    if done.returncode:
        _remove_temporary_metrics_dir()
        sys.exit(done.returncode if done.returncode > 0 else 1)


def on_starting(server):
    """Prepare the relay; empty the metrics directory: counts left by an earlier run must not add to this one's,
    nor may an earlier delivery process's heartbeat vouch for this one's."""
    _prepare_relay(server)
    path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(path, exist_ok=True)
    for name in glob.glob(os.path.join(path, "*.db")):
        os.remove(name)
    heartbeat = os.environ.get("RELAY_DELIVERY_HEARTBEAT_FILE")
    if heartbeat and os.path.exists(heartbeat):
        os.remove(heartbeat)


def post_worker_init(worker):
    """Web workers only take webhooks: delivery runs in its own process (when_ready), so its senders never
    hold a request's GIL and its claims are one writer, not one per worker."""
    worker.wsgi.config["RELAY_DELIVERY"] = False  # nothing delivers in this process (the API polls the store)
    _relay_module("startup/process").freeze_startup_objects()


def when_ready(server):
    """Start this host's delivery process beside the web workers, and restart it should it die."""
    if _STARTS_DELIVERY:
        argv = [sys.executable, "-m", "flask", "--app", "wsgi", "relay", "worker", "--parent-pid", str(os.getpid())]
        supervisor = _relay_module("delivery/supervisor").Supervisor(argv, "delivery process", server.log)
        _delivery["supervisor"] = supervisor.start()


def worker_exit(server, worker):
    """Let in-flight deliveries finish and be recorded before the worker goes."""
    from relay.delivery.worker import stop

    stop()


def child_exit(server, worker):
    """Tell prometheus_client a worker is gone (its counters stay in the sums; its live gauges go)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    """Stop the delivery process (it finishes its in-flight sends), then remove the metrics directory if this
    configuration made it."""
    if _delivery["supervisor"]:
        _delivery["supervisor"].stop(graceful_timeout)
    _remove_temporary_metrics_dir()


def _remove_temporary_metrics_dir():
    """Remove the metrics directory if this configuration made it."""
    path = os.environ.get("RELAY_TEMPORARY_METRICS_DIR")
    if path and path == os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        shutil.rmtree(path, ignore_errors=True)

# gunicorn 27's control socket defaults to one path per user: instances side by side would take it from each
# other, and the relay does not use gunicornc.
control_socket_disable = True
