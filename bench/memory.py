"""Memory benchmark: resident memory of each gunicorn worker after load, relay against the bare Flask endpoint.

Run by hand from the project root (needs wrk: `apt-get install -y wrk`, Debian's package):

    .venv/bin/python bench/memory.py [--requests 20000] [--store sqlite]

  relay  `gunicorn -c gunicorn.conf.py wsgi:app` as deployed: delivery ON in each worker, to a PagerDuty
         simulator with no latency, rate limit off (so the outbox drains and the delivery threads, their HTTP
         pool and the results all exist). wrk sends --requests Alertmanager webhooks with 2 alerts each; the
         script then waits (up to --drain-timeout) for the outbox to empty, and scrapes /metrics a few times.
  bare   `gunicorn -c gunicorn.conf.py bench.bare_app:app` (bench/bare_app.py), the same --requests via wrk.
Then, for every worker (the master is listed apart): VmRSS (the target: <= 80 MB per relay worker), split into
RssAnon (the process's own heap), RssFile (mapped files: code, shared libraries, and for the relay the
prometheus_client multiprocess files) and RssShmem, plus Pss (shared pages divided among their users) and
VmHWM (the peak). The relay's figures are taken idle, right after the load and again after the drain. With
delivery on, the relay ingests far more slowly than with it off (tens of webhooks/s in the smoke run), so the
relay's wrk run can take minutes; --max-seconds bounds it and the summary says when it cut the load short.

PROMETHEUS_MULTIPROC_DIR: gunicorn.conf.py makes a temporary one when it is unset; the benchmark gives each
server its own directory (under its temporary directory), so nothing is shared between runs. In multiprocess
mode each worker maps its own counter/histogram files (sparse, 1 MiB each; only the pages touched count), which
shows in RssFile.

Prints one JSON document (stdout), then a one-line summary.
"""
import argparse
import json
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import bare_app  # noqa: E402 - bench/ is on sys.path when this script runs
from common import (
    alertmanager_template,
    fresh_store,
    gunicorn,
    memory_of,
    relay_env,
    run_wrk,
    scrape,
    simulator_process,
    wrk_available,
)

TARGET_MB = 80


def snapshot(server) -> dict:
    """Memory of the master and each worker."""
    return {"master": memory_of(server.proc.pid),
            "workers": {str(pid): memory_of(pid) for pid in server.workers()}}


def backlog(samples: dict) -> float:
    return sum(v for k, v in samples.items() if k.startswith("relay_outbox_backlog{"))


def load(server_url: str, path: str, body: bytes, args, workdir: Path) -> dict:
    # Duration is only a bound: the run ends after --requests answers.
    return run_wrk(server_url + path, body, workdir, args.max_seconds, args.threads, args.connections,
                   total_requests=args.requests)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000, help="webhooks (relay) / requests (bare) via wrk")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections")
    parser.add_argument("--max-seconds", type=float, default=400,
                        help="bound on each wrk run (the relay with delivery on may ingest slowly: see the summary)")
    parser.add_argument("--drain-timeout", type=float, default=120, help="seconds to wait for the relay's outbox")
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    wrk_available()
    results = {"config": {**vars(args), "relay": "delivery on, 0 ms simulator, rate limit off"}}
    with tempfile.TemporaryDirectory(prefix="relay-bench-memory-") as tmp:
        tmp = Path(tmp)
        with ExitStack() as stack:
            sim = stack.enter_context(simulator_process(0.0))
            url = stack.enter_context(fresh_store(args.store, tmp))
            relay = stack.enter_context(gunicorn("wsgi:app", relay_env(url, sim + "/v2/enqueue", rate_limit=0),
                                                 tmp, "relay"))
            idle = snapshot(relay)
            body = alertmanager_template(2)  # every webhook its own 2 alerts (see run_wrk)
            wrk = load(relay.url, "/webhooks/alertmanager", body, args, tmp)
            after_load = snapshot(relay)
            started, left = time.monotonic(), None
            while time.monotonic() - started < args.drain_timeout:
                left = backlog(scrape(relay.url))  # scrapes land on either worker: both run the /metrics code
                if left == 0:
                    break
                time.sleep(1)
            for _ in range(4):
                scrape(relay.url)
            results["relay"] = {"wrk": {k: wrk[k] for k in ("requests", "requests_per_s", "statuses")},
                                "idle": idle, "after_load": after_load,
                                "drained": left == 0, "drain_seconds": round(time.monotonic() - started, 1),
                                "after_drain": snapshot(relay)}
        with ExitStack() as stack:
            url = stack.enter_context(fresh_store(args.store, tmp))
            bare_app.create_table(url)
            bare = stack.enter_context(gunicorn("bench.bare_app:app", bare_app.server_env(url), tmp, "bare"))
            idle = snapshot(bare)
            wrk = load(bare.url, "/ingest", body, args, tmp)
            results["bare"] = {"wrk": {k: wrk[k] for k in ("requests", "requests_per_s", "statuses")},
                               "idle": idle, "after_load": snapshot(bare)}
    print(json.dumps(results, indent=2))
    def rss(snap):
        return sorted(w["VmRSS"] for w in snap["workers"].values())
    relay, bare = results["relay"], results["bare"]
    worst = max(rss(relay["after_load"]) + rss(relay["after_drain"]))
    print(f"memory: relay worker VmRSS after {relay['wrk']['requests']} webhooks {rss(relay['after_load'])} MB, "
          f"after drain {rss(relay['after_drain'])} MB ({'meets' if worst <= TARGET_MB else 'MISSES'} <= "
          f"{TARGET_MB} MB); bare worker VmRSS after {bare['wrk']['requests']} requests {rss(bare['after_load'])} MB"
          + ("" if relay["wrk"]["requests"] >= args.requests else
             f" (NOTE: wrk stopped at --max-seconds before all {args.requests} webhooks were answered)"))

if __name__ == "__main__":
    main()
