"""PagerDuty Events API v2 simulator: a local stand-in for events.pagerduty.com.

Owns: validating events like PagerDuty does, per-(routing key, dedup key) alert state, a record of
every request received, fault injection (latency, scripted answers, outage, a random error rate), the `/_sim/*` control
endpoints, the in-process `PagerDutySimulator` API and the `python -m tools.simulator` CLI.
Stdlib only, so it runs anywhere the relay's tests or benchmarks run.

Behaviour follows PagerDuty/developer-docs `docs/events-API-v2/` (01-Overview.md, 02-Trigger-Events.md)
and PagerDuty/api-schema `reference/events-v2/openapiv3.json`, as summarised in REFERENCE.md.
"""
import argparse
import json
import random
import signal
import socketserver
import sys
import threading
import time
import uuid
from collections import deque
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

ROUTING_KEY_LENGTH = 32  # integration key length: developer-docs 02-Trigger-Events.md
MAX_DEDUP_KEY_LENGTH = 255  # developer-docs 02-Trigger-Events.md
MAX_SUMMARY_LENGTH = 1024  # developer-docs 02-Trigger-Events.md
MAX_EVENT_BYTES = 512 * 1024  # an event must be under 512 KB: developer-docs 01-Overview.md
EVENT_ACTIONS = ("trigger", "acknowledge", "resolve")  # developer-docs 02-Trigger-Events.md
SEVERITIES = ("critical", "error", "warning", "info")  # lower case only: api-schema openapiv3.json

EVENTS_PATH = "/v2/enqueue"
CHANGE_PATH = "/v2/change/enqueue"  # change events: developer-docs 03-Change-Events.md
OUTAGE_MODES = ("503", "refuse")
REFUSE = "refuse"  # a scripted "answer" that closes the connection instead of answering

ACCEPTED = "accepted"
REJECTED = "rejected"
DROPPED = "dropped"
INJECTED_FAULT = "injected-fault"

TRIGGERED = "triggered"
ACKNOWLEDGED = "acknowledged"
RESOLVED = "resolved"

INVALID_EVENT_MESSAGE = "Event object is invalid"
FAULT_BODIES = {
    429: {"status": "throttle event", "message": "Requests for this service are arriving too quickly. Please retry later."},
    503: {"status": "unavailable", "message": "Service unavailable (simulated)"},
}


def mask_key(key) -> str:
    """Return a routing key safe to print: "…" plus its last four characters (nothing if short)."""
    text = "" if key is None else str(key)
    # Same rule as relay/masking.py: a short string would be mostly given away by its tail.
    return "…" if len(text) <= 8 else "…" + text[-4:]


# --- validation (pure functions) -------------------------------------------------------------

def _is_blank(value) -> bool:
    """Tell whether a field is missing, null or an all-whitespace string."""
    return value is None or (isinstance(value, str) and not value.strip())


def _check_string(event: dict, name: str, label: str, errors: list) -> str | None:
    """Require event[name] to be a non-blank string; return it or None."""
    value = event.get(name)
    if _is_blank(value):
        errors.append(f"'{label}' is missing or blank")
        return None
    if not isinstance(value, str):
        errors.append(f"'{label}' must be a string")
        return None
    return value


def _check_routing_key(event: dict, errors: list) -> None:
    """Check routing_key: present and exactly 32 characters (never echo its value)."""
    key = _check_string(event, "routing_key", "routing_key", errors)
    if key is not None and len(key) != ROUTING_KEY_LENGTH:
        errors.append(f"'routing_key' must be {ROUTING_KEY_LENGTH} characters long (got {len(key)})")


def _check_action(event: dict, errors: list) -> str | None:
    """Check event_action; return it when valid."""
    action = _check_string(event, "event_action", "event_action", errors)
    if action is not None and action not in EVENT_ACTIONS:
        errors.append(f"'event_action' must be one of {', '.join(EVENT_ACTIONS)}")
        return None
    return action


