"""Storm benchmark: a burst of alerts to one routing key, drained under PagerDuty's per-key rate limit.

Run by hand from the project root:

    .venv/bin/python bench/storm.py [--alerts 10000] [--per-webhook 100] [--limit 1200] [--store sqlite]
    .venv/bin/python bench/storm.py --alerts 2000 --limit 600      # a quicker check (~3.5 min)

The relay runs as deployed (`gunicorn -c gunicorn.conf.py wsgi:app`, delivery on in each worker) with
RELAY_RATE_LIMIT_PER_MINUTE=--limit, one default route (one routing key), delivering to the PagerDuty simulator
(no latency). --alerts distinct alerts (own labels, so own dedup keys) are posted as Alertmanager webhooks of
--per-webhook alerts each, by --senders threads, as fast as the relay answers: the ingest time and rate are
reported. While the outbox drains, /metrics is scraped every --scrape-every seconds: relay_outbox_backlog
(pending + retrying) and relay_outbox_oldest_pending_age_seconds, with what the simulator has received, printed
as a small time series. The first --limit alerts go at once, then --limit per minute: 10,000 at 1,200/min
drain in about 8 minutes.

Checks, from the simulator's own records (received_at):
  - rate: no rolling 60-s window [t, t+60) holds more than --limit requests (the relay's own view, from
    delivery_attempt.started_at, is reported next to it);
  - exactly once: every alert's dedup key (as the relay's 202 answers named it) was accepted (202) exactly once,
    and nothing else arrived; every incident_log row ends delivered.
Prints one JSON document (stdout), then a one-line summary.
"""
import argparse
import json
import math
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path

import requests
import sqlalchemy as sa
from common import (
    alertmanager_notification,
    fresh_store,
    gunicorn,
    relay_env,
    rolling_max,
    scrape,
    sim_events,
    simulator_process,
)


def burst(url: str, alerts: int, per_webhook: int, senders: int) -> dict:
    """POST the alerts as fast as the relay answers; return timings and the dedup keys the relay announced."""
    sizes = [min(per_webhook, alerts - start) for start in range(0, alerts, per_webhook)]
    bodies = [json.dumps(alertmanager_notification(n, size, prefix="Storm")).encode()
              for n, size in enumerate(sizes)]
    local = threading.local()

    def post(body: bytes):
        if not hasattr(local, "session"):
            local.session = requests.Session()
            local.session.trust_env = False
        answer = local.session.post(url + "/webhooks/alertmanager", data=body,
                                    headers={"Content-Type": "application/json"}, timeout=120)
        keys = [e["dedup_key"] for e in answer.json().get("events", [])] if answer.status_code == 202 else []
        return answer.status_code, keys

    started = time.time()
    with ThreadPoolExecutor(senders) as pool:
        answers = list(pool.map(post, bodies))
    seconds = time.time() - started
    keys = [key for _, found in answers for key in found]
    return {"started_at": started, "seconds": round(seconds, 2), "webhooks": len(bodies),
            "statuses": dict(Counter(status for status, _ in answers)), "alerts_accepted": len(keys),
            "alerts_per_s": round(len(keys) / seconds, 1), "webhooks_per_s": round(len(bodies) / seconds, 1),
            "dedup_keys": keys}


def backlog_sample(relay_url: str) -> dict:
    samples = scrape(relay_url)
    return {"pending": int(samples.get('relay_outbox_backlog{status="pending"}', 0)),
            "retrying": int(samples.get('relay_outbox_backlog{status="retrying"}', 0)),
            "oldest_age_s": round(samples.get("relay_outbox_oldest_pending_age_seconds", 0.0), 1)}


