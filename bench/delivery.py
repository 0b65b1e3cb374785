"""Delivery benchmark: outbox → PagerDuty simulator throughput at 0 and 200 ms, and idle latency.

Run by hand:  .venv/bin/python bench/delivery.py [--events 5000] [--stores sqlite postgresql]
Baseline: a plain requests.Session posting the same events in a loop on one thread.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from common import (
    ROOT,
    StealMeter,
    free_port,
    fresh_store,
    percentile,
    sim_count,
    sim_events,
    simulator_process,
    wait_until,
)

from relay import create_app  # noqa: E402 - common puts the project on sys.path
from relay.delivery import worker
from relay.store import outbox
from relay.store.models import db


def sample_events(count: int, keys: int = 50) -> list[dict]:
    """Triggers spread over many routing keys and dedup keys, as a busy relay sends them."""
    return [{"routing_key": f"{k % keys:032x}", "event_action": "trigger", "dedup_key": f"bench-{k}",
             "payload": {"summary": f"bench event {k}", "source": "bench", "severity": "error",
                         "custom_details": {"n": k}}} for k in range(count)]


def baseline(events_url: str, events: list[dict]) -> float:
    """Events/s of a plain requests.Session posting in a loop: the single-thread ceiling."""
    session = requests.Session()
    started = time.perf_counter()
    for event in events:
        session.post(events_url, json=event, timeout=10).raise_for_status()
    return len(events) / (time.perf_counter() - started)


def relay_throughput(store_url: str, base: str, events: list[dict]) -> tuple[float, float]:
    """Events/s from a full outbox to the simulator through the delivery worker, and the CPU steal meanwhile."""
    app = create_app({"SQLALCHEMY_DATABASE_URI": store_url, "PAGERDUTY_EVENTS_URL": base + "/v2/enqueue",
                      "RELAY_RATE_LIMIT_PER_MINUTE": 0})
    with app.app_context():
        for event in events:
            outbox.record(event, source="bench")
        db.session.commit()
    last = sim_count(base) + len(events) - 1
    started, steal = time.perf_counter(), StealMeter()
    worker.start(app)
    wait_until(lambda: sim_events(base, last), timeout=600, interval=0.05)
    elapsed = time.perf_counter() - started
    worker.stop()
    return len(events) / elapsed, steal.percent()


WARMUP_NOTIFICATIONS = 5  # unmeasured: a fresh process's first sends pay for connections and compiled statements


def idle_latency(store_url: str, base: str, samples: int) -> list[float]:
    """p50, p99 ms from the webhook's 202 to the simulator receiving its event, then the same from the POST,
    after a few unmeasured notifications warm up the fresh relay."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": store_url, "PAGERDUTY_EVENTS_URL": base + "/v2/enqueue",
           "PAGERDUTY_ROUTING_KEY": "0123456789abcdef0123456789abcdef", "RELAY_LOG_LEVEL": "WARNING",
           "RELAY_RATE_LIMIT_PER_MINUTE": "0"}  # one key, 200 samples: above PagerDuty's 120/min
    relay = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "-b",
                              f"127.0.0.1:{port}", "wsgi:app"], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/webhooks/alertmanager"
    session = requests.Session()
    try:
        wait_until(lambda: _up(session, f"http://127.0.0.1:{port}/healthz"), timeout=30)
        from_accepted, from_sent = [], []
        for n in range(-WARMUP_NOTIFICATIONS, samples):
            seen = sim_count(base)
            sent = time.time()
            session.post(url, json=_notification(n + WARMUP_NOTIFICATIONS), timeout=10).raise_for_status()
            accepted = time.time()  # the 202 is in hand: the event is stored
            record = wait_until(lambda: sim_events(base, seen), timeout=10, interval=0.001)[0]
            if n >= 0:
                from_accepted.append(max(0.0, record["received_at"] - accepted) * 1000)
                from_sent.append((record["received_at"] - sent) * 1000)
            time.sleep(0.05)  # idle again before the next one
        return [percentile(values, p) for values in (from_accepted, from_sent) for p in (50, 99)]
    finally:
        relay.kill()
        relay.wait()


def _up(session, url):
    try:
        return session.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def _notification(n: int) -> dict:
    return {"version": "4", "groupKey": f"{{}}:{{alertname=\"Bench{n}\"}}", "status": "firing",
            "receiver": "relay", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093", "truncatedAlerts": 0,
            "alerts": [{"status": "firing", "labels": {"alertname": f"Bench{n}", "severity": "critical"},
                        "annotations": {"summary": "idle latency probe"}, "startsAt": "2026-11-26T10:00:00Z",
                        "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": f"{n:016x}"}]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--slow-events", type=int, default=2000, help="events for the 200 ms run")
    parser.add_argument("--samples", type=int, default=200, help="idle latency samples")
    parser.add_argument("--stores", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--idle-only", action="store_true", help="measure only the idle latency")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.idle_only:
            with simulator_process(0.0) as fast:
                steal = StealMeter()
                results["baseline_0ms"] = baseline(fast + "/v2/enqueue", sample_events(args.events))
                results["baseline_0ms_steal_pct"] = steal.percent()
        for kind in args.stores:
            if not args.idle_only:
                with simulator_process(0.0) as fast, fresh_store(kind, Path(tmp)) as url:
                    results[f"{kind}_0ms"], results[f"{kind}_0ms_steal_pct"] = relay_throughput(
                        url, fast, sample_events(args.events))
                with simulator_process(0.2) as slow, fresh_store(kind, Path(tmp)) as url:
                    results[f"{kind}_200ms"], results[f"{kind}_200ms_steal_pct"] = relay_throughput(
                        url, slow, sample_events(args.slow_events))
            with simulator_process(0.0) as fast, fresh_store(kind, Path(tmp)) as url:
                (results[f"{kind}_idle_p50_ms"], results[f"{kind}_idle_p99_ms"],
                 results[f"{kind}_idle_from_send_p50_ms"], results[f"{kind}_idle_from_send_p99_ms"]) = \
                    idle_latency(url, fast, args.samples)
            print(json.dumps({k: round(v, 2) for k, v in results.items()}), file=sys.stderr)
    print(json.dumps({k: round(v, 2) for k, v in results.items()}, indent=2))


if __name__ == "__main__":
    main()