def _check_dedup_key(event: dict, action: str | None, errors: list) -> None:
    """Check dedup_key: at most 255 characters, required for acknowledge and resolve."""
    dedup_key = event.get("dedup_key")
    if _is_blank(dedup_key):
        if action in ("acknowledge", "resolve"):
            errors.append(f"'dedup_key' is required for {action} events")
    elif not isinstance(dedup_key, str):
        errors.append("'dedup_key' must be a string")
    elif len(dedup_key) > MAX_DEDUP_KEY_LENGTH:
        errors.append(f"'dedup_key' must be at most {MAX_DEDUP_KEY_LENGTH} characters (got {len(dedup_key)})")


def _check_timestamp(payload: dict, errors: list) -> None:
    """Check payload.timestamp parses as ISO 8601 when present."""
    value = payload.get("timestamp")
    if value is None:
        return
    try:
        datetime.fromisoformat(value)
    except (TypeError, ValueError):
        errors.append("'payload.timestamp' must be an ISO 8601 timestamp")


def _check_payload(event: dict, errors: list) -> None:
    """Check a trigger's payload: summary, source, severity, timestamp, custom_details."""
    payload = event.get("payload")
    if payload is None:
        errors.append("'payload' is required for trigger events")
        return
    if not isinstance(payload, dict):
        errors.append("'payload' must be an object")
        return
    summary = _check_string(payload, "summary", "payload.summary", errors)
    if summary is not None and len(summary) > MAX_SUMMARY_LENGTH:
        errors.append(f"'payload.summary' must be at most {MAX_SUMMARY_LENGTH} characters (got {len(summary)})")
    _check_string(payload, "source", "payload.source", errors)
    severity = _check_string(payload, "severity", "payload.severity", errors)
    if severity is not None and severity not in SEVERITIES:
        errors.append(f"'payload.severity' must be one of {', '.join(SEVERITIES)}")
    _check_timestamp(payload, errors)
    if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
        errors.append("'payload.custom_details' must be an object")


def _check_items(event: dict, name: str, errors: list) -> list:
    """Return (index, item) for each object in the array event[name], reporting anything else."""
    items = event.get(name)
    if items is None:
        return []
    if not isinstance(items, list):
        errors.append(f"'{name}' must be an array")
        return []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            errors.append(f"'{name}[{index}]' must be an object")
    return [(index, item) for index, item in enumerate(items) if isinstance(item, dict)]


def _check_images_and_links(event: dict, errors: list) -> None:
    """Check images[].src is an https URL and links[].href is present."""
    for index, image in _check_items(event, "images", errors):
        src = image.get("src")
        if not (isinstance(src, str) and src.startswith("https://")):
            errors.append(f"'images[{index}].src' must be an https URL")
    for index, link in _check_items(event, "links", errors):
        if _is_blank(link.get("href")) or not isinstance(link.get("href"), str):
            errors.append(f"'links[{index}].href' is missing or blank")


def validate_event(event) -> list[str]:
    """Return PagerDuty-style error strings for an event (empty list when valid)."""
    if not isinstance(event, dict):
        return ["Event must be a JSON object"]
    errors: list[str] = []
    _check_routing_key(event, errors)
    action = _check_action(event, errors)
    _check_dedup_key(event, action, errors)
    if action == "trigger":
        # payload, images and links only mean something on a trigger; PagerDuty ignores them otherwise.
        _check_payload(event, errors)
        _check_images_and_links(event, errors)
    return errors


def validate_change_event(event) -> list[str]:
    """Return PagerDuty-style error strings for a change event: routing_key, payload.summary, links."""
    if not isinstance(event, dict):
        return ["Event must be a JSON object"]
    errors: list[str] = []
    _check_routing_key(event, errors)
    payload = event.get("payload")
    if not isinstance(payload, dict):
        errors.append("'payload' is missing or blank" if payload is None else "'payload' must be an object")
        return errors
    summary = _check_string(payload, "summary", "payload.summary", errors)
    if summary is not None and len(summary) > MAX_SUMMARY_LENGTH:
        errors.append(f"'payload.summary' must be at most {MAX_SUMMARY_LENGTH} characters (got {len(summary)})")
    _check_timestamp(payload, errors)
    for index, link in _check_items(event, "links", errors):
        if _is_blank(link.get("href")) or not isinstance(link.get("href"), str):
            errors.append(f"'links[{index}].href' is missing or blank")
    return errors


