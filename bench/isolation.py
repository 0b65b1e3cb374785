"""Isolation benchmark: webhook latency while PagerDuty is slow, against a naive relay that forwards in the request.

Run by hand from the project root:

    .venv/bin/python bench/isolation.py [--rate 200] [--duration 20] [--pd-latency 0.5] [--store sqlite]

The PagerDuty simulator answers every event after --pd-latency seconds (500 ms). An open-loop load generator
(non-blocking sockets in one thread, one new connection per request, as many in flight as it takes) sends
--rate Alertmanager webhooks per second for --duration seconds, each with --alerts distinct alerts (own labels,
so own dedup keys); sends are scheduled by the clock, not by the previous answer, and each latency is measured
from the request's scheduled time (no coordinated omission). A request not answered within --timeout seconds
of its scheduled time counts as timed out.

  relay  `gunicorn -c gunicorn.conf.py wsgi:app` as deployed: the web workers take webhooks and the master's
         delivery process (64 in flight, nice 10) sends to the slow simulator. RELAY_RATE_LIMIT_PER_MINUTE is set
         to --rate-limit (default 0 = off), so delivery sends as fast as it can while the webhooks arrive: the
         worst case for isolation, since delivery never sits idle behind the limiter. 200 webhooks/s x 2 alerts
         is 400 events/s, above what 64 in flight can send at 500 ms (128/s): the backlog grows during the run.
  control (unless --no-control): the same relay with RELAY_DELIVERY=0, to separate delivery's interference
         from the machine's own noise.
  naive  a tiny Flask app written below (create_naive_app), under the same gunicorn.conf.py: for each alert it
         POSTs the event to the simulator inside the request (requests, 3.05 s connect / 10 s read timeout, the
         relay's defaults), and answers 202 when all were accepted, 502 otherwise.

Each gets a short warm-up first. Failed requests count in the percentiles with the time they took (a timeout as
--timeout), so the naive relay's figures are lower bounds. Target: relay p99 <= 25 ms. For the relay runs,
relay_side gives the share of webhooks the relay answered within 5, 10 and 25 ms by its own clock (its
relay_webhook_duration_seconds histogram, scraped before and after): the client's latencies also hold the time a
request waits for a CPU on this machine, where the load generator runs beside the servers.
Prints one JSON document (stdout), then a one-line summary.
"""
import argparse
import json
import os
import selectors
import socket
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # when gunicorn imports this module for the naive app

from common import (  # noqa: E402
    ROUTING_KEY,
    alertmanager_notification,
    cpu_seconds,
    fresh_store,
    gunicorn,
    percentile,
    relay_env,
    scrape,
    sim_count,
    simulator_process,
)

# --- the naive relay (served by gunicorn as bench.isolation:create_naive_app()) ---------------------------------

def create_naive_app():
    """Forward each alert of an Alertmanager webhook to PagerDuty inside the request, then answer."""
    import requests
    from flask import Flask, jsonify, request

    app = Flask("naive_relay")
    app.config["RELAY_DELIVERY"] = False  # gunicorn.conf.py's post_worker_init reads it
    events_url = os.environ["NAIVE_EVENTS_URL"]
    routing_key = os.environ["NAIVE_ROUTING_KEY"]
    session = requests.Session()
    session.trust_env = False

    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok"})

    @app.post("/webhooks/alertmanager")
    def forward():
        body = request.get_json()
        answers = []
        for alert in body.get("alerts", []):
            labels = alert.get("labels", {})
            event = {"routing_key": routing_key,
                     "event_action": "resolve" if alert.get("status") == "resolved" else "trigger",
                     "dedup_key": alert.get("fingerprint") or labels.get("alertname", "alert"),
                     "payload": {"summary": alert.get("annotations", {}).get("summary") or labels.get("alertname"),
                                 "source": labels.get("instance", "alertmanager"),
                                 "severity": labels.get("severity", "error"),
                                 "custom_details": {"labels": labels}}}
            try:
                answers.append(session.post(events_url, json=event, timeout=(3.05, 10)).status_code)
            except requests.RequestException as exc:
                return jsonify({"error": type(exc).__name__}), 502
        ok = all(200 <= status < 300 for status in answers)
        return jsonify({"forwarded": len(answers), "statuses": answers}), 202 if ok else 502

    return app


# --- open-loop load ------------------------------------------------------------------------------------------------

class _Exchange:
    """One request on its own non-blocking connection: connect, send, read until gunicorn closes it."""

    def __init__(self, port: int, request: bytes, scheduled: float):
        self.request, self.scheduled, self.answer = request, scheduled, bytearray()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.sock.connect_ex(("127.0.0.1", port))  # EINPROGRESS: writable once connected

    def on_writable(self) -> bool:
        """Send what is left of the request; True once it is all sent. Raises if the connection was refused."""
        if self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            raise ConnectionRefusedError("connect failed")
        self.request = self.request[self.sock.send(self.request):]
        return not self.request

    def on_readable(self) -> bool:
        """Read what arrived; True once the server closed the connection."""
        chunk = self.sock.recv(65536)
        self.answer += chunk
        return not chunk

    def outcome(self) -> str:
        """The answer's HTTP status, or bad_answer."""
        if not self.answer.startswith(b"HTTP/"):
            return "bad_answer"
        return self.answer.split(b" ", 2)[1].decode()


