"""Logging: one JSON object per line, a request id on every request, secrets masked.

Only the standard library is imported at module level: gunicorn.conf.py loads this file in the master for its
own error log, and the master must not import the app (workers would then keep old code across a HUP reload).
"""
import json
import logging
import os
import re
import sys
from datetime import datetime, timezone

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")  # what RELAY_LOG_LEVEL may name
REQUEST_ID_HEADER = "X-Request-ID"
# A caller's request id is kept when it is a short plain token; anything else is replaced, never echoed.
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
# Attributes every LogRecord has; anything else on a record came from `extra=` and becomes a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
# Fields of gunicorn's access log atoms worth keeping (glogging.Logger.atoms), by our name.
_ACCESS_ATOMS = {"remote_addr": "h", "method": "m", "path": "U", "status": "s", "bytes": "B",
                 "duration_ms": "M", "user_agent": "a", "request_id": "{x-request-id}o"}

_redactions: list[tuple[str, str]] = []  # (secret, masked form), set by init_app from the app's config
_request_id = None  # set by init_app: reads the current request's id when there is one


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object: time, level, logger, message, request_id, extra fields."""

    def format(self, record):
        """Return the record as a JSON line, secrets masked."""
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        request_id = _request_id() if _request_id else None
        if request_id:
            entry["request_id"] = request_id
        if record.name == "gunicorn.access" and isinstance(record.args, dict):
            entry.update({name: record.args[atom] for name, atom in _ACCESS_ATOMS.items()})
            entry["message"] = f"{entry['method']} {entry['path']} {entry['status']}"
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return _redact(json.dumps(entry, ensure_ascii=False, default=str))


def _redact(text: str) -> str:
    """Mask every configured secret (a second line of defence: callers log masked forms already)."""
    for secret, masked in _redactions:
        if secret in text:
            text = text.replace(secret, masked)
    return text


class StderrHandler(logging.StreamHandler):
    """Write to the process's stderr (file descriptor 2), found when a record comes.

    Not to sys.stderr: code that swaps it to capture a command's answer (click's CliRunner, for one) must not
    find the log interleaved with it; a redirect of fd 2 (a shell's 2>, pytest's capfd) still sees every line.
    """

    def __init__(self):
        super().__init__(self.stream)

    @property
    def stream(self):
        """The process's stderr."""
        return sys.__stderr__ or sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def json_handler() -> logging.Handler:
    """A handler writing JSON lines to stderr (also gunicorn.conf.py's logconfig_dict factory)."""
    handler = StderrHandler()
    handler.setFormatter(JsonFormatter())
    handler._relay_json = True
    return handler


def configure(level: str = "INFO") -> None:
    """Send the root logger's records to stderr as JSON lines, once per process."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        # The gunicorn master's handler (this file loaded apart from the package): use this module's, which
        # knows the app's secrets and the current request.
        if getattr(handler, "_relay_json", False) and not isinstance(handler.formatter, JsonFormatter):
            root.removeHandler(handler)
    if not any(getattr(handler, "_relay_json", False) for handler in root.handlers):
        root.addHandler(json_handler())
    root.setLevel(level)


def sane_request_id(value: str | None) -> str | None:
    """Return the caller's request id if it is a short plain token, else None."""
    return value if value and SANE_REQUEST_ID.fullmatch(value) else None


def secrets_of(config) -> list[str]:
    """Every secret the configuration holds: webhook credentials, the API token, routes' routing keys."""
    found = [config.get("RELAY_API_TOKEN"), config.get("PAGERDUTY_API_KEY")]
    for auth in [*(config.get("WEBHOOK_AUTH") or {}).values(), config.get("HEARTBEATS_AUTH") or {}]:
        found += [auth.get("bearer_token"), auth.get("basic_password"), auth.get("hmac_secret")]
    return [secret for secret in found if secret]


def init_app(app):
    """Log JSON lines; give every request an id (X-Request-ID in and out); mask the app's secrets in logs."""
    from flask import g, has_request_context, request

    from relay.masking import mask

    global _request_id
    configure(app.config["LOG_LEVEL"])

    def current_request_id():
        """The request id of the request being served, made on first use."""
        if not has_request_context():
            return None
        if "request_id" not in g:
            g.request_id = sane_request_id(request.headers.get(REQUEST_ID_HEADER)) or os.urandom(16).hex()
        return g.request_id

    def echo_request_id(response):
        response.headers[REQUEST_ID_HEADER] = current_request_id()
        return response

    _request_id = current_request_id
    app.after_request(echo_request_id)
    add_secrets(secrets_of(app.config), mask)


def add_secrets(secrets, mask) -> None:
    """Mask these secrets wherever they would appear in a log line (longest first, so none is half-masked)."""
    known = {secret for secret, _ in _redactions} | {s for s in secrets if s and len(s) >= 4}
    _redactions[:] = [(secret, mask(secret)) for secret in sorted(known, key=len, reverse=True)]


def delivery_outcomes(results, moves) -> None:
    """Log each attempt that was not a plain success, as (claimed, delivery) pairs with where the store moved
    each row (states.Transition, in the same order): WARNING for a retry, ERROR for failed or given up."""
    from relay.masking import mask
    from relay.store import states

    log = logging.getLogger("relay.delivery.worker")
    for (claimed, delivery), moved in zip(results, moves):
        if moved.status == states.DELIVERED:
            continue
        fields = {"log_id": claimed.log_id, "attempt": claimed.attempts, "outcome": delivery.outcome,
                  "http_status": delivery.http_status, "routing_key": mask(claimed.event.get("routing_key")),
                  "dedup_key": claimed.event.get("dedup_key"), "pd_message": delivery.message,
                  "pd_errors": delivery.errors or None, "error": delivery.error}
        if moved.status == states.FAILED:
            log.error("PagerDuty refused the event; it will not be retried", extra=fields)
        elif moved.status == states.DEAD:
            log.error("delivery given up: still failing after RELAY_GIVE_UP_AFTER_SECONDS", extra=fields)
        else:
            log.warning("delivery failed; will retry", extra=fields)