def parse_event(raw: bytes, validate=validate_event) -> tuple[object, list[str]]:
    """Parse a raw body; return (parsed body or raw text, errors)."""
    errors = []
    if len(raw) >= MAX_EVENT_BYTES:
        errors.append(f"Event must be smaller than 512 KB ({MAX_EVENT_BYTES} bytes; got {len(raw)})")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        return raw.decode("utf-8", "replace"), errors + [f"Request body is not valid JSON: {exc}"]
    return body, errors + validate(body)


def invalid_event_body(errors: list[str]) -> dict:
    """Build PagerDuty's 400 answer."""
    return {"status": "invalid event", "message": INVALID_EVENT_MESSAGE, "errors": errors}


def fault_body(status: int) -> dict:
    """Build the body of an injected error answer."""
    if status == 400:
        return invalid_event_body(["Injected fault"])
    return FAULT_BODIES.get(status, {"status": "error", "message": f"Simulated HTTP {status}"})


# --- state -----------------------------------------------------------------------------------

class SimulatorState:
    """Everything the simulator remembers, behind one lock."""

    def __init__(self, routing_keys=None):
        """Start empty, optionally restricted to the given routing keys."""
        self._lock = threading.Lock()
        self._clear()
        self.set_routing_keys(routing_keys)

    def _clear(self) -> None:
        """Forget records, alerts, faults and keys (caller holds the lock or is __init__)."""
        self._records: list[dict] = []
        self._alerts: list[dict] = []
        self._open: dict[tuple, dict] = {}
        self._faults: deque = deque()
        self._latency = 0.0
        self._outage: str | None = None
        self._error_rate = 0.0
        self._error_status = 503
        self._random = random.Random()
        self._routing_keys: frozenset = frozenset()
        # A request still sleeping in injected latency when a reset comes must not land in the new records.
        self._generation = getattr(self, "_generation", 0) + 1

    def reset(self) -> None:
        """Clear everything: records, alert state, faults, latency, outage and routing keys."""
        with self._lock:
            self._clear()

    def set_routing_keys(self, keys) -> None:
        """Accept only these routing keys (None or empty: any valid 32-character key)."""
        keys = frozenset(keys or ())
        if not all(isinstance(key, str) for key in keys):
            raise ValueError("routing keys must be strings")
        with self._lock:
            self._routing_keys = keys

    def set_latency(self, seconds: float) -> None:
        """Delay every event answer by this many seconds."""
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
            raise ValueError("latency must be a number of seconds >= 0")
        with self._lock:
            self._latency = float(seconds)

    def set_outage(self, mode) -> None:
        """Answer every event with 503 ("503"), close connections ("refuse"), or behave (None)."""
        mode = None if mode is None else str(mode)
        if mode is not None and mode not in OUTAGE_MODES:
            raise ValueError(f"outage must be one of {', '.join(OUTAGE_MODES)} or null")
        with self._lock:
            self._outage = mode

    def set_error_rate(self, rate, status: int = 503, seed=None) -> None:
        """Answer this fraction of events (0 to 1) with `status`, at random (`seed` makes it repeatable)."""
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise ValueError("error rate must be a number from 0 to 1")
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError("error status must be an HTTP status code")
        with self._lock:
            self._error_rate, self._error_status = float(rate), status
            self._random = random.Random(seed)

    def inject(self, status, count: int = 1, retry_after=None) -> None:
        """Queue `count` scripted answers with this status (or "refuse"), optionally with Retry-After."""
        if status != REFUSE and (isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599):
            raise ValueError('status must be an HTTP status code or "refuse"')
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError("count must be an integer >= 1")
        retry_after = None if retry_after is None else str(retry_after)
        with self._lock:
            self._faults.append([status, count, retry_after])

    def config(self) -> dict:
        """Describe the current configuration (routing keys masked)."""
        with self._lock:
            return {
                "latency": self._latency,
                "outage": self._outage,
                "error_rate": self._error_rate,
                "error_status": self._error_status,
                "routing_keys": sorted(mask_key(key) for key in self._routing_keys),
                "faults": [{"status": s, "count": c, "retry_after": r} for s, c, r in self._faults],
            }

    def plan(self, record: dict) -> tuple[float, tuple | None]:
        """Return (latency, fault) for a request arriving now, consuming one scripted answer."""
        with self._lock:
            record["generation"] = self._generation
            if self._outage == REFUSE:
                return self._latency, (REFUSE, None)
            if self._outage is not None:
                return self._latency, (503, None)
            if not self._faults:
                if self._error_rate and self._random.random() < self._error_rate:
                    return self._latency, (self._error_status, None)
                return self._latency, None
            fault = self._faults[0]
            fault[1] -= 1
            if fault[1] == 0:
                self._faults.popleft()
            return self._latency, (fault[0], fault[2])

    def record(self, record: dict) -> None:
        """Append a record of a request that did not touch alert state."""
        with self._lock:
            if record.pop("generation", self._generation) == self._generation:
                record["index"] = len(self._records)
                self._records.append(record)

    def apply_event(self, event: dict, record: dict) -> tuple[int, dict]:
        """Apply a valid event to alert state, record it, and return (status, answer body)."""
        with self._lock:
            if record.pop("generation", self._generation) != self._generation:
                return 202, {"status": "success", "message": "Event processed", "dedup_key": event.get("dedup_key")}
            if self._routing_keys and event["routing_key"] not in self._routing_keys:
                status, outcome, answer = 400, REJECTED, invalid_event_body(["Invalid routing key"])
            else:
                given = event.get("dedup_key")
                dedup_key = uuid.uuid4().hex if _is_blank(given) else given
                outcome = self._transition(event, dedup_key, record["received_at"])
                status, answer = 202, {"status": "success", "message": "Event processed", "dedup_key": dedup_key}
                record["dedup_key"] = dedup_key
            record.update(status=status, outcome=outcome, errors=answer.get("errors", []), index=len(self._records))
            self._records.append(record)
            return status, answer

    def apply_change(self, event: dict, record: dict) -> tuple[int, dict]:
        """Record a valid change event (it opens no alert) and return (status, answer body)."""
        with self._lock:
            if self._routing_keys and event["routing_key"] not in self._routing_keys:
                status, outcome, answer = 400, REJECTED, invalid_event_body(["Invalid routing key"])
            else:
                status, outcome, answer = 202, ACCEPTED, {"status": "success", "message": "Change event processed"}
            if record.pop("generation", self._generation) == self._generation:
                record.update(status=status, outcome=outcome, errors=answer.get("errors", []),
                              index=len(self._records))
                self._records.append(record)
            return status, answer

    def _transition(self, event: dict, dedup_key: str, now: float) -> str:
        """Move the alert for (routing_key, dedup_key); return the outcome (caller holds the lock)."""
        key = (event["routing_key"], dedup_key)
        alert = self._open.get(key)
        action = event["event_action"]
        if action == "trigger":
            if alert is None:
                self._open[key] = self._new_alert(event, dedup_key, now)
            else:
                alert["trigger_count"] += 1
                alert["updated_at"] = now
            return ACCEPTED
        if alert is None:
            return DROPPED  # PagerDuty drops follow-ups for alerts that are not open
        alert["updated_at"] = now
        if action == "acknowledge":
            alert["status"], alert["acknowledged_at"] = ACKNOWLEDGED, now
        else:
            alert["status"], alert["resolved_at"] = RESOLVED, now
            del self._open[key]
        return ACCEPTED

    def _new_alert(self, event: dict, dedup_key: str, now: float) -> dict:
        """Open a new alert from a trigger (caller holds the lock)."""
        payload = event["payload"]
        alert = {
            "id": len(self._alerts), "routing_key": event["routing_key"], "dedup_key": dedup_key,
            "status": TRIGGERED, "summary": payload["summary"], "source": payload["source"],
            "severity": payload["severity"], "trigger_count": 1, "opened_at": now, "updated_at": now,
            "acknowledged_at": None, "resolved_at": None,
        }
        self._alerts.append(alert)
        return alert

    def received(self, since: int = 0) -> list[dict]:
        """Return copies of the records from index `since` on, in arrival order."""
        with self._lock:
            return [dict(record) for record in self._records[since:]]

    def alerts(self) -> list[dict]:
        """Return copies of every alert ever opened (a re-trigger after resolve is a new one)."""
        with self._lock:
            return [dict(alert) for alert in self._alerts]


