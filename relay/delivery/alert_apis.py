"""Asking a source what became of its alerts: Alertmanager's API v2 (`GET /api/v2/alerts`, `GET /api/v2/silence/{id}`)
and Grafana's Alertmanager-compatible copy of it (`/api/alertmanager/grafana/api/v2/...`, a service-account token).

Shapes as Alertmanager 0.25 answers them (api/v2/openapi.yaml; tests/fixtures/alertmanager_0.25_api_*_captured.json):
each alert has `fingerprint`, `labels` and `status {state: active|suppressed|unprocessed, silencedBy: [silence ids],
inhibitedBy: [fingerprints]}`. Resolved alerts are left out of the list (api/v2/api.go alertFilter drops an alert
whose endsAt has passed), so an alert missing from it is over, or forgotten by a restarted Alertmanager.
"""
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import requests

from relay.masking import redact
from relay.pagerduty.client import safe_url

API_PATHS = {"alertmanager": "/api/v2", "grafana": "/api/alertmanager/grafana/api/v2"}
SUPPRESSED = "suppressed"  # Alertmanager's state of a silenced or inhibited alert


class SourceUnavailable(Exception):
    """The source's alerts could not be read (unreachable, an error answer, not its JSON): nothing may be concluded
    from them, and nothing is resolved. The message names the URL without credentials."""


@dataclass(frozen=True)
class Endpoint:
    """Where one source's alerts API answers, and the credentials it wants."""

    source: str  # "alertmanager" or "grafana"
    url: str  # the source's root URL, as its externalURL or RELAY_<SOURCE>_URL gives it
    bearer_token: str = ""
    basic_user: str = ""
    basic_password: str = ""

    @property
    def api(self) -> str:
        """The root of the source's Alertmanager API v2, without the URL's user and password (sent as basic auth
        when no other credential is set)."""
        parts = urlsplit(self.url)
        netloc = parts.netloc.rpartition("@")[2]
        return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + API_PATHS[self.source], "", ""))

    @property
    def shown(self) -> str:
        """The URL as logs and printouts may show it: no credentials, query or fragment."""
        return safe_url(self.api)

    @property
    def secrets(self) -> tuple[str, ...]:
        """What must never be shown."""
        parts = urlsplit(self.url)
        return tuple(s for s in (self.bearer_token, self.basic_password, parts.password) if s)


@dataclass(frozen=True)
class SourceAlert:
    """One alert as its source holds it now."""

    fingerprint: str
    labels: dict
    state: str  # active, suppressed or unprocessed
    silenced_by: tuple[str, ...] = ()
    inhibited_by: tuple[str, ...] = ()

    @property
    def muted(self) -> bool:
        """Tell whether the source still fires the alert but silences or inhibits it."""
        return self.state == SUPPRESSED and bool(self.silenced_by or self.inhibited_by)


@dataclass
class AlertsAPI:
    """A session on one endpoint; each call has a timeout."""

    endpoint: Endpoint
    timeout: float = 10.0
    session: requests.Session = field(default_factory=requests.Session)

    def __post_init__(self):
        self.session.trust_env = False  # no ~/.netrc; the environment's proxy, below, unless the host bypasses it
        parts = urlsplit(self.endpoint.url)
        proxy = urllib.request.getproxies().get(parts.scheme)
        if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
            self.session.proxies = {parts.scheme: proxy}
        if self.endpoint.bearer_token:
            self.session.headers["Authorization"] = f"Bearer {self.endpoint.bearer_token}"
        elif self.endpoint.basic_user:
            self.session.auth = (self.endpoint.basic_user, self.endpoint.basic_password)
        elif parts.username:
            self.session.auth = (unquote(parts.username), unquote(parts.password or ""))

    def alerts(self) -> list[SourceAlert]:
        """Every alert the source holds (active, silenced, inhibited, unprocessed); raise SourceUnavailable."""
        body = self._get("/alerts")
        try:
            return [SourceAlert(fingerprint=str(item.get("fingerprint") or ""), labels=dict(item.get("labels") or {}),
                                state=str(item["status"]["state"]),
                                silenced_by=tuple(item["status"].get("silencedBy") or ()),
                                inhibited_by=tuple(item["status"].get("inhibitedBy") or ())) for item in body]
        except (TypeError, KeyError, AttributeError, ValueError):
            raise SourceUnavailable(f"{self.endpoint.shown}/alerts did not answer a list of alerts") from None

    def silence(self, silence_id: str) -> dict:
        """The silence (createdBy, comment…), or {} when it cannot be read: a cause is still given by its id."""
        try:
            body = self._get("/silence/" + quote(silence_id, safe=""))
        except SourceUnavailable:
            return {}
        return body if isinstance(body, dict) else {}

    def _get(self, path: str):
        url = self.endpoint.api + path
        try:
            response = self.session.get(url, timeout=self.timeout, allow_redirects=False)
        except requests.RequestException as exc:
            raise SourceUnavailable(f"{self.endpoint.shown}{path}: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise SourceUnavailable(f"{self.endpoint.shown}{path} answered HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError:
            raise SourceUnavailable(f"{self.endpoint.shown}{path} answered no JSON") from None

    def close(self) -> None:
        """Close the pooled connections."""
        self.session.close()


def describe_problem(endpoint: Endpoint, exc: Exception) -> str:
    """A SourceUnavailable's message with the endpoint's secrets masked, should any have slipped in."""
    return redact(str(exc), *endpoint.secrets) or type(exc).__name__
