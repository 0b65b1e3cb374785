"""Shared pieces of the benchmarks: fresh stores, a simulator process, free ports, waiting."""
import os
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
    proc = subprocess.Popen([sys.executable, "-m", "relay.simulator", "--port", str(port),
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