# --- HTTP ------------------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    """Serves /v2/enqueue, /_sim/* and /healthz; cheap enough for 1,000+ events/s."""

    protocol_version = "HTTP/1.1"  # keep-alive, as PagerDuty's edge offers
    server_version = "pagerduty-simulator"
    disable_nagle_algorithm = True  # with keep-alive, Nagle + delayed ACK would add ~40 ms per answer

    def log_message(self, format, *args):  # noqa: A002 - signature fixed by BaseHTTPRequestHandler
        """Stay quiet: per-request logging is the --verbose event line only."""

    def do_GET(self):
        """Route a GET."""
        self._dispatch()

    def do_POST(self):
        """Route a POST."""
        self._dispatch()

    def _read_body(self) -> bytes | None:
        """Read exactly Content-Length bytes (or a chunked body); None if the length is unusable."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes:
        """Read a chunked request body."""
        parts = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    def _send(self, status: int, body, extra_headers: dict | None = None) -> None:
        """Write a whole JSON answer in one send, always with Content-Length."""
        data = json.dumps(body).encode()
        lines = [f"HTTP/1.1 {status} {_reason(status)}", "Server: pagerduty-simulator",
                 "Content-Type: application/json", f"Content-Length: {len(data)}"]
        lines += [f"{name}: {value}" for name, value in (extra_headers or {}).items()]
        if self.close_connection:
            lines.append("Connection: close")
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data)

    def _dispatch(self) -> None:
        """Read the body, then hand the request to the control or the events side."""
        received_at = time.time()
        raw = self._read_body()
        if raw is None:
            self.close_connection = True  # cannot find the next request without a length
            self._send(400, {"error": "bad Content-Length"})
            return
        url = urlsplit(self.path)
        if url.path == "/healthz" or url.path.startswith("/_sim/"):
            self._control(url, raw)
        else:
            self._event(url.path, raw, received_at)

    # events side

    def _event(self, path: str, raw: bytes, received_at: float) -> None:
        """Answer a request to the PagerDuty side, applying faults first."""
        state: SimulatorState = self.server.state
        record = {"received_at": received_at, "method": self.command, "path": path,
                  "client_port": self.client_address[1], "dedup_key": None, "errors": []}
        latency, fault = state.plan(record)
        if latency:
            time.sleep(latency)
        if fault is not None:
            record["body"] = _parse_quietly(raw)
            answer = self._fault_answer(state, record, *fault)
        elif path not in (EVENTS_PATH, CHANGE_PATH) or self.command != "POST":
            record["body"] = _parse_quietly(raw)
            status = 404 if path not in (EVENTS_PATH, CHANGE_PATH) else 405
            record.update(status=status, outcome=REJECTED)
            state.record(record)
            answer = (status, {"status": "error", "message": HTTPStatus(status).phrase}, None)
        else:
            answer = self._event_answer(state, record, raw)
        if self.server.verbose:
            _log_record(record)  # before the answer: a client holding its answer finds the line written
        if answer is None:
            self.close_connection = True  # close without a word, like a dead load balancer
        else:
            self._send(*answer)

    def _fault_answer(self, state: SimulatorState, record: dict, status, retry_after):
        """The answer to an injected fault (None: refuse it); alert state stays untouched."""
        record.update(status=None if status == REFUSE else status, outcome=INJECTED_FAULT)
        state.record(record)
        if status == REFUSE:
            return None
        return status, fault_body(status), {"Retry-After": retry_after} if retry_after else None

    def _event_answer(self, state: SimulatorState, record: dict, raw: bytes):
        """Validate an event and apply it; return PagerDuty's answer."""
        change = record["path"] == CHANGE_PATH
        body, errors = parse_event(raw, validate_change_event if change else validate_event)
        record["body"] = body
        if errors:
            record.update(status=400, outcome=REJECTED, errors=errors)
            state.record(record)
            return 400, invalid_event_body(errors), None
        status, answer = state.apply_change(body, record) if change else state.apply_event(body, record)
        return status, answer, None

    # control side

    def _control(self, url, raw: bytes) -> None:
        """Answer /healthz and the /_sim/* control endpoints."""
        route = _CONTROL_ROUTES.get((self.command, url.path))
        if route is None:
            self._send(404, {"error": f"no control endpoint {self.command} {url.path}"})
            return
        try:
            status, body = route(self.server.state, url, raw)
        except (ValueError, TypeError, KeyError) as exc:
            status, body = 400, {"error": str(exc)}
        self._send(status, body)


