"""Who may call the relay: per-source webhook credentials (bearer, basic, Grafana's HMAC signature), the
API token, and the loopback-only default when nothing is configured. Every comparison is constant-time."""
import functools
import hashlib
import hmac
import ipaddress
import time
from dataclasses import dataclass, fields
from datetime import datetime, timezone

from flask import current_app, request
from werkzeug.middleware.proxy_fix import ProxyFix

from relay.errors import RelayError
from relay.intake.routing import ConfigError
from relay.intake.sources import SOURCES, pagerduty
from relay.startup.process import warn
from relay.store import signatures
from relay.store.models import db

MAX_TIMESTAMP_DIGITS = 12  # unix seconds until the year 33658; longer is no timestamp a sender means
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class Unauthorized(RelayError):
    """Missing or wrong credentials; deliberately silent about which part was wrong."""

    status_code = 401
    code = "unauthorized"


class Replayed(RelayError):
    """A signed request whose signature was accepted before: a captured request sent again."""

    status_code = 409
    code = "replayed"


class CrossOrigin(RelayError):
    """A browser sent this request from another site's page (CSRF)."""

    status_code = 403
    code = "forbidden"


class LoopbackOnly(RelayError):
    """No credential is configured, so only local callers are served."""

    status_code = 403
    code = "forbidden"


@dataclass(frozen=True)
class SourceAuth:
    """The credentials one webhook source accepts; any one configured method that holds lets a request in."""

    bearer_token: str = ""
    basic_user: str = ""
    basic_password: str = ""
    hmac_secret: str = ""
    hmac_header: str = "X-Grafana-Alerting-Signature"
    timestamp_header: str = ""  # when set, Grafana signs "<unix seconds>:<body>" (grafana/alerting http/hmac.go)
    max_skew_seconds: float = 300.0

    @property
    def configured(self) -> bool:
        """Tell whether any credential is set."""
        return bool(self.bearer_token or self.basic_user or self.hmac_secret)


def same(given: str, expected: str) -> bool:
    """Compare secrets in constant time."""
    return hmac.compare_digest(given.encode(), expected.encode())


def bearer_ok(auth: SourceAuth) -> bool:
    """Check an `Authorization: Bearer …` header, as Alertmanager's http_config.authorization sends it."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return bool(auth.bearer_token) and scheme.lower() == "bearer" and same(token.strip(), auth.bearer_token)


def basic_ok(auth: SourceAuth) -> bool:
    """Check HTTP basic auth."""
    given = request.authorization
    if not auth.basic_user or given is None or given.type != "basic":
        return False
    user_ok = same(given.username or "", auth.basic_user)
    password_ok = same(given.password or "", auth.basic_password)  # both compared, always
    return user_ok and password_ok and bool(auth.basic_password)


def hmac_ok(auth: SourceAuth, now: float, source_name: str = "") -> bool:
    """Check Grafana's hex HMAC-SHA256 signature of the body (and timestamp, within the allowed skew, seen once:
    raise Replayed for a signature accepted before)."""
    signature = request.headers.get(auth.hmac_header, "").strip().lower()
    if not auth.hmac_secret or not signature:
        return False
    signed = request.get_data(cache=True)
    stamp = ""
    if auth.timestamp_header:
        stamp = request.headers.get(auth.timestamp_header, "").strip()
        if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= MAX_TIMESTAMP_DIGITS) \
                or abs(now - int(stamp)) > auth.max_skew_seconds:
            return False  # a captured request replayed later is refused
        signed = stamp.encode() + b":" + signed
    expected = hmac.new(auth.hmac_secret.encode(), signed, hashlib.sha256).hexdigest()
    if not same(signature, expected):
        return False
    if stamp:
        _refuse_replay(auth, source_name, signature, int(stamp), now)
    return True


def _refuse_replay(auth: SourceAuth, source_name: str, signature: str, stamp: int, now: float) -> None:
    """Raise Replayed when the signature was accepted before; keep it until its timestamp is too old to pass."""
    # Only valid signatures reach the store: nobody without the secret can fill it.
    expires_at = datetime.fromtimestamp(stamp + auth.max_skew_seconds, timezone.utc)
    if not signatures.first_sighting(db.engine, source_name, signature, expires_at,
                                     datetime.fromtimestamp(now, timezone.utc)):
        raise Replayed("this signed request was accepted before: each signature is accepted once, within "
                       f"{auth.max_skew_seconds:g} s of its timestamp; a sender signs every request anew")


@functools.lru_cache(maxsize=256)
def is_loopback(address: str | None) -> bool:
    """Tell whether the peer address is this machine (remembered per address: parsing one costs more than the
    rest of the check)."""
    try:
        return ipaddress.ip_address((address or "").split("%")[0]).is_loopback
    except ValueError:
        return False


def loopback_host(host: str) -> bool:
    """Tell whether a Host header names this machine: a DNS name rebound to 127.0.0.1 does not."""
    name = host[1:host.find("]")] if host.startswith("[") else host.rpartition(":")[0] or host
    name = name.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost") or is_loopback(name)


def _require_loopback(why: str) -> None:
    """Let in a request from this machine that names this machine; else raise LoopbackOnly saying why."""
    if not is_loopback(request.remote_addr):
        raise LoopbackOnly(why)
    if not loopback_host(request.host):
        raise LoopbackOnly(f"{why}, by a loopback name in Host (localhost, 127.0.0.1 or [::1]): a page in a browser "
                           "must not reach it through a DNS name that points here")


def same_origin() -> bool:
    """Tell whether a request's Origin, when a browser sent one, is the relay itself."""
    origin = request.headers.get("Origin")
    return origin is None or origin == request.host_url.rstrip("/")


