"""An Alertmanager API v2 stand-in on a real socket for the fast tier: serves the alerts and silences a test sets,
in the shapes Alertmanager 0.25 answers (tests/fixtures/alertmanager_0.25_api_*_captured.json) at `/api/v2/...`
and at Grafana's `/api/alertmanager/grafana/api/v2/...`; checks the credential it is given. The end-to-end tests
use the real Alertmanager (tests/e2e/test_reconcile.py)."""
import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PREFIXES = ("/api/alertmanager/grafana/api/v2", "/api/v2")


class AlertsAPIState:
    """What the stand-in answers: alerts, silences, a fault status, and the credential it requires."""

    def __init__(self, authorization: str | None = None):
        self.alerts: list[dict] = []
        self.silences: dict[str, dict] = {}
        self.fault: int | None = None  # answer this status to every request
        self.authorization = authorization
        self.requests: list[tuple[str, str | None]] = []  # (path, Authorization header)

    def alert(self, fingerprint: str, labels: dict, silenced_by=(), inhibited_by=()) -> dict:
        """Add an alert as Alertmanager lists it; muted when silenced or inhibited."""
        item = {"annotations": {}, "endsAt": "2030-01-01T00:00:00.000Z", "fingerprint": fingerprint,
                "receivers": [{"name": "relay"}], "startsAt": "2026-12-07T07:00:00.000Z",
                "status": {"inhibitedBy": list(inhibited_by), "silencedBy": list(silenced_by),
                           "state": "suppressed" if silenced_by or inhibited_by else "active"},
                "updatedAt": "2026-12-07T07:00:00.000Z", "labels": labels}
        self.alerts.append(item)
        return item


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - signature fixed by BaseHTTPRequestHandler
        pass

    def do_GET(self):
        state = self.server.state
        state.requests.append((self.path, self.headers.get("Authorization")))
        path = next((self.path[len(p):] for p in PREFIXES if self.path.startswith(p)), None)
        if state.fault:
            return self._send(state.fault, {"message": "fault"})
        if state.authorization and self.headers.get("Authorization") != state.authorization:
            return self._send(401, {"message": "unauthorized"})
        if path == "/alerts":
            return self._send(200, state.alerts)
        if path and path.startswith("/silence/") and path[len("/silence/"):] in state.silences:
            return self._send(200, state.silences[path[len("/silence/"):]])
        return self._send(404, {"message": "not found"})

    def _send(self, status: int, body) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@contextmanager
def alerts_api(authorization: str | None = None):
    """Serve an AlertsAPIState on a free loopback port; yield (its root URL, the state)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.state = AlertsAPIState(authorization)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.state
    finally:
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()
