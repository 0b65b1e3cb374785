"""Ingest benchmark: the relay's webhook at saturation, side by side with a bare Flask endpoint.

Run by hand from the project root (needs wrk: `apt-get install -y wrk`, Debian's package):

    .venv/bin/python bench/ingest.py [--duration 30] [--rounds 3] [--stores sqlite postgresql] [--with-delivery]

For each store (a fresh SQLite file, a fresh PostgreSQL database on BENCH_POSTGRES_URL's server):
  relay   `gunicorn -c gunicorn.conf.py wsgi:app` (the default worker count) with RELAY_DELIVERY=0, so only ingest
          is measured: wrk POSTs an Alertmanager webhook with 2 alerts to /webhooks/alertmanager; every 202 means
          2 committed incident_log rows. No credential: wrk comes from loopback. A Lua script gives every
          request its own alerts (own alertname and fingerprint, so own dedup keys); the bare endpoint gets the
          same bodies.
  dropin  the same relay on a store of its own, wrk POSTing an Events API v2 trigger (its own dedup key each) to
          the drop-in endpoint /v2/enqueue: every 202 means 1 committed row. Measured in the same rounds.
  bare    `gunicorn -c gunicorn.conf.py bench.bare_app:app`, the same config file and RELAY_DELIVERY=0 (no delivery
          process beside it either): POST /ingest inserts one row per request (SQLAlchemy Core, the relay's engine
          settings) into the same kind of store.
  relay+delivery (--with-delivery): the relay as deployed, delivering to a PagerDuty simulator with no latency and
          the rate limit off, so ingest competes with delivery for the CPU and, on SQLite, the one write lock.
The relay and the bare endpoint run side by side, each on its own store, and take turns: after a short warm-up
each, wrk loads one, then the other, for --rounds rounds of --duration/--rounds seconds. This machine's speed
drifts from one minute to the next, and a ratio of two runs made one after the other would carry that drift;
the ratio is of their totals over all rounds, and each round's ratio is reported too. relay+delivery is measured
on its own afterwards (its delivery process would otherwise work through its backlog during the others' turns).
After each wrk run the rows written during it are counted: the relay must hold 2 rows per 202 (no loss). wrk
abandons the requests in flight when its time is up, and the server may still commit those, so up to
2 x connections extra rows are expected, never fewer.

Prints one JSON document (stdout), then a one-line summary. Ratio target: relay/bare >= 0.6.
"""
import argparse
import json
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import bare_app  # noqa: E402 - bench/ is on sys.path when this script runs
from common import (
    StealMeter,
    alertmanager_template,
    count_rows,
    dropin_template,
    fresh_store,
    gunicorn,
    relay_env,
    run_wrk,
    simulator_process,
    wrk_available,
)

ALERTS_PER_WEBHOOK = 2


def run_store(kind: str, args, workdir: Path) -> dict:
    """Measure the relay and the bare endpoint in alternating rounds, then the relay with delivery if asked."""
    body = alertmanager_template(ALERTS_PER_WEBHOOK)  # every request its own alerts (see run_wrk)
    with ExitStack() as stack:
        targets = {name: start_target(stack, name, kind, workdir) for name in ("relay", "dropin", "bare")}
        out = measure_rounds(targets, body, args, workdir, kind)
    out["ratio_relay_to_bare"] = round(out["relay"]["requests_per_s"] / out["bare"]["requests_per_s"], 3)
    out["ratio_dropin_to_bare"] = round(out["dropin"]["requests_per_s"] / out["bare"]["requests_per_s"], 3)
    out["round_ratios"] = [round(relay["requests_per_s"] / bare["requests_per_s"], 3)
                           for relay, bare in zip(out["relay"]["rounds"], out["bare"]["rounds"])]
    if args.with_delivery:
        with ExitStack() as stack:
            target = start_target(stack, "relay+delivery", kind, workdir)
            out.update(measure_rounds({"relay+delivery": target}, body, args, workdir, kind))
        out["ratio_relay_with_delivery_to_bare"] = round(
            out["relay+delivery"]["requests_per_s"] / out["bare"]["requests_per_s"], 3)
    return out