def check_webhook(source_name: str) -> None:
    """Let a webhook in, or raise Unauthorized / LoopbackOnly."""
    auth = current_app.extensions["relay.webhook_auth"].get(source_name, SourceAuth())
    if not auth.configured:
        if current_app.config["RELAY_ALLOW_UNAUTHENTICATED_WEBHOOKS"] or keys_listed(source_name):
            return
        _require_loopback("no credential is configured for this source, so it accepts webhooks from loopback "
                          "only; see the README's Security section")
        return
    if not (bearer_ok(auth) or basic_ok(auth) or hmac_ok(auth, time.time(), source_name)):
        raise Unauthorized("missing or invalid credentials")


def keys_listed(source_name: str) -> bool:
    """Tell whether the source admits events by the routing key in their body (the pagerduty source's allow-list,
    checked as each event is read): PagerDuty's clients send no credential of their own."""
    settings = current_app.extensions["relay.source_settings"].get(source_name)
    return source_name == pagerduty.NAME and bool(pagerduty.allow_list(settings))


def check_api(browser: bool = False) -> None:
    """Let an API or page request in: the API token (the page: or its cookie), or loopback when none is set."""
    token = current_app.config["RELAY_API_TOKEN"]
    if not token:
        _require_loopback("RELAY_API_TOKEN is not set, so the API answers loopback only")
        return
    if not (bearer_ok(SourceAuth(bearer_token=token)) or (browser and browser_ok(token))):
        raise Unauthorized("missing or invalid credentials")


# The log page (relay/ui.py): browsers cannot send a bearer header, so the token is given once as ?token=…
# and kept in an HttpOnly, SameSite=Strict cookie that holds a digest of it, never the token itself.
UI_COOKIE = "relay_ui"
UI_TOKEN_ARG = "token"


def ui_cookie_value(token: str) -> str:
    """Derive the page cookie from the API token: it opens the page, yet is no bearer token for the API."""
    return hmac.new(token.encode(), b"relay log page cookie", hashlib.sha256).hexdigest()


def browser_ok(token: str) -> bool:
    """Check a page request's one-time ?token= (GET only; when given, it alone counts) or its cookie."""
    if request.method in ("GET", "HEAD") and UI_TOKEN_ARG in request.args:
        return same(request.args[UI_TOKEN_ARG], token)
    return same(request.cookies.get(UI_COOKIE, ""), ui_cookie_value(token))


