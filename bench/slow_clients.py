"""Slow-clients benchmark: webhook latency while many connections sit idle or trickle their requests.

Run by hand from the project root:

    .venv/bin/python bench/slow_clients.py [--idle 50] [--trickling 50] [--jobs 4] [--rate 20] [--duration 20]

Each server is the relay as `make run` serves it (`gunicorn -c gunicorn.conf.py wsgi:app`, a fresh SQLite store,
no delivery process, so every create-incident job request waits RELAY_SYNC_WAIT_SECONDS for an outcome, as during
a PagerDuty outage). While --idle connections send nothing, --trickling ones send their request's head a byte a
second and --jobs job requests wait, a well-behaved sender posts --rate Alertmanager webhooks a second for
--duration seconds, each on a new connection; its latencies (a timeout counts as --timeout) are the result.
Target: p99 <= 50 ms with 100 connections held open; every trickling connection closed by the relay within its
RELAY_REQUEST_DEADLINE_SECONDS (10 s).

  relay     gunicorn.conf.py as it is: threaded workers with a request deadline (relay/web/serving.py)
  baseline  the same with `-k sync --threads 1`: gunicorn's sync workers, one request per process at a time
Prints one JSON document (stdout), then a one-line summary.
"""
import argparse
import json
import select
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import alertmanager_notification, fresh_store, gunicorn, percentile, relay_env  # noqa: E402

HEAD = b"POST /webhooks/alertmanager HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n" \
       b"Content-Length: 1000\r\n\r\n"


class SlowClients:
    """Idle and trickling connections to one server, watched from one thread."""

    def __init__(self, port: int, idle: int, trickling: int):
        self.idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(idle)]
        self.trickling = {socket.create_connection(("127.0.0.1", port)): 0 for _ in range(trickling)}
        self.started = time.monotonic()
        self.closed_after: dict[int, float] = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stopping.is_set():
            for sock, sent in list(self.trickling.items()):
                if id(sock) in self.closed_after:
                    continue
                try:
                    sock.send(HEAD[sent % len(HEAD):][:1])
                    self.trickling[sock] = sent + 1
                    if select.select([sock], [], [], 0)[0] and not sock.recv(4096):
                        raise ConnectionResetError
                except OSError:
                    self.closed_after[id(sock)] = time.monotonic() - self.started
            self.stopping.wait(1.0)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join(5)
        for sock in [*self.idle, *self.trickling]:
            sock.close()


def measure(name: str, options: list[str], args, workdir: Path) -> dict:
    """Run one server under slow clients and a steady sender; return its figures."""
    with fresh_store("sqlite", workdir) as url, \
            gunicorn("wsgi:app", relay_env(url, delivery=False, RELAY_SYNC_WAIT_SECONDS=args.job_wait,
                                           RELAY_REQUEST_DEADLINE_SECONDS=args.deadline),
                     workdir, name, options=options) as server:
        session = requests.Session()
        for n in range(4):  # each worker's first requests load what the app loads lazily
            session.post(server.url + "/webhooks/alertmanager", json=alertmanager_notification(10_000 + n), timeout=10)
        jobs = [threading.Thread(target=_job, args=(server.url, args.job_wait + 10), daemon=True)
                for _ in range(args.jobs)]
        with SlowClients(server.port, args.idle, args.trickling) as slow, \
                ThreadPoolExecutor(int(args.rate * args.timeout) + 8) as senders:
            for job in jobs:
                job.start()
            time.sleep(1.0)
            start, sent = time.monotonic(), []
            for n in range(int(args.rate * args.duration)):  # open loop: sent by the clock, not after the answer
                time.sleep(max(0.0, start + n / args.rate - time.monotonic()))
                sent.append(senders.submit(_webhook, server.url, n, args.timeout))
            latencies = [future.result() for future in sent]
            time.sleep(max(0.0, slow.started + args.deadline + 3 - time.monotonic()))
            closed = sorted(slow.closed_after.values())
        failures = sum(latency is None for latency in latencies)
        latencies = [args.timeout if latency is None else latency for latency in latencies]
    latencies_ms = [1000 * t for t in latencies]
    return {"webhooks": len(latencies), "failed": failures, "p50_ms": round(percentile(latencies_ms, 50), 1),
            "p99_ms": round(percentile(latencies_ms, 99), 1), "max_ms": round(max(latencies_ms), 1),
            "trickling_closed": len(closed), "trickling_closed_after_s_max": round(closed[-1], 1) if closed else None}


def _webhook(base: str, n: int, timeout: float) -> float | None:
    """Post one webhook on a new connection; return how long its 202 took, None if it failed."""
    sent = time.monotonic()
    try:
        response = requests.post(base + "/webhooks/alertmanager", json=alertmanager_notification(n), timeout=timeout,
                                 headers={"Connection": "close"})
    except requests.RequestException:
        return None
    return time.monotonic() - sent if response.status_code == 202 else None


def _job(base: str, timeout: float):
    try:
        requests.post(base + "/api/v1/incidents", json={"title": "waits", "service_key": "0" * 32}, timeout=timeout)
    except requests.RequestException:
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=int, default=50)
    parser.add_argument("--trickling", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--job-wait", type=float, default=10.0, help="RELAY_SYNC_WAIT_SECONDS")
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--deadline", type=float, default=10.0, help="RELAY_REQUEST_DEADLINE_SECONDS")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="relay-bench-slow-") as tmp:
        results = {"relay": measure("relay", [], args, Path(tmp)),
                   "baseline": measure("baseline", ["-k", "sync", "--threads", "1"], args, Path(tmp))}
    print(json.dumps({"settings": vars(args), "results": results}, indent=2))
    relay, baseline = results["relay"], results["baseline"]
    print(f"relay p99 {relay['p99_ms']} ms ({relay['failed']} failed), trickling closed {relay['trickling_closed']}"
          f"/{args.trickling} within {relay['trickling_closed_after_s_max']} s; sync baseline p99 "
          f"{baseline['p99_ms']} ms ({baseline['failed']} failed)")


if __name__ == "__main__":
    main()
