"""Talking to PagerDuty's Events API v2: one requests.Session over a pool of keep-alive connections, and what each
answer means.

Answer rules (PagerDuty/developer-docs docs/events-API-v2/01-Overview.md, 05-Rate-Limits.md):
202 with the JSON body `{"status": "success", …}` → accepted, and nothing else counts as delivered (a captive
portal's page, an empty or cut-off body, another 2xx are retried); 400 → the event is invalid, retrying cannot
help (keep the `errors` array); 429 → rate limited, retry with backoff; 5xx, timeouts and connection errors →
retry. 3xx, 401, 403, 404 and 407 are no answer the Events API gives to an event: the URL is wrong or a proxy is
in the way, so they are retried too, and flagged as misdirected (as unproven 2xx are) for the operator to see.

A send has a deadline for the whole exchange, the connect and read timeouts added up: an answer trickled a byte
at a time is cut off there, so no send outlives the claim's lease (relay/intake/configure.py keeps the lease
longer).

The session ignores the environment (trust_env off: no ~/.netrc credentials, no REQUESTS_CA_BUNDLE, no proxy
lookup on every call), keeps no cookies and follows no redirects; the proxy from HTTPS_PROXY/HTTP_PROXY/NO_PROXY
is read once, when the client is made, and certificates are checked against certifi's CA bundle.
"""
import contextlib
import http.client
import io
import json
import socket
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.cookiejar import DefaultCookiePolicy
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool, ProxyManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import HTTPError, MaxRetryError, NewConnectionError, ProtocolError
from urllib3.exceptions import TimeoutError as UrllibTimeout

from relay.masking import redact
from relay.pagerduty.event import encode
from relay.store.states import DELIVERED, FAILED, RETRY

USER_AGENT = "relay/0.1 (+https://github.com/relay-alerts/relay)"
ACCEPTED_STATUS = 202  # 01-Overview.md: 202 {"status": "success", "message": "Event processed", "dedup_key": …}
# Statuses that, short of PagerDuty's own 202, come from something other than the Events API: another 2xx (a
# captive portal's page), a redirect, a door that is not PagerDuty's (a wrong path, an authenticating proxy).
# Retried, since fixing the URL or the proxy makes the same event deliverable.
MISDIRECTED_STATUSES = frozenset([*range(200, 400), 401, 403, 404, 407])


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
    misdirected: bool = False  # the answer was not the Events API's (see MISDIRECTED_STATUSES)

    @property
    def ok(self) -> bool:
        """Tell whether PagerDuty accepted the event."""
        return self.outcome == DELIVERED


def misdirected(http_status: int | None) -> bool:
    """Tell whether an answer with this status, unless it is PagerDuty's acceptance, means the URL is wrong or a
    proxy is in the way."""
    return http_status in MISDIRECTED_STATUSES


def accepted(http_status: int, body) -> bool:
    """Tell whether an answer is PagerDuty's acceptance: 202 with the JSON status "success"."""
    return http_status == ACCEPTED_STATUS and isinstance(body, dict) and body.get("status") == "success"


def outcome_for(http_status: int, body) -> str:
    """Map an answer from the Events API to delivered, retry or failed; only PagerDuty's acceptance is delivered."""
    if accepted(http_status, body):
        return DELIVERED
    if misdirected(http_status):
        return RETRY
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
    outcome = outcome_for(http_status, body)
    body = body if isinstance(body, dict) else {}
    errors = body.get("errors")
    return Delivery(
        outcome=outcome,
        http_status=http_status,
        status=_text(body.get("status")),
        message=_answer_message(http_status, outcome, body, headers or {}),
        errors=[str(e) for e in errors] if isinstance(errors, list) else [],
        dedup_key=_text(body.get("dedup_key")),
        retry_after=parse_retry_after((headers or {}).get("Retry-After")),
        misdirected=outcome != DELIVERED and misdirected(http_status),
    )


def _answer_message(http_status: int, outcome: str, body: dict, headers) -> str:
    """Say what an answer was: PagerDuty's message, or why the answer is not PagerDuty's."""
    if outcome == DELIVERED:
        return _text(body.get("message")) or f"HTTP {http_status}"
    if 200 <= http_status < 300:
        return (f"HTTP {http_status} without PagerDuty's acceptance (202 with status \"success\"): not counted as "
                "delivered")
    if misdirected(http_status):
        location = headers.get("Location")
        where = f" to {safe_url(location)}" if 300 <= http_status < 400 and location else ""
        return f"HTTP {http_status}{where} is no Events API answer: the events URL is wrong or a proxy is in the way"
    return _text(body.get("message")) or f"HTTP {http_status}"