def _reason(status: int) -> str:
    """Return the reason phrase for a status code."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _parse_quietly(raw: bytes):
    """Return the parsed JSON body, or its text when it is not JSON."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return raw.decode("utf-8", "replace")


def _log_record(record: dict) -> None:
    """Write one short line about an event to stderr, with the routing key masked."""
    body = record.get("body")
    body = body if isinstance(body, dict) else {}
    dedup_key = str(record.get("dedup_key") or body.get("dedup_key") or "-")[:64]
    sys.stderr.write(
        f"{record['method']} {record['path']} {record['status']} {record['outcome']} "
        f"action={body.get('event_action', '-')} key={mask_key(body.get('routing_key'))} dedup={dedup_key}\n"
    )


def _json_object(raw: bytes) -> dict:
    """Parse a control request body that must be a JSON object (empty means {})."""
    body = json.loads(raw) if raw.strip() else {}
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    return body


def _ctl_config(state: SimulatorState, url, raw: bytes) -> tuple[int, dict]:
    """POST /_sim/config: set any of latency, routing_keys, outage, error_rate (with error_status, seed)."""
    body = _json_object(raw)
    unknown = set(body) - {"latency", "routing_keys", "outage", "error_rate", "error_status", "seed"}
    if unknown:
        raise ValueError(f"unknown config fields: {', '.join(sorted(unknown))}")
    if "latency" in body:
        state.set_latency(body["latency"])
    if "routing_keys" in body:
        keys = body["routing_keys"]
        if keys is not None and not isinstance(keys, list):
            raise ValueError("routing_keys must be a list or null")
        state.set_routing_keys(keys)
    if "outage" in body:
        state.set_outage(body["outage"])
    if "error_rate" in body:
        state.set_error_rate(body["error_rate"], body.get("error_status", 503), body.get("seed"))
    return 200, state.config()


