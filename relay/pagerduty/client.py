"""Talking to PagerDuty's Events API v2: a pool of keep-alive connections, and what each answer means.

Answer rules (PagerDuty/developer-docs docs/events-API-v2/01-Overview.md, 05-Rate-Limits.md):
202 → accepted; 400 → the event is invalid, retrying cannot help (keep the `errors` array);
429 → rate limited, retry with backoff; 5xx, timeouts and connection errors → retry.

The client speaks through urllib3, the connection pool under requests, without requests' per-call layers
(settings merging, proxy lookup, response wrapping): on a 2-core machine that is 1,800 posts/s a thread against
800 (bench/delivery.py, README). Proxies from HTTPS_PROXY/HTTP_PROXY/NO_PROXY and certifi's CA bundle are kept,
as requests would have them.
"""
import json
import time
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import certifi
import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError, ProtocolError
from urllib3.exceptions import TimeoutError as UrllibTimeout

from relay.masking import redact
from relay.pagerduty.event import encode
from relay.store.states import DELIVERED, FAILED, RETRY

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


def _json_or_none(data: bytes):
    try:
        return json.loads(data)
    except ValueError:
        return None


def _pool(events_url: str, pool_size: int, timeout: urllib3.Timeout):
    """A connection pool to the events URL's host, through the environment's proxy when one applies."""
    parts = urlsplit(events_url)
    options = {"maxsize": pool_size, "timeout": timeout, "retries": False}
    if parts.scheme == "https":
        options["ca_certs"] = certifi.where()
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        return urllib3.ProxyManager(proxy, num_pools=1, **options)
    return urllib3.connection_from_url(events_url, **options)


class PagerDutyClient:
    """Sends events to the Events API over a pool of kept-alive connections, one per concurrent sender."""

    def __init__(self, events_url, connect_timeout=3.05, read_timeout=10.0, pool_size=10):
        self.events_url = events_url
        self.pool = _pool(events_url, pool_size, urllib3.Timeout(connect=connect_timeout, read=read_timeout))
        # A pool for one host takes the path; a proxy manager needs the whole URL.
        self.target = events_url if isinstance(self.pool, urllib3.ProxyManager) else _path(events_url)
        self.headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}

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
            response = self.pool.urlopen("POST", self.target, body=encode(event), headers=self.headers,
                                         redirect=False, decode_content=True)
        except NewConnectionError as exc:  # before timeouts: urllib3 counts it as one
            return Delivery(RETRY, message="could not connect to PagerDuty", error=_short("ConnectionError", exc))
        except UrllibTimeout:
            return Delivery(RETRY, message="timed out waiting for PagerDuty", error="timeout")
        except ProtocolError as exc:
            return Delivery(RETRY, message="connection to PagerDuty dropped", error=_short("ConnectionError", exc))
        except HTTPError as exc:
            return Delivery(RETRY, message="request to PagerDuty failed", error=_short(type(exc).__name__, exc))
        return classify(response.status, _json_or_none(response.data), response.headers)

    def close(self):
        """Close the pooled connections."""
        self.pool.clear() if isinstance(self.pool, urllib3.PoolManager) else self.pool.close()


def _path(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _short(kind: str, exc) -> str:
    """Name the failure and its last reason, without urllib3's connection object repr."""
    return f"{kind}: {str(exc).rsplit(': ', 1)[-1]}"[:500]