def store_facts(store_url: str) -> dict:
    """Row statuses, attempts per row, and the relay's own attempt start times."""
    engine = sa.create_engine(store_url)
    try:
        with engine.connect() as conn:
            statuses = dict(conn.execute(sa.text("SELECT status, count(*) FROM incident_log GROUP BY status")).all())
            max_attempts = conn.execute(sa.text("SELECT max(attempts) FROM incident_log")).scalar()
            started = conn.execute(sa.text("SELECT started_at FROM delivery_attempt")).scalars().all()
    finally:
        engine.dispose()
    stamps = []
    for value in started:  # UTC; a string on SQLite, a datetime on PostgreSQL
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
            value = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        stamps.append(value.timestamp())
    return {"statuses": statuses, "max_attempts": max_attempts, "attempt_starts": stamps}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=10000)
    parser.add_argument("--per-webhook", type=int, default=100, help="alerts per webhook")
    parser.add_argument("--senders", type=int, default=4, help="concurrent posting threads")
    parser.add_argument("--limit", type=int, default=1200, help="RELAY_RATE_LIMIT_PER_MINUTE")
    parser.add_argument("--scrape-every", type=float, default=5.0, help="seconds between /metrics scrapes")
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    # The first --limit go at once; each later batch of --limit waits for a minute's budget.
    expected_drain = (math.ceil(args.alerts / args.limit) - 1) * 60
    results = {"config": {**vars(args), "expected_drain_s": round(expected_drain)}}
    with tempfile.TemporaryDirectory(prefix="relay-bench-storm-") as tmp, ExitStack() as stack:
        tmp = Path(tmp)
        sim = stack.enter_context(simulator_process(0.0))
        store_url = stack.enter_context(fresh_store(args.store, tmp))
        relay = stack.enter_context(gunicorn("wsgi:app", relay_env(store_url, sim + "/v2/enqueue",
                                                                   rate_limit=args.limit), tmp, "relay"))
        ingest = burst(relay.url, args.alerts, args.per_webhook, args.senders)
        expected_keys = ingest.pop("dedup_keys")
        t0 = ingest.pop("started_at")
        results["ingest"] = ingest
        print(f"  ingest: {ingest['alerts_accepted']} alerts in {ingest['seconds']} s "
              f"({ingest['alerts_per_s']} alerts/s), statuses {ingest['statuses']}", file=sys.stderr)

        records, series = [], []
        deadline = time.time() + expected_drain * 1.3 + 120
        while True:
            records += sim_events(sim, len(records))
            sample = {"t_s": round(time.time() - t0, 1), **backlog_sample(relay.url),
                      "received_by_pagerduty": len(records)}
            series.append(sample)
            print(f"  t={sample['t_s']:7.1f}s backlog pending={sample['pending']:6d} retrying={sample['retrying']:4d}"
                  f"  oldest={sample['oldest_age_s']:6.1f}s  at PagerDuty={sample['received_by_pagerduty']}",
                  file=sys.stderr)
            if sample["pending"] + sample["retrying"] == 0 or time.time() > deadline:
                break
            time.sleep(args.scrape_every)
        time.sleep(1.0)
        records += sim_events(sim, len(records))
        drain_end = max((r["received_at"] for r in records), default=t0)
        facts = store_facts(store_url)

    enqueue = [r for r in records if r["path"] == "/v2/enqueue"]
    window_max, window_start = rolling_max([r["received_at"] for r in enqueue])
    relay_max, _ = rolling_max(facts["attempt_starts"])
    accepted = Counter((r.get("dedup_key") or (r.get("body") or {}).get("dedup_key"))
                       for r in enqueue if r.get("status") == 202)
    expected = Counter(expected_keys)
    duplicates = sum(n - 1 for n in accepted.values() if n > 1)
    missing = sum(1 for key in expected if key not in accepted)
    unexpected = sum(1 for key in accepted if key not in expected)
    results["drain"] = {"series": series, "seconds_from_burst_to_last_event": round(drain_end - t0, 1),
                        "drained": series[-1]["pending"] + series[-1]["retrying"] == 0}
    arrivals, starts = sorted(r["received_at"] for r in enqueue), sorted(facts["attempt_starts"])
    first = min(args.limit, len(arrivals), len(starts))
    results["rate"] = {"limit_per_minute": args.limit, "max_in_any_60s_at_pagerduty": window_max,
                       "window_start_s": round(window_start - t0, 2) if window_start else None,
                       "max_in_any_60s_relay_attempt_starts": relay_max,
                       "ok": window_max <= args.limit,
                       # when the first minute's budget was spent: the relay's attempt times (claim time) vs
                       # the arrivals at PagerDuty, seconds from the start of the burst
                       "first_wave_relay_attempts_s": [round(starts[0] - t0, 2), round(starts[first - 1] - t0, 2)]
                       if first else None,
                       "first_wave_pagerduty_arrivals_s": [round(arrivals[0] - t0, 2),
                                                           round(arrivals[first - 1] - t0, 2)] if first else None,
                       "second_wave_first_arrival_s": round(arrivals[first] - t0, 2)
                       if len(arrivals) > first else None}
    results["exactly_once"] = {"alerts": len(expected), "distinct_dedup_keys_sent": len(expected),
                               "requests_at_pagerduty": len(enqueue),
                               "non_202": sum(1 for r in enqueue if r.get("status") != 202),
                               "accepted_distinct": len(accepted), "duplicates": duplicates, "missing": missing,
                               "unexpected": unexpected, "row_statuses": facts["statuses"],
                               "max_attempts_per_row": facts["max_attempts"],
                               "ok": duplicates == missing == unexpected == 0 and len(expected) == args.alerts
                               and set(facts["statuses"]) == {"delivered"}}
    print(json.dumps(results, indent=2))
    r, e = results["rate"], results["exactly_once"]
    print(f"storm: {ingest['alerts_accepted']} alerts ingested in {ingest['seconds']} s ({ingest['alerts_per_s']}/s); "
          f"drained in {results['drain']['seconds_from_burst_to_last_event']} s (expected ~{expected_drain:.0f} s); "
          f"max {r['max_in_any_60s_at_pagerduty']} in any 60 s at PagerDuty (limit {args.limit}: "
          f"{'ok' if r['ok'] else 'EXCEEDED'}; relay's own count {r['max_in_any_60s_relay_attempt_starts']}); "
          f"exactly once: {'ok' if e['ok'] else 'FAILED'} ({e['accepted_distinct']}/{e['alerts']} accepted, "
          f"{e['duplicates']} duplicates, {e['missing']} missing)")


if __name__ == "__main__":
    main()