def safe_url(url: str) -> str:
    """The URL without credentials, query or fragment: safe to log."""
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    try:
        netloc = f"{host}:{parts.port}" if parts.port else host
    except ValueError:  # a port that is no number
        netloc = host
    return f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme else parts.path


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


_exchange = threading.local()  # the deadline (time.monotonic()) of the send running on this thread, if any


class _DeadlineReader(io.RawIOBase):
    """A response's socket stream that waits for each read no longer than the send's deadline leaves.

    Socket timeouts bound each read, not their sum: one byte every few seconds would keep an answer coming for
    ever."""

    def __init__(self, stream, sock, deadline: float):
        self.stream, self.sock, self.deadline = stream, sock, deadline
        self.read_timeout = sock.gettimeout()

    def readable(self):
        """Tell io that this stream reads."""
        return True

    def readinto(self, buffer):
        """Read what has come, waiting at most until the deadline."""
        remaining = self.deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError("the send's deadline passed")
            self.sock.settimeout(remaining if self.read_timeout is None else min(remaining, self.read_timeout))
            return self.stream.readinto(buffer)
        except TimeoutError:
            # The connection is done for: hang up now, not whenever the garbage collector frees the socket.
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            raise

    def fileno(self):
        """The socket's file descriptor."""
        return self.stream.fileno()

    def close(self):
        """Close the socket stream (the socket itself closes once nothing else holds it)."""
        if not self.closed:
            self.stream.close()
        super().close()


class _DeadlineResponse(http.client.HTTPResponse):
    """http.client's response, read against the deadline of the send on this thread."""

    def __init__(self, sock, *args, **kwargs):
        super().__init__(sock, *args, **kwargs)
        deadline = getattr(_exchange, "deadline", None)
        if deadline is not None:
            self.fp = io.BufferedReader(_DeadlineReader(self.fp.detach(), sock, deadline))


class _HTTPConnection(HTTPConnection):
    response_class = _DeadlineResponse


class _HTTPSConnection(HTTPSConnection):
    response_class = _DeadlineResponse


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_DEADLINE_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class _DeadlineAdapter(HTTPAdapter):
    """requests' adapter, over connections whose answers are read against the send's deadline."""

    def init_poolmanager(self, *args, **kwargs):
        """Make the pool manager, with the deadline's connection pools."""
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _DEADLINE_POOLS

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        """Make or find the manager for an HTTP(S) proxy, with the deadline's connection pools."""
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if type(manager) is ProxyManager:  # a SOCKS proxy's manager keeps its own pools
            manager.pool_classes_by_scheme = _DEADLINE_POOLS
        return manager


def _session(events_url: str, pool_size: int) -> requests.Session:
    """Make a session that sends exactly the client's headers over one pool of pool_size connections."""
    session = requests.Session()
    session.trust_env = False
    session.headers = CaseInsensitiveDict({"Content-Type": "application/json", "User-Agent": USER_AGENT})
    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))  # a load balancer's cookie is not echoed
    session.proxies = _environment_proxy(events_url)
    # No retries here: a retried POST could page twice, and the outbox already retries with backoff.
    adapter = _DeadlineAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class PagerDutyClient:
    """Sends events to the Events API over a pool of kept-alive connections, one per concurrent sender."""

    def __init__(self, events_url, connect_timeout=3.05, read_timeout=10.0, pool_size=10):
        self.events_url = events_url
        self.safe_url = safe_url(events_url)
        self.timeout = (connect_timeout, read_timeout)
        self.deadline_seconds = connect_timeout + read_timeout  # for the whole exchange, however the bytes come
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
        _exchange.deadline = deadline = time.monotonic() + self.deadline_seconds
        try:
            request = self.request.copy()
            request.prepare_body(encode(event), None)
            response = self.session.send(request, timeout=self.timeout, allow_redirects=False)
        except (requests.RequestException, HTTPError) as exc:
            unanswered = _unanswered(_cause(exc))
            if unanswered.error == "timeout" and time.monotonic() >= deadline:
                unanswered.message = f"no whole answer from PagerDuty within the send's {self.deadline_seconds:g} s"
            return unanswered
        finally:
            _exchange.deadline = None
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
