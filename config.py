"""Relay settings: one Config class, every value from the environment with a safe default."""
from datetime import timedelta

from relay.logs import LEVELS
from relay.startup.settings import Environment

# Every bad variable is noted here, named; create_app refuses to start with them all in one line.
environment = Environment()


def _source_auth(source):
    """Webhook credentials for one source: RELAY_<SOURCE>_TOKEN (or RELAY_WEBHOOK_TOKEN for all), basic, HMAC."""
    prefix = f"RELAY_{source.upper()}_"
    return {
        "bearer_token": environment.text(prefix + "TOKEN") or environment.text("RELAY_WEBHOOK_TOKEN"),
        "basic_user": environment.text(prefix + "BASIC_USER"),
        "basic_password": environment.text(prefix + "BASIC_PASSWORD"),
        "hmac_secret": environment.text(prefix + "HMAC_SECRET"),
        "hmac_header": environment.text(prefix + "HMAC_HEADER", "X-Grafana-Alerting-Signature"),
        "timestamp_header": environment.text(prefix + "TIMESTAMP_HEADER"),
        "max_skew_seconds": environment.seconds(prefix + "MAX_SKEW_SECONDS", 300),
    }


def webhook_auth():
    """Webhook credentials for every registered source."""
    from relay.intake.sources import SOURCES

    return {source: _source_auth(source) for source in SOURCES}


def alert_apis():
    """Where the reconciler asks each source what became of its alerts: RELAY_<SOURCE>_URL (empty: the URL the
    source sent as externalURL) and RELAY_<SOURCE>_API_TOKEN (bearer) or RELAY_<SOURCE>_API_USER/_API_PASSWORD."""
    apis = {}
    for source in ("alertmanager", "grafana"):
        prefix = f"RELAY_{source.upper()}_"
        apis[source] = {
            "url": environment.url(prefix + "URL"),
            "bearer_token": environment.text(prefix + "API_TOKEN"),
            "basic_user": environment.text(prefix + "API_USER"),
            "basic_password": environment.text(prefix + "API_PASSWORD"),
        }
    return apis