def _guard():
    """Route each request to its check by blueprint; health and metrics stay open."""
    # The page checks its own posts, more strictly: it also refuses one with neither Origin nor Referer.
    if request.method not in SAFE_METHODS and request.blueprint != "ui" and not same_origin():
        raise CrossOrigin("a request from another site's page is refused; call the relay directly")
    if request.blueprint == "webhooks":
        check_webhook((request.view_args or {}).get("source_name", ""))
    elif request.blueprint == "dropin":
        check_webhook(pagerduty.NAME)
    elif request.blueprint == "heartbeats":
        check_webhook("heartbeats")
    elif request.blueprint in ("api", "ui"):
        check_api(browser=request.blueprint == "ui")


def load(config) -> dict[str, SourceAuth]:
    """Read WEBHOOK_AUTH (and HEARTBEATS_AUTH, for jobs' check-ins) from config into checked SourceAuth values."""
    given = {**(config.get("WEBHOOK_AUTH") or {}), "heartbeats": config.get("HEARTBEATS_AUTH") or {}}
    return {source: _checked(source, settings) for source, settings in given.items()}


def _checked(source: str, settings: dict) -> SourceAuth:
    """One source's credentials, or ConfigError naming the source and the problem."""
    where = "HEARTBEATS_AUTH" if source == "heartbeats" else f"WEBHOOK_AUTH[{source!r}]"
    unknown = set(settings) - {f.name for f in fields(SourceAuth)}
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}")
    auth = SourceAuth(**settings)
    if auth.basic_user and not auth.basic_password:
        raise ConfigError(f"{where}: basic_user is set without basic_password; set both "
                          "(RELAY_<SOURCE>_BASIC_USER and RELAY_<SOURCE>_BASIC_PASSWORD)")
    return auth


def trust_proxies(app) -> None:
    """Behind RELAY_TRUSTED_PROXY_COUNT proxies, take the client's address and scheme from the headers they set
    (werkzeug's ProxyFix): the loopback rule then sees the real client, and a page served over TLS its scheme
    (the page cookie gets Secure, a browser's https Origin is the relay's own)."""
    count = app.config["RELAY_TRUSTED_PROXY_COUNT"]
    if not isinstance(count, int) or count < 0:
        raise ConfigError(f"RELAY_TRUSTED_PROXY_COUNT must be a whole number of proxies, 0 or more, not {count!r}")
    if count:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=count, x_proto=count, x_host=0, x_port=0, x_prefix=0)


def init_app(app):
    """Install the guard, and keep for start-up's warnings what is open to whom."""
    app.extensions["relay.webhook_auth"] = load(app.config)
    trust_proxies(app)
    app.before_request(_guard)
    for source in SOURCES:
        if source == pagerduty.NAME and pagerduty.allow_list(app.extensions["relay.source_settings"].get(source)):
            continue  # the allow-list admits events by their routing key
        if not app.extensions["relay.webhook_auth"].get(source, SourceAuth()).configured:
            scope = "from anywhere (RELAY_ALLOW_UNAUTHENTICATED_WEBHOOKS=1)" \
                if app.config["RELAY_ALLOW_UNAUTHENTICATED_WEBHOOKS"] else "from loopback only"
            warn(app, f"webhooks for {source} have no credential configured: accepted {scope}")
    check_ins = app.extensions["relay.webhook_auth"].get("heartbeats", SourceAuth())
    if app.config.get("HEARTBEATS") and not check_ins.configured:
        warn(app, "heartbeat check-ins have no credential configured (RELAY_HEARTBEATS_TOKEN): accepted from "
                  + ("anywhere" if app.config["RELAY_ALLOW_UNAUTHENTICATED_WEBHOOKS"] else "loopback only"))
    if not app.config["RELAY_API_TOKEN"]:
        warn(app, "RELAY_API_TOKEN is not set: the API and the log page answer loopback only")
