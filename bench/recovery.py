"""Recovery benchmark: a backlog waiting through a PagerDuty outage, with the outage probing on and off.

Run by hand from the project root:

    .venv/bin/python bench/recovery.py [--events 5000] [--keys 50] [--outage 600] [--speedup 20] [--database-url URL]

All in one process, twice (RELAY_OUTAGE_PROBING=1, then 0): the relay app on a fresh SQLite file (or an empty,
migrated store at --database-url, emptied between runs), this process's delivery worker, and the in-process
PagerDuty simulator answering every event 503. --events triggers across --keys routing keys are stored, the outage
lasts --outage seconds of relay time, then PagerDuty is back. The clock is driven by configuration: every retry
and probe setting is the default divided by --speedup (RELAY_RETRY_BASE_SECONDS 1 s, RELAY_RETRY_MAX_SECONDS
300 s, RELAY_OUTAGE_PROBE_MAX_SECONDS 30 s), and the outage lasts --outage / --speedup wall seconds, so the
backoffs really grow to their cap. The rate limit is scaled the same way (120 × --speedup per key per minute), so
the attempts an outage spends of each key's budget weigh as they would in relay time.

Prints one JSON document per run: requests PagerDuty received during the outage, the longest gap between two of
them at its end (the probe spacing) and the most attempts one row made; then, from PagerDuty's return, the seconds
to the first delivery, in wall time and in relay time (× --speedup: the wait the backoff or the probe spacing
caused), and to the last delivery in wall time (the backoff's wait plus the worker's own sending speed, which the
speedup does not scale).
"""
import argparse
import json
import tempfile
import time

from common import ROOT  # noqa: F401 - puts the project on sys.path
from flask_migrate import upgrade
from sqlalchemy import func, select, text

from relay import create_app  # noqa: E402
from relay.delivery import worker
from relay.store import outbox
from relay.store.models import IncidentLog, db
from tools.simulator import PagerDutySimulator


def run(database_url: str, pd, args, probing: bool) -> dict:
    scale = args.speedup
    app = create_app({"SQLALCHEMY_DATABASE_URI": database_url, "PAGERDUTY_EVENTS_URL": pd.events_url,
                      "RELAY_OUTAGE_PROBING": probing, "RELAY_RETRY_BASE_SECONDS": 1.0 / scale,
                      "RELAY_RETRY_MAX_SECONDS": 300.0 / scale, "RELAY_OUTAGE_PROBE_MAX_SECONDS": 30.0 / scale,
                      "RELAY_RATE_LIMIT_PER_MINUTE": round(120 * scale),
                      "RELAY_GIVE_UP_AFTER_SECONDS": 86400, "RELAY_PRUNE_DELIVERED_AFTER": None})
    with app.app_context():
        upgrade()
        with db.engine.begin() as conn:
            for table in ("delivery_attempt", "incident_log", "endpoint_state", "key_hold"):
                conn.execute(text(f"DELETE FROM {table}"))
        keys = [f"{n:032x}" for n in range(args.keys)]
        outbox.store_rows(db.engine, [outbox.row_values(
            {"routing_key": keys[n % args.keys], "event_action": "trigger", "dedup_key": f"alert-{n}",
             "payload": {"summary": f"alert {n}", "source": "bench", "severity": "error"}}, source="bench")
            for n in range(args.events)])
    pd.reset()
    pd.set_outage("503")
    worker.start(app)
    time.sleep(args.outage / scale)
    during = pd.received()
    back = time.time()
    pd.set_outage(None)
    deadline = back + 2 * 300 / scale + 180
    while len(pd.accepted()) < args.events and time.time() < deadline:
        time.sleep(0.05)
    worker.stop()
    accepted = sorted(r["received_at"] for r in pd.received() if r["outcome"] == "accepted")
    with app.app_context():
        most_attempts = db.session.execute(select(func.max(IncidentLog.attempts))).scalar()
        db.engine.dispose()
    tail = [r["received_at"] for r in during if r["received_at"] > back - args.outage / scale / 4]
    # A send already on the wire as the outage ends may be accepted a moment "before" it: counted as 0.
    first, last = (max(0.0, accepted[0] - back), accepted[-1] - back) if accepted else (None, None)
    return {
        "probing": probing, "events": args.events, "keys": args.keys, "outage_relay_seconds": args.outage,
        "speedup": scale, "requests_during_outage": len(during),
        "probe_spacing_at_end_s": round(max((b - a for a, b in zip(tail, tail[1:])), default=0.0), 3),
        "most_attempts_per_row": most_attempts, "delivered": len(accepted),
        "first_delivery_s": None if first is None else round(first, 2),
        "first_delivery_relay_s": None if first is None else round(first * scale, 1),
        "last_delivery_s": None if last is None else round(last, 2),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--keys", type=int, default=50)
    parser.add_argument("--outage", type=float, default=600, help="relay seconds")
    parser.add_argument("--speedup", type=float, default=20)
    parser.add_argument("--database-url", default="", help="an empty, migrated store (default: a fresh SQLite)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, PagerDutySimulator() as pd:
        url = args.database_url or f"sqlite:///{tmp}/relay.sqlite3"
        for probing in (True, False):
            print(json.dumps(run(url, pd, args, probing)), flush=True)


if __name__ == "__main__":
    main()