def _ctl_faults(state: SimulatorState, url, raw: bytes) -> tuple[int, dict]:
    """POST /_sim/faults: queue scripted answers."""
    body = _json_object(raw)
    state.inject(body["status"], body.get("count", 1), body.get("retry_after"))
    return 200, state.config()


def _ctl_events(state: SimulatorState, url, raw: bytes) -> tuple[int, list]:
    """GET /_sim/events[?since=N]: the records, in arrival order."""
    since = int(parse_qs(url.query).get("since", ["0"])[0])
    if since < 0:
        raise ValueError("since must be >= 0")
    return 200, state.received(since)


def _ctl_reset(state: SimulatorState, url, raw: bytes) -> tuple[int, dict]:
    """POST /_sim/reset: forget everything."""
    state.reset()
    return 200, {"status": "ok"}


_CONTROL_ROUTES = {
    ("GET", "/healthz"): lambda state, url, raw: (200, {"status": "ok"}),
    ("GET", "/_sim/events"): _ctl_events,
    ("GET", "/_sim/alerts"): lambda state, url, raw: (200, state.alerts()),
    ("GET", "/_sim/config"): lambda state, url, raw: (200, state.config()),
    ("POST", "/_sim/config"): _ctl_config,
    ("POST", "/_sim/faults"): _ctl_faults,
    ("POST", "/_sim/reset"): _ctl_reset,
}


