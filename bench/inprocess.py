"""In-process intake cost: what one Alertmanager webhook (2 alerts, the default route, delivery off) costs the relay,
without gunicorn or wrk, so the figures are the relay's own.

Run by hand from the project root:

    .venv/bin/python bench/inprocess.py [--webhooks 1000] [--stores sqlite postgresql] [--profile 40]

For each store (a fresh SQLite file, a fresh PostgreSQL database on BENCH_POSTGRES_URL's server) it posts webhooks
through Flask's test client (the same bodies as bench/ingest.py: every webhook its own alerts) and prints, per
webhook: wall and CPU microseconds (median of three runs of --webhooks/3), the statements SQLAlchemy sends, and on
PostgreSQL the round trips to the server, counted from libpq's own protocol trace (each ReadyForQuery the server
sends ends one; statements sent in one pipeline share one), and the CPU the server's backends spent (from /proc:
the server must run on this machine). --profile N also prints cProfile's N costliest functions
by cumulative time.
"""
import argparse
import cProfile
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import ROUTING_KEY, alertmanager_template, clean_env, fresh_store
from sqlalchemy import event

WARM_UP = 100  # webhooks before measuring: statement caches and psycopg's prepared statements filled


def measure(kind: str, args, workdir: Path) -> dict:
    """Post webhooks to a relay on a fresh store of this kind; return the figures per webhook."""
    with fresh_store(kind, workdir) as url:
        from relay import create_app  # config.py reads the environment main() set
        from relay.store.models import db

        app = create_app({"SQLALCHEMY_DATABASE_URI": url})
        client, template = app.test_client(), alertmanager_template(2).decode()
        numbers = iter(range(10**9))

        def post(count: int) -> None:
            for _ in range(count):
                response = client.post("/webhooks/alertmanager", data=template.replace("@N@", str(next(numbers))),
                                       content_type="application/json")
                assert response.status_code == 202, response.get_data(as_text=True)

        post(WARM_UP)
        with app.app_context():
            engine = db.engine
        statements = []
        event.listen(engine, "before_cursor_execute", lambda *call: statements.append(call[2]))
        round_trips = RoundTrips(engine, workdir) if kind == "postgresql" else None
        post(10)
        out = {"statements_per_webhook": len(statements) / 10,
               "statements": sorted({" ".join(text.split()[:3]) for text in statements})}
        if round_trips:
            out["round_trips_per_webhook"] = round_trips.stop() / 10
        server = ServerCpu(url) if kind == "postgresql" else None
        runs = []
        for _ in range(3):
            wall, cpu = time.perf_counter(), time.process_time()
            post(args.webhooks // 3)
            runs.append(((time.perf_counter() - wall), (time.process_time() - cpu)))
        if server:
            out["server_cpu_us"] = round(server.seconds() / (3 * (args.webhooks // 3)) * 1e6)
        out["wall_us"] = round(statistics.median(w for w, _ in runs) / (args.webhooks // 3) * 1e6)
        out["cpu_us"] = round(statistics.median(c for _, c in runs) / (args.webhooks // 3) * 1e6)
        if args.profile:
            profile = cProfile.Profile()
            profile.runcall(post, args.webhooks // 3)
            pstats.Stats(profile, stream=sys.stderr).sort_stats("cumulative").print_stats(args.profile)
        engine.dispose()
        return out


class RoundTrips:
    """Count the server's ReadyForQuery messages on every connection the engine hands out, from libpq's trace."""

    def __init__(self, engine, workdir: Path):
        from psycopg.pq import Trace

        self.path = workdir / "libpq-trace.txt"
        self.file = open(self.path, "w")
        self.traced = []
        engine.pool.dispose()  # new connections, each traced from its first message

        def trace(dbapi_connection, _record):
            dbapi_connection.pgconn.trace(self.file.fileno())
            dbapi_connection.pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS)
            self.traced.append(dbapi_connection)

        event.listen(engine, "connect", trace)

    def stop(self) -> int:
        """Stop tracing and return the round trips seen."""
        for connection in self.traced:
            connection.pgconn.untrace()
        self.file.close()
        lines = self.path.read_text().splitlines()
        return sum(1 for line in lines if "\tReadyForQuery" in line and line.startswith("B"))


class ServerCpu:
    """The CPU time PostgreSQL's backends for the bench database spent since this was made, from /proc (the server
    runs on this machine)."""

    def __init__(self, url: str):
        self.url = url.replace("postgresql+psycopg", "postgresql")
        self.start = self._ticks()

    def _ticks(self) -> int:
        import psycopg

        with psycopg.connect(self.url) as conn:
            pids = [pid for (pid,) in conn.execute("SELECT pid FROM pg_stat_activity "
                                                   "WHERE datname = current_database() AND pid <> pg_backend_pid()")]
        total = 0
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total

    def seconds(self) -> float:
        return (self._ticks() - self.start) / os.sysconf("SC_CLK_TCK")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--webhooks", type=int, default=1000, help="webhooks measured per store (three runs)")
    parser.add_argument("--stores", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    parser.add_argument("--profile", type=int, default=0, help="also print the N costliest functions (stderr)")
    args = parser.parse_args()
    settings = clean_env(PAGERDUTY_ROUTING_KEY=ROUTING_KEY, RELAY_DELIVERY=0, RELAY_LOG_LEVEL="WARNING",
                         PAGERDUTY_EVENTS_URL="http://127.0.0.1:9/v2/enqueue")  # the discard port: never sent to
    os.environ.clear()
    os.environ.update(settings)
    results = {}
    with tempfile.TemporaryDirectory(prefix="relay-bench-inprocess-") as tmp:
        for kind in args.stores:
            results[kind] = measure(kind, args, Path(tmp))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