class Config:
    """Settings read once at start-up; tests subclass or override them."""

    # Store: a SQLite file under instance/ unless DATABASE_URL names another database.
    SQLALCHEMY_DATABASE_URI = environment.database_url("DATABASE_URL")
    # Bring the store's schema up to date at start-up; 0 leaves it to `flask --app wsgi db upgrade`, and the relay
    # then refuses to start on a schema that is behind.
    RELAY_AUTO_MIGRATE = environment.flag("RELAY_AUTO_MIGRATE", True)
    # hide_parameters: a database error's text would otherwise quote the row it failed on, routing key included.
    SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True, "hide_parameters": True}

    # PagerDuty Events API v2. EU accounts: https://events.eu.pagerduty.com/v2/enqueue
    PAGERDUTY_EVENTS_URL = environment.text("PAGERDUTY_EVENTS_URL", "https://events.pagerduty.com/v2/enqueue")
    # Where change events go; empty: /v2/change/enqueue on PAGERDUTY_EVENTS_URL's host.
    PAGERDUTY_CHANGE_EVENTS_URL = environment.text("PAGERDUTY_CHANGE_EVENTS_URL", "")
    # A REST API key; the Events API does not use it. Kept for the seed job's settings and
    # for future REST calls (e.g. looking up services); never sent with events, never logged.
    PAGERDUTY_API_KEY = environment.text("PAGERDUTY_API_KEY", "")
    PAGERDUTY_CONNECT_TIMEOUT = environment.seconds("PAGERDUTY_CONNECT_TIMEOUT", 3.05)
    PAGERDUTY_READ_TIMEOUT = environment.seconds("PAGERDUTY_READ_TIMEOUT", 10)

    # Delivery: gunicorn's master runs one delivery process (RELAY_DELIVERY=0 leaves it to `flask relay worker`).
    RELAY_DELIVERY = environment.flag("RELAY_DELIVERY", True)
    RELAY_DELIVERY_CONCURRENCY = environment.whole("RELAY_DELIVERY_CONCURRENCY", 64)  # in flight per process
    RELAY_DELIVERY_POLL_SECONDS = environment.seconds("RELAY_DELIVERY_POLL_SECONDS", 1.0)  # fallback when not woken
    # `relay worker` lowers its CPU priority by this much (0-19): when the CPU is short, webhooks answer first and
    # events wait, stored, in the outbox.
    RELAY_DELIVERY_NICE = environment.whole("RELAY_DELIVERY_NICE", 10)
    # `relay worker` touches this file every second while its loop runs, and /readyz in processes that do not
    # deliver reads its age. gunicorn.conf.py sets it for the delivery process it starts; empty: no file.
    RELAY_DELIVERY_HEARTBEAT_FILE = environment.text("RELAY_DELIVERY_HEARTBEAT_FILE", "")
    # A dead worker's claimed rows wait this long before another worker takes them.
    RELAY_CLAIM_LEASE_SECONDS = environment.seconds("RELAY_CLAIM_LEASE_SECONDS", 60)
    RELAY_RETRY_BASE_SECONDS = environment.seconds("RELAY_RETRY_BASE_SECONDS", 1.0)
    RELAY_RETRY_MAX_SECONDS = environment.seconds("RELAY_RETRY_MAX_SECONDS", 300)
    RELAY_GIVE_UP_AFTER_SECONDS = environment.seconds("RELAY_GIVE_UP_AFTER_SECONDS", 24 * 3600)
    # While an Events API URL fails with 5xx, timeouts or refused connections, one event at a time probes it, spaced
    # up to this; when one gets through, every waiting event is due at once. RELAY_OUTAGE_PROBING=0: each row
    # retries on its own.
    RELAY_OUTAGE_PROBING = environment.flag("RELAY_OUTAGE_PROBING", True)
    RELAY_OUTAGE_PROBE_MAX_SECONDS = environment.seconds("RELAY_OUTAGE_PROBE_MAX_SECONDS", 30)
    # PagerDuty allows about 120 events per minute per integration key (05-Rate-Limits.md); 0 turns it off.
    RELAY_RATE_LIMIT_PER_MINUTE = environment.whole("RELAY_RATE_LIMIT_PER_MINUTE", 120)
    # Delivered rows older than this are deleted by the delivery worker (hourly); empty keeps them forever.
    RELAY_PRUNE_DELIVERED_AFTER = environment.duration("RELAY_PRUNE_DELIVERED_AFTER", timedelta(days=30))
    # The reconciler (docs/reconciler.md): this often, the delivery process asks Alertmanager and Grafana what
    # became of each alert the relay triggered and has not resolved; 0 turns it off. One check resolves (or
    # acknowledges) at most RELAY_RECONCILE_MAX_RESOLVES alerts, so a wrong URL cannot close every incident.
    RELAY_RECONCILE_INTERVAL_SECONDS = environment.seconds("RELAY_RECONCILE_INTERVAL_SECONDS", 60)
    RELAY_RECONCILE_MAX_RESOLVES = environment.whole("RELAY_RECONCILE_MAX_RESOLVES", 100)
    RELAY_RECONCILE_TIMEOUT_SECONDS = environment.seconds("RELAY_RECONCILE_TIMEOUT_SECONDS", 10)
    RELAY_ALERT_APIS = alert_apis()
    # How long POST /api/v1/incidents and the CLI wait for PagerDuty before answering "queued".
    RELAY_SYNC_WAIT_SECONDS = environment.seconds("RELAY_SYNC_WAIT_SECONDS", 10)

    # Inbound authentication. A source with no credential accepts webhooks from loopback only, unless
    # RELAY_ALLOW_UNAUTHENTICATED_WEBHOOKS=1; without RELAY_API_TOKEN the API and page answer loopback only.
    WEBHOOK_AUTH = webhook_auth()
    # Jobs' heartbeat check-ins (POST /heartbeats/<name>) take credentials as a source does: RELAY_HEARTBEATS_TOKEN…
    HEARTBEATS_AUTH = _source_auth("heartbeats")
    RELAY_ALLOW_UNAUTHENTICATED_WEBHOOKS = environment.flag("RELAY_ALLOW_UNAUTHENTICATED_WEBHOOKS")
    RELAY_API_TOKEN = environment.text("RELAY_API_TOKEN", "")
    # How many proxies in front of the relay set X-Forwarded-For and X-Forwarded-Proto; 0 (default) trusts none,
    # since a client that reaches the relay directly could send them itself.
    RELAY_TRUSTED_PROXY_COUNT = environment.whole("RELAY_TRUSTED_PROXY_COUNT", 0)

    # What the relay puts in payload.source when the caller gives none.
    RELAY_EVENT_SOURCE = environment.text("RELAY_EVENT_SOURCE", "relay")
    # Largest request body accepted, in bytes (413 above it), and deepest JSON nesting (400 beyond it).
    MAX_CONTENT_LENGTH = environment.whole("RELAY_MAX_BODY_BYTES", 4 * 1024 * 1024)
    RELAY_MAX_JSON_DEPTH = environment.whole("RELAY_MAX_JSON_DEPTH", 64)
    # Most alerts one request may carry, and labels (and annotations) one alert may carry; 413 beyond; 0: no limit.
    # Alertmanager's max_alerts (webhook_config) is unlimited by default, but real groups are far smaller.
    RELAY_MAX_ALERTS_PER_REQUEST = environment.whole("RELAY_MAX_ALERTS_PER_REQUEST", 1000)
    RELAY_MAX_LABELS_PER_ALERT = environment.whole("RELAY_MAX_LABELS_PER_ALERT", 1000)
    LOG_LEVEL = environment.choice("RELAY_LOG_LEVEL", "INFO", LEVELS)

    # GET /readyz answers 503 when the outbox holds this many open rows, or its oldest is this old; 0: no check.
    RELAY_READY_MAX_BACKLOG = environment.whole("RELAY_READY_MAX_BACKLOG", 10000)
    RELAY_READY_MAX_PENDING_AGE_SECONDS = environment.seconds("RELAY_READY_MAX_PENDING_AGE_SECONDS", 900)

    # Routes, tried in order: the first whose matchers all hold takes the alert ("continue": True goes on
    # to the next). Each route: name, matchers (Alertmanager syntax), one of routing_key /
    # routing_key_env / routing_key_template, severity_label, severity_map, builtin_severities, default_severity,
    # no_data_severity, dedup ("alert", "group" or a template), templates, custom_details, continue, heartbeat
    # ({"within": "5m"}: its alerts are heartbeats, docs/heartbeats.md). See
    # docs/routing.md.
    ROUTES = [
        # {
        #     "name": "database",
        #     "matchers": ['team="db"', 'env=~"prod|staging"'],
        #     "routing_key_env": "PD_DATABASE_KEY",
        #     "severity_map": {"page": "critical", "ticket": "warning"},
        # },
    ]
    # Alerts no route takes; with PAGERDUTY_ROUTING_KEY unset they are logged as "unrouted", not sent.
    DEFAULT_ROUTE = (
        {"name": "default", "routing_key_env": "PAGERDUTY_ROUTING_KEY"}
        if environment.text("PAGERDUTY_ROUTING_KEY") else None
    )
    # Jobs that must check in (POST /heartbeats/<name>), each: name, every ("1h") or cron (with tz), grace,
    # routing_key or routing_key_env, severity, summary. See docs/heartbeats.md.
    HEARTBEATS = []
    # How often heartbeats are judged (in one delivery process at a time), and how long a route's heartbeat that
    # stopped arriving is watched before it is forgotten (empty or 0: never).
    RELAY_HEARTBEAT_CHECK_SECONDS = environment.seconds("RELAY_HEARTBEAT_CHECK_SECONDS", 15)
    RELAY_HEARTBEAT_FORGET_AFTER = environment.duration("RELAY_HEARTBEAT_FORGET_AFTER", timedelta(days=7))
    # Where the generic webhook finds each field: dotted paths, or lists of them tried in order.
    GENERIC_WEBHOOK = {}
    # The drop-in PagerDuty endpoint (/v2/enqueue): the routing keys senders may name, comma-separated; empty: any.
    # With a list, the key in the body is the credential: events are taken from anywhere, keys outside it refused.
    PAGERDUTY_WEBHOOK = {"routing_keys": environment.words("RELAY_PAGERDUTY_ROUTING_KEYS")}
