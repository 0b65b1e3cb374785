"""Rate-limited backlog benchmark: what the delivery loop costs while a backlog waits on its key's budget.

Run by hand from the project root:

    .venv/bin/python bench/rate_backlog.py [--rows 2000] [--limit 60] [--seconds 30] [--database-url URL]

All in one process: the relay app on a fresh SQLite file (or an empty, migrated store at --database-url), --rows
pending events for one routing key, and that key's budget in use as a steady drain leaves it: --limit attempts
in the last minute, evenly spread, so a place frees every 60/--limit seconds. This process's delivery worker
sends to the in-process PagerDuty simulator. Prints one JSON document: the process's CPU seconds per wall second
over --seconds (the worker's claims, plus the simulator's handful of events) and how many events were sent.
"""
import argparse
import json
import tempfile
import time
from datetime import timedelta

from common import ROOT  # noqa: F401 - puts the project on sys.path
from flask_migrate import upgrade

from relay import create_app  # noqa: E402
from relay.delivery import worker
from relay.store import outbox, rate_budget
from relay.store.models import DeliveryAttempt, db, utcnow
from tools.simulator import PagerDutySimulator

KEY = "c0ffee" * 5 + "42"


def fill(app, rows: int, limit: int) -> None:
    """Store the backlog and the attempts that spent the key's budget over the last minute."""
    with app.app_context():
        upgrade()
        event = {"routing_key": KEY, "event_action": "trigger",
                 "payload": {"summary": "backlog", "source": "bench", "severity": "info"}}
        ids = outbox.store_rows(db.engine, [outbox.row_values({**event, "dedup_key": f"b{n}"}, source="bench")
                                            for n in range(rows)])
        now = utcnow()
        with db.engine.begin() as conn:
            conn.execute(DeliveryAttempt.__table__.insert(), [
                {"log_id": ids[0], "started_at": now - timedelta(seconds=60 - n * 60 / limit), "outcome": "retry",
                 "routing_key_hash": rate_budget.key_hash(KEY)} for n in range(limit)])


def measure(database_url: str, pd, args) -> dict:
    app = create_app({"SQLALCHEMY_DATABASE_URI": database_url, "PAGERDUTY_EVENTS_URL": pd.events_url,
                      "RELAY_RATE_LIMIT_PER_MINUTE": args.limit})
    fill(app, args.rows, args.limit)
    cpu, wall = time.process_time(), time.monotonic()
    worker.start(app)
    time.sleep(args.seconds)
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    worker.stop()
    return {"rows": args.rows, "limit_per_minute": args.limit, "seconds": round(wall, 1),
            "cpu_seconds": round(cpu, 2), "cpu_share_pct": round(100 * cpu / wall, 1), "sent": len(pd.received())}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--limit", type=int, default=60, help="RELAY_RATE_LIMIT_PER_MINUTE")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--database-url", default="", help="an empty, migrated store (default: a fresh SQLite)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, PagerDutySimulator() as pd:
        url = args.database_url or f"sqlite:///{tmp}/relay.sqlite3"
        print(json.dumps(measure(url, pd, args)))


if __name__ == "__main__":
    main()
