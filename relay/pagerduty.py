"""Talking to PagerDuty's Events API v2: one keep-alive session, and what each answer means.

Answer rules (PagerDuty/developer-docs docs/events-API-v2/01-Overview.md, 05-Rate-Limits.md):
202 → accepted; 400 → the event is invalid, retrying cannot help (keep the `errors` array);
429 → rate limited, retry with backoff; 5xx, timeouts and connection errors → retry.
"""
import time
from dataclasses import dataclass, field

import requests
import requests.adapters

from relay.events import encode
from relay.masking import redact

DELIVERED = "delivered"
RETRY = "retry"  # safe to send again later: nothing was accepted
FAILED = "failed"  # PagerDuty refused the event itself: sending it again gets the same answer

JSON_HEADERS = {"Content-Type": "application/json"}
USER_AGENT = "relay/0.1 (+https://github.com/relay-alerts/relay)"


@dataclass
class Delivery:
    """What happened to one attempt at sending one event."""

    outcome: str
    http_status: int | None = None
    status: str | None = None  # PagerDuty's "status" field
    message: str | None = None  # PagerDuty's "message" field, or our description of the failure
    errors: list[str] = field(default_factory=list)
    dedup_key: str | None = None
    retry_after: float | None = None  # seconds, when PagerDuty sent Retry-After
    error: str | None = None  # transport error (timeout, refused connection…)
    duration_ms: float = 0.0

    @property
    def ok(self) -> bool:
        """Tell whether PagerDuty accepted the event."""
        return self.outcome == DELIVERED


def outcome_for_status(http_status: int) -> str:
    """Map an HTTP status from the Events API to delivered, retry or failed."""
    if 200 <= http_status < 300:
        return DELIVERED
    if http_status == 429 or http_status >= 500:
        return RETRY
    if http_status in (408, 409, 425):  # transient by definition, though PagerDuty does not document them
        return RETRY
    return FAILED


def parse_retry_after(value: str | None) -> float | None:
    """Read a Retry-After header given in seconds; dates and junk are ignored."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if seconds >= 0 else None


def classify(http_status: int, body, headers=None) -> Delivery:
    """Turn PagerDuty's HTTP answer into a Delivery."""
    body = body if isinstance(body, dict) else {}
    errors = body.get("errors")
    return Delivery(
        outcome=outcome_for_status(http_status),
        http_status=http_status,
        status=_text(body.get("status")),
        message=_text(body.get("message")) or f"HTTP {http_status}",
        errors=[str(e) for e in errors] if isinstance(errors, list) else [],
        dedup_key=_text(body.get("dedup_key")),
        retry_after=parse_retry_after((headers or {}).get("Retry-After")),
    )


def _text(value):
    return value if isinstance(value, str) else None


def _json_or_none(response):
    try:
        return response.json()
    except ValueError:
        return None


class PagerDutyClient:
    """Sends events to the Events API over one keep-alive requests.Session."""

    def __init__(self, events_url, connect_timeout=3.05, read_timeout=10.0, pool_size=10):
        self.events_url = events_url
        self.timeout = (connect_timeout, read_timeout)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        # One kept-alive connection per concurrent sender.
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=pool_size)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def send(self, event: dict) -> Delivery:
        """POST one event and say what became of it; never raises for network trouble."""
        started = time.perf_counter()
        delivery = self._post(event)
        delivery.duration_ms = (time.perf_counter() - started) * 1000
        # PagerDuty does not echo keys, but a proxy or error page might: never let one out.
        secret = event.get("routing_key")
        delivery.message = redact(delivery.message, secret)
        delivery.error = redact(delivery.error, secret)
        delivery.errors = [redact(e, secret) for e in delivery.errors]
        return delivery

    def _post(self, event):
        try:
            response = self.session.post(self.events_url, data=encode(event), headers=JSON_HEADERS,
                                         timeout=self.timeout)
        except requests.Timeout:
            return Delivery(RETRY, message="timed out waiting for PagerDuty", error="timeout")
        except requests.ConnectionError as exc:
            return Delivery(RETRY, message="could not connect to PagerDuty", error=_short(exc))
        except requests.RequestException as exc:
            return Delivery(RETRY, message="request to PagerDuty failed", error=_short(exc))
        return classify(response.status_code, _json_or_none(response), response.headers)

    def close(self):
        """Close the pooled connections."""
        self.session.close()


def _short(exc) -> str:
    """Name the exception and its first reason, without requests' long nested repr."""
    reason = str(exc).split(" (Caused by")[0]
    return f"{type(exc).__name__}: {reason}"[:500]