def _open_loop(port: int, path: str, bodies: list[bytes], rate: float, timeout: float):
    """Send at the clock's pace on non-blocking sockets in one thread: far less CPU per request than asyncio
    streams (the generator shares the machine's two cores with the servers it measures)."""
    requests = [(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body for body in bodies]
    selector, results, in_flight = selectors.DefaultSelector(), [], set()
    start = time.perf_counter() + 0.05
    sent, send_lag, next_expiry_check = 0, 0.0, start

    def finish(exchange, outcome):
        selector.unregister(exchange.sock)
        exchange.sock.close()
        in_flight.discard(exchange)
        results.append((outcome, time.perf_counter() - exchange.scheduled))

    while sent < len(requests) or in_flight:
        now = time.perf_counter()
        while sent < len(requests) and start + sent / rate <= now:
            exchange = _Exchange(port, requests[sent], start + sent / rate)
            selector.register(exchange.sock, selectors.EVENT_WRITE, exchange)
            in_flight.add(exchange)
            send_lag, sent = now - exchange.scheduled, sent + 1
        if now >= next_expiry_check:  # every 10 ms: thousands may be in flight to the naive relay
            for exchange in [e for e in in_flight if now - e.scheduled >= timeout]:
                finish(exchange, "timeout")
            next_expiry_check = now + 0.01
        wake = start + sent / rate if sent < len(requests) else now + 0.05
        for key, _ in selector.select(max(0.0, wake - time.perf_counter())):
            _step(key.data, selector, finish)
    return results, send_lag


def _step(exchange, selector, finish):
    """Move one exchange on: from sending to reading, or to its outcome."""
    try:
        if selector.get_key(exchange.sock).events == selectors.EVENT_WRITE:
            if exchange.on_writable():
                selector.modify(exchange.sock, selectors.EVENT_READ, exchange)
        elif exchange.on_readable():
            finish(exchange, exchange.outcome())
    except (OSError, ValueError, IndexError) as exc:
        finish(exchange, f"error:{type(exc).__name__}")


def open_loop(port: int, path: str, bodies: list[bytes], rate: float, timeout: float) -> dict:
    """Send bodies at a constant rate regardless of answers; summarize latencies and outcomes."""
    started = time.time()
    results, send_lag = _open_loop(port, path, bodies, rate, timeout)
    latencies = [seconds * 1000 for _, seconds in results]
    ok = [seconds * 1000 for outcome, seconds in results if outcome.startswith("2")]
    outcomes: dict[str, int] = {}
    for outcome, _ in results:
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    summary = {
        "requests": len(results), "rate_per_s": rate, "wall_seconds": round(time.time() - started, 1),
        "outcomes": outcomes, "ok_2xx": len(ok),
        "failed": sum(v for k, v in outcomes.items() if not k.startswith("2") and k != "timeout"),
        "timed_out": outcomes.get("timeout", 0),
        "latency_ms": {"p50": round(percentile(latencies, 50), 1), "p90": round(percentile(latencies, 90), 1),
                       "p99": round(percentile(latencies, 99), 1), "max": round(max(latencies), 1)},
        "last_send_behind_schedule_ms": round(send_lag * 1000, 1),
    }
    if ok and len(ok) != len(results):
        summary["latency_ms_2xx_only"] = {"p50": round(percentile(ok, 50), 1), "p99": round(percentile(ok, 99), 1)}
    return summary


def bodies_for(count: int, alerts: int, prefix: str) -> list[bytes]:
    return [json.dumps(alertmanager_notification(n, alerts, prefix=prefix)).encode() for n in range(count)]


def answered_within(before: dict, after: dict, bounds) -> dict:
    """Share of the run's webhooks the relay itself answered within each bound (seconds, as in its
    relay_webhook_duration_seconds buckets): its own time, without the client's or the kernel's queues."""
    def count(samples, bound):
        return sum(v for k, v in samples.items() if k.startswith("relay_webhook_duration_seconds_bucket{")
                   and 'source="alertmanager"' in k and f'le="{bound}"' in k)
    done = count(after, "+Inf") - count(before, "+Inf")
    return {f"within_{float(b) * 1000:g}_ms_pct": round(100 * (count(after, b) - count(before, b)) / max(1, done), 2)
            for b in bounds}


def cpu_since(workers, before: float, server) -> float | None:
    """CPU seconds the server's processes used since `before`; None if gunicorn replaced one meanwhile (a
    process that is gone takes its CPU time with it)."""
    if server.workers() != workers:
        return None
    return round(cpu_seconds(workers) - before, 2)


def run_relay(args, tmp: Path, total: int, delivery: bool) -> dict:
    """The relay under open-loop load, with its delivery workers on (sending to the slow simulator) or off."""
    with ExitStack() as stack:
        sim = stack.enter_context(simulator_process(args.pd_latency))
        url = stack.enter_context(fresh_store(args.store, tmp))
        env = relay_env(url, sim + "/v2/enqueue", delivery=delivery, rate_limit=args.rate_limit)
        relay = stack.enter_context(gunicorn("wsgi:app", env, tmp, "relay"))
        if args.warmup:
            open_loop(relay.port, "/webhooks/alertmanager",
                      bodies_for(int(args.rate * args.warmup), args.alerts, "Warm"), args.rate, args.timeout)
        seen, workers, metrics_before = sim_count(sim), relay.workers(), scrape(relay.url)
        cpu = cpu_seconds(workers)
        result = open_loop(relay.port, "/webhooks/alertmanager", bodies_for(total, args.alerts, "Iso"), args.rate,
                           args.timeout)
        result["worker_cpu_seconds"] = cpu_since(workers, cpu, relay)
        result["relay_side"] = answered_within(metrics_before, scrape(relay.url), ("0.005", "0.01", "0.025"))
        result["events_accepted_during_run"] = result["ok_2xx"] * args.alerts
        result["events_delivered_during_run"] = sim_count(sim) - seen
    print(f"  relay (delivery {'on' if delivery else 'off'}): {json.dumps(result['latency_ms'])}, relay's own time: "
          f"{json.dumps(result['relay_side'])}", file=sys.stderr)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200, help="webhooks per second")
    parser.add_argument("--duration", type=float, default=20, help="seconds of load per target")
    parser.add_argument("--alerts", type=int, default=2, help="alerts per webhook")
    parser.add_argument("--pd-latency", type=float, default=0.5, help="simulator answer delay, seconds")
    parser.add_argument("--timeout", type=float, default=10, help="client timeout per request, seconds")
    parser.add_argument("--rate-limit", type=int, default=0, help="relay's RELAY_RATE_LIMIT_PER_MINUTE (0: off)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of load before the relay's measured run")
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--no-control", dest="control", action="store_false",
                        help="skip the control run: the same relay with RELAY_DELIVERY=0, to tell delivery's "
                             "interference from the machine's own noise")
    args = parser.parse_args()
    total = int(args.rate * args.duration)
    results = {"config": {**vars(args), "requests_per_target": total,
                          "note": "relay: delivery on, to the slow simulator; rate limit per --rate-limit "
                                  "(0 = off); every alert distinct (own labels and fingerprint)"}}
    with tempfile.TemporaryDirectory(prefix="relay-bench-isolation-") as tmp:
        tmp = Path(tmp)
        results["relay"] = run_relay(args, tmp, total, delivery=True)
        if args.control:
            results["relay_delivery_off"] = run_relay(args, tmp, total, delivery=False)
        if not args.skip_naive:
            with ExitStack() as stack:
                sim = stack.enter_context(simulator_process(args.pd_latency))
                naive = stack.enter_context(gunicorn("bench.isolation:create_naive_app()",
                                                     {"NAIVE_EVENTS_URL": sim + "/v2/enqueue",
                                                      "NAIVE_ROUTING_KEY": ROUTING_KEY, "RELAY_LOG_LEVEL": "WARNING"},
                                                     tmp, "naive"))
                # warm-up: one request per worker is all the naive relay can take without queueing
                open_loop(naive.port, "/webhooks/alertmanager", bodies_for(2, args.alerts, "Warm"), 2,
                          args.timeout)
                workers = naive.workers()
                cpu = cpu_seconds(workers)
                results["naive"] = open_loop(naive.port, "/webhooks/alertmanager",
                                             bodies_for(total, args.alerts, "Naive"), args.rate, args.timeout)
                results["naive"]["worker_cpu_seconds"] = cpu_since(workers, cpu, naive)
                print(f"  naive: {json.dumps(results['naive']['latency_ms'])}", file=sys.stderr)
    print(json.dumps(results, indent=2))
    r = results["relay"]
    line = (f"isolation ({args.rate:.0f} webhooks/s, PagerDuty {args.pd_latency * 1000:.0f} ms): relay p50 "
            f"{r['latency_ms']['p50']} / p99 {r['latency_ms']['p99']} / max {r['latency_ms']['max']} ms "
            f"({'meets' if r['latency_ms']['p99'] <= 25 else 'MISSES'} p99 <= 25 ms), {r['ok_2xx']}/{r['requests']} "
            f"answered 2xx, {r['relay_side']['within_25_ms_pct']}% within 25 ms by the relay's own clock")
    if "relay_delivery_off" in results:
        line += f"; control (delivery off) p99 {results['relay_delivery_off']['latency_ms']['p99']} ms"
    if "naive" in results:
        n = results["naive"]
        line += (f"; naive p50 {n['latency_ms']['p50']} / p99 {n['latency_ms']['p99']} ms, {n['ok_2xx']}/"
                 f"{n['requests']} 2xx, {n['failed']} failed, {n['timed_out']} timed out (>{args.timeout:.0f} s)")
    print(line)


if __name__ == "__main__":
    main()