class _Server(ThreadingHTTPServer):
    """Threaded HTTP server holding the simulator state."""

    daemon_threads = True
    request_queue_size = 256  # benchmarks open many connections at once

    def __init__(self, address, state: SimulatorState, verbose: bool = False):
        """Bind to address and serve the given state."""
        self.state = state
        self.verbose = verbose
        super().__init__(address, _Handler)

    def server_bind(self):
        """Bind without HTTPServer's reverse-DNS lookup of the host (slow in sandboxes)."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address):
        """Ignore clients hanging up; report anything else."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


# --- public API ------------------------------------------------------------------------------

class PagerDutySimulator:
    """In-process simulator: start() it on port 0, point the relay at events_url, inspect, stop()."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, routing_keys=None, verbose: bool = False):
        """Bind now (so the port is known), serve after start()."""
        self.state = SimulatorState(routing_keys)
        self._server = _Server((host, port), self.state, verbose)
        self._thread: threading.Thread | None = None

    def start(self) -> "PagerDutySimulator":
        """Serve in a daemon thread; return self."""
        # A short poll interval makes stop() take ~50 ms instead of serve_forever's default 0.5 s.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name="pagerduty-simulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted."""
        try:
            self._server.serve_forever()
        finally:
            self._server.server_close()

    def __enter__(self) -> "PagerDutySimulator":
        """Start on entering a with block."""
        return self.start()

    def __exit__(self, *exc) -> None:
        """Stop on leaving a with block."""
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:PORT."""
        host, port = self._server.server_address[:2]
        host = "127.0.0.1" if host in ("", "0.0.0.0") else host
        return f"http://{host}:{port}"

    @property
    def events_url(self) -> str:
        """URL to post events to."""
        return self.url + EVENTS_PATH

    def received(self) -> list[dict]:
        """Copies of all request records, in arrival order."""
        return self.state.received()

    def accepted(self) -> list:
        """Bodies of the events answered 202 and applied to alert state."""
        return [record["body"] for record in self.state.received() if record["outcome"] == ACCEPTED]

    def alerts(self) -> list[dict]:
        """Copies of every alert opened so far, with their current status."""
        return self.state.alerts()

    def set_latency(self, seconds: float) -> None:
        """Delay every event answer by this many seconds."""
        self.state.set_latency(seconds)

    def set_routing_keys(self, keys) -> None:
        """Accept only these routing keys (None or empty: any)."""
        self.state.set_routing_keys(keys)

    def set_outage(self, mode) -> None:
        """Outage mode: "503", "refuse" or None."""
        self.state.set_outage(mode)

    def set_error_rate(self, rate, status: int = 503, seed=None) -> None:
        """Answer a random fraction `rate` of events with `status` (after outage and scripted answers)."""
        self.state.set_error_rate(rate, status, seed)

    def inject(self, status, count: int = 1, retry_after=None) -> None:
        """Answer the next `count` events with `status` (or "refuse"), optionally with Retry-After."""
        self.state.inject(status, count, retry_after)

    def reset(self) -> None:
        """Clear records, alerts, faults, latency, outage and routing keys."""
        self.state.reset()


# --- CLI -------------------------------------------------------------------------------------

def _parse_args(argv):
    """Parse the command line."""
    parser = argparse.ArgumentParser(prog="python -m tools.simulator", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--routing-key", action="append", default=[], dest="routing_keys",
                        help="accept only this key (repeatable); default: any 32-character key")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every event answer")
    parser.add_argument("--verbose", action="store_true", help="log one line per event to stderr")
    return parser.parse_args(argv)


def _interrupt(signum, frame):
    """Turn SIGINT and SIGTERM into the same clean exit."""
    raise KeyboardInterrupt


def main(argv=None) -> int:
    """Run the simulator until SIGINT or SIGTERM."""
    args = _parse_args(argv)
    simulator = PagerDutySimulator(args.host, args.port, args.routing_keys, verbose=args.verbose)
    simulator.set_latency(args.latency)
    for signum in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: a shell starts background jobs ignoring it
        signal.signal(signum, _interrupt)
    print(f"PagerDuty simulator listening on {simulator.url}", flush=True)
    try:
        simulator.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