def start_target(stack: ExitStack, name: str, kind: str, workdir: Path) -> dict:
    """Start one target on a fresh store: its server, the path wrk posts to, and where its rows are counted."""
    url = stack.enter_context(fresh_store(kind, workdir))
    if name == "bare":
        bare_app.create_table(url)
        server = stack.enter_context(gunicorn("bench.bare_app:app", bare_app.server_env(url), workdir,
                                              f"bare-{kind}"))
        return {"server": server, "path": "/ingest", "store": url, "table": "bench_rows", "per_request": 1}
    events_url = None
    if name == "relay+delivery":
        events_url = stack.enter_context(simulator_process(0.0)) + "/v2/enqueue"
    env = relay_env(url, events_url, delivery=name == "relay+delivery", rate_limit=0)
    server = stack.enter_context(gunicorn("wsgi:app", env, workdir, f"{name}-{kind}"))
    if name == "dropin":
        return {"server": server, "path": "/v2/enqueue", "store": url, "table": "incident_log", "per_request": 1,
                "body": dropin_template()}
    return {"server": server, "path": "/webhooks/alertmanager", "store": url, "table": "incident_log",
            "per_request": ALERTS_PER_WEBHOOK}


def measure_rounds(targets: dict, body: bytes, args, workdir: Path, kind: str) -> dict:
    """Warm every target up, then run wrk on each in turn, args.rounds times: the machine's speed drifts from
    minute to minute here, and alternating keeps the drift out of the ratio."""
    for target in targets.values():
        if args.warmup:
            run_wrk(target["server"].url + target["path"], target.get("body", body), workdir, args.warmup,
                    args.threads, args.connections)
    rounds = {name: [] for name in targets}
    for _ in range(args.rounds):
        for name, target in targets.items():
            rounds[name].append(measure_with(target, body, args, workdir, args.duration / args.rounds))
    out = {name: combined(results) for name, results in rounds.items()}
    for name, result in out.items():
        print(f"  {kind} {name}: {result['requests_per_s']} req/s over {len(result['rounds'])} rounds "
              f"({', '.join(str(r['requests_per_s']) for r in result['rounds'])}), worst p99 "
              f"{result['latency_ms']['p99']} ms, non-2xx {result['non_2xx']}, rows {result['rows_check']}, "
              f"CPU steal {result['steal_pct']}%", file=sys.stderr)
    return out


def combined(results: list[dict]) -> dict:
    """One target's rounds as one figure: requests over seconds, the worst latencies, every check."""
    seconds = sum(r["seconds"] for r in results)
    checks = {r["rows_check"] for r in results}
    return {
        "requests_per_s": round(sum(r["requests"] for r in results) / seconds, 1), "seconds": round(seconds, 2),
        "latency_ms": {key: max(r["latency_ms"][key] for r in results) for key in ("p50", "p99", "max")},
        "non_2xx": sum(r["non_2xx"] for r in results),
        "rows_check": "ok" if checks == {"ok"} else ",".join(sorted(checks - {"ok"})),
        "steal_pct": max(r["steal_pct"] for r in results), "rounds": results,
    }


def measure_with(target: dict, body: bytes, args, workdir: Path, duration: float) -> dict:
    """Count rows, run wrk, count rows again; return wrk's figures and the no-loss check."""
    def count():
        return count_rows(target["store"], target["table"])
    time.sleep(0.5)
    before, steal = count(), StealMeter()
    result = run_wrk(target["server"].url + target["path"], target.get("body", body), workdir, duration, args.threads,
                     args.connections)
    result["steal_pct"] = steal.percent()
    time.sleep(1.0)  # let requests wrk abandoned at the end finish
    rows = count() - before
    per_request = target["per_request"]
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
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds the duration is split into, relay and bare taking turns")
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
                     f"({verdict} 0.6; rounds {', '.join(str(x) for x in r['round_ratios'])}), "
                     f"relay p99 {r['relay']['latency_ms']['p99']} ms, rows {r['relay']['rows_check']}; "
                     f"/v2/enqueue {r['dropin']['requests_per_s']} events/s = {r['ratio_dropin_to_bare']}x bare, "
                     f"p99 {r['dropin']['latency_ms']['p99']} ms, rows {r['dropin']['rows_check']}")
    print("ingest: " + "; ".join(parts))


if __name__ == "__main__":
    main()
