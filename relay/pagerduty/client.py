"""Talking to PagerDuty's Events API v2: one requests.Session over a pool of keep-alive connections, and what each
answer means.

Answer rules (PagerDuty/developer-docs docs/events-API-v2/01-Overview.md, 05-Rate-Limits.md):
202 → accepted; 400 → the event is invalid, retrying cannot help (keep the `errors` array);
429 → rate limited, retry with backoff; 5xx, timeouts and connection errors → retry.

The session ignores the environment (trust_env off: no ~/.netrc credentials, no REQUESTS_CA_BUNDLE, no proxy
lookup on every call), keeps no cookies and follows no redirects; the proxy from HTTPS_PROXY/HTTP_PROXY/NO_PROXY
is read once, when the client is made, and certificates are checked against certifi's CA bundle.
"""
import json
import time
import urllib.request
from dataclasses import dataclass, field
from http.cookiejar import DefaultCookiePolicy
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import HTTPError, MaxRetryError, NewConnectionError, ProtocolError
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


def _environment_proxy(events_url: str) -> dict[str, str]:
    """Return the proxy the environment names for the events URL, as requests' proxies mapping."""
    parts = urlsplit(events_url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        return {parts.scheme: proxy}
    return {}


def _session(events_url: str, pool_size: int) -> requests.Session:
    """Make a session that sends exactly the client's headers over one pool of pool_size connections."""
    session = requests.Session()
    session.trust_env = False
    session.headers = CaseInsensitiveDict({"Content-Type": "application/json", "User-Agent": USER_AGENT})
    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))  # a load balancer's cookie is not echoed
    session.proxies = _environment_proxy(events_url)
    # No retries here: a retried POST could page twice, and the outbox already retries with backoff.
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class PagerDutyClient:
    """Sends events to the Events API over a pool of kept-alive connections, one per concurrent sender."""

    def __init__(self, events_url, connect_timeout=3.05, read_timeout=10.0, pool_size=10):
        self.events_url = events_url
        self.timeout = (connect_timeout, read_timeout)
        self.session = _session(events_url, pool_size)
        # Prepared once: merging the session's settings into every request costs as much as sending it.
        self.request = self.session.prepare_request(requests.Request("POST", events_url))

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
            request = self.request.copy()
            request.prepare_body(encode(event), None)
            response = self.session.send(request, timeout=self.timeout, allow_redirects=False)
        except (requests.RequestException, HTTPError) as exc:
            return _unanswered(_cause(exc))
        return classify(response.status_code, _json_or_none(response.content), response.headers)

    def close(self):
        """Close the pooled connections."""
        self.session.close()


def _cause(exc: Exception) -> Exception:
    """Find urllib3's own error under requests' wrapping (and under a MaxRetryError, for a failed connect)."""
    cause = exc.args[0] if isinstance(exc, requests.RequestException) and exc.args else exc
    if isinstance(cause, MaxRetryError) and cause.reason is not None:
        cause = cause.reason
    return cause if isinstance(cause, Exception) else exc


def _unanswered(cause: Exception) -> Delivery:
    """Describe a send that got no HTTP answer; every such send may be retried."""
    if isinstance(cause, NewConnectionError):  # before timeouts: urllib3 counts it as one
        return Delivery(RETRY, message="could not connect to PagerDuty", error=_short("ConnectionError", cause))
    if isinstance(cause, UrllibTimeout):
        return Delivery(RETRY, message="timed out waiting for PagerDuty", error="timeout")
    if isinstance(cause, ProtocolError):
        return Delivery(RETRY, message="connection to PagerDuty dropped", error=_short("ConnectionError", cause))
    return Delivery(RETRY, message="request to PagerDuty failed", error=_short(type(cause).__name__, cause))


def _short(kind: str, exc) -> str:
    """Name the failure and its last reason, without urllib3's connection object repr."""
    return f"{kind}: {str(exc).rsplit(': ', 1)[-1]}"[:500]
