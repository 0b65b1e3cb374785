"""Ingest benchmark: the relay's webhook at saturation, side by side with a bare Flask endpoint.

Run by hand from the project root (needs wrk: `apt-get install -y wrk`, Debian's package):

    .venv/bin/python bench/ingest.py [--duration 30] [--stores sqlite postgresql] [--with-delivery]

For each store (a fresh SQLite file, a fresh PostgreSQL database on BENCH_POSTGRES_URL's server):
  relay   `gunicorn -c gunicorn.conf.py wsgi:app` (the default worker count) with RELAY_DELIVERY=0, so only ingest
          is measured: wrk POSTs an Alertmanager webhook with 2 alerts to /webhooks/alertmanager; every 202 means
          2 committed incident_log rows. No credential: wrk comes from loopback. A Lua script gives every
          request its own alerts (own alertname and fingerprint, so own dedup keys); the bare endpoint gets the
          same bodies.
  bare    `gunicorn -c gunicorn.conf.py bench.bare_app:app`, the same config file and RELAY_DELIVERY=0 (no delivery
          process beside it either): POST /ingest inserts one row
          per request (SQLAlchemy Core, the relay's engine settings) into the same kind of store.
  relay+delivery (--with-delivery): the relay as deployed, delivering to a PagerDuty simulator with no latency and
          the rate limit off, so ingest competes with delivery for the CPU and, on SQLite, the one write lock.
Each target gets a short warm-up, then a measured wrk run. Afterwards the rows written during the measured run
are counted: the relay must hold 2 rows per 202 (no loss). wrk abandons the requests in flight when its time is
up, and the server may still commit those, so up to 2 x connections extra rows are expected, never fewer.

Prints one JSON document (stdout), then a one-line summary. Ratio target: relay/bare >= 0.6.
"""
import argparse
import json
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from common import (StealMeter, alertmanager_template, count_rows, fresh_store, gunicorn, relay_env, run_wrk,
                    simulator_process, wrk_available)

import bare_app  # noqa: E402 - bench/ is on sys.path when this script runs

ALERTS_PER_WEBHOOK = 2


def run_store(kind: str, args, workdir: Path) -> dict:
    out = {}
    body = alertmanager_template(ALERTS_PER_WEBHOOK)  # every request its own alerts (see run_wrk)
    targets = ["relay", "bare"] + (["relay+delivery"] if args.with_delivery else [])
    for target in targets:
        with ExitStack() as stack:
            url = stack.enter_context(fresh_store(kind, workdir))
            if target == "bare":
                bare_app.create_table(url)
                server = stack.enter_context(gunicorn("bench.bare_app:app", bare_app.server_env(url),
                                                      workdir, f"bare-{kind}"))
                path, table, per_request = "/ingest", "bench_rows", 1
            else:
                events_url = None
                if target == "relay+delivery":
                    events_url = stack.enter_context(simulator_process(0.0)) + "/v2/enqueue"
                env = relay_env(url, events_url, delivery=target == "relay+delivery", rate_limit=0)
                server = stack.enter_context(gunicorn("wsgi:app", env, workdir, f"relay-{kind}"))
                path, table, per_request = "/webhooks/alertmanager", "incident_log", ALERTS_PER_WEBHOOK
            result = measure_with(server.url, path, body, args, workdir, url, table, per_request)
            out[target] = result
            print(f"  {kind} {target}: {result['requests_per_s']} req/s, p50 {result['latency_ms']['p50']} ms, "
                  f"p99 {result['latency_ms']['p99']} ms, non-2xx {result['non_2xx']}, rows {result['rows_check']}, "
                  f"CPU steal {result['steal_pct']}%",
                  file=sys.stderr)
    out["ratio_relay_to_bare"] = round(out["relay"]["requests_per_s"] / out["bare"]["requests_per_s"], 3)
    if args.with_delivery:
        out["ratio_relay_with_delivery_to_bare"] = round(
            out["relay+delivery"]["requests_per_s"] / out["bare"]["requests_per_s"], 3)
    return out


def measure_with(server_url, path, body, args, workdir, store_url, table, per_request) -> dict:
    """Warm up, count rows, run wrk, count rows again; return wrk's figures and the no-loss check."""
    def count():
        return count_rows(store_url, table)
    if args.warmup:
        run_wrk(server_url + path, body, workdir, args.warmup, args.threads, args.connections)
    time.sleep(0.5)
    before, steal = count(), StealMeter()
    result = run_wrk(server_url + path, body, workdir, args.duration, args.threads, args.connections)
    result["steal_pct"] = steal.percent()
    time.sleep(1.0)  # let requests wrk abandoned at the end finish
    rows = count() - before
    accepted = result["statuses"].get(202, 0)
    expected = per_request * accepted
    slack = per_request * args.connections
    result.update(rows_written=rows, rows_expected=expected, rows_in_flight_allowance=slack,
                  rows_check="ok" if expected <= rows <= expected + slack else
                  ("LOSS" if rows < expected else "EXTRA"))
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=30, help="seconds of measured wrk load per target")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of wrk warm-up per target (0: none)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections")
    parser.add_argument("--stores", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    parser.add_argument("--with-delivery", action="store_true",
                        help="also measure the relay with delivery on (to a 0 ms simulator, rate limit off)")
    args = parser.parse_args()
    wrk_available()
    results = {"config": {**vars(args), "alerts_per_webhook": ALERTS_PER_WEBHOOK, "gunicorn": "gunicorn.conf.py",
                          "relay_delivery": "off (RELAY_DELIVERY=0): ingest only"}}
    with tempfile.TemporaryDirectory(prefix="relay-bench-ingest-") as tmp:
        for kind in args.stores:
            results[kind] = run_store(kind, args, Path(tmp))
    print(json.dumps(results, indent=2))
    parts = []
    for kind in args.stores:
        r = results[kind]
        verdict = "meets" if r["ratio_relay_to_bare"] >= 0.6 else "MISSES"
        parts.append(f"{kind}: relay {r['relay']['requests_per_s']}/s ({2 * r['relay']['requests_per_s']:.0f} "
                     f"events/s) vs bare {r['bare']['requests_per_s']}/s = {r['ratio_relay_to_bare']}x "
                     f"({verdict} 0.6), relay p99 {r['relay']['latency_ms']['p99']} ms, rows {r['relay']['rows_check']}")
    print("ingest: " + "; ".join(parts))


if __name__ == "__main__":
    main()
