"""The log page for people: the incident log as a filtered, searchable table with counts per status, a detail view
per row, and a Retry button.

Server-rendered Jinja (autoescaped); a page's queries never grow with its rows. Routing keys are shown masked only,
and every page is scrubbed of the full keys of the rows it shows before it leaves, whatever a label or error might
carry.
Retry is a form POST, accepted only from the page's own origin (Origin, else Referer, host = request host).
"""
import json
import logging
import secrets
from datetime import datetime, timezone
from urllib.parse import urlencode, urlsplit

from flask import Blueprint, current_app, g, redirect, render_template, request, url_for
from marshmallow import ValidationError
from sqlalchemy.orm import defer
from werkzeug.exceptions import HTTPException

from relay import incidents
from relay.delivery import heartbeats, storm
from relay.errors import RelayError, retry_after_headers, store_unavailable
from relay.intake.alert import is_http_url
from relay.masking import redact
from relay.pagerduty.client import safe_url
from relay.store import endpoints, logquery, states
from relay.store.entry import log_entries
from relay.store.models import IncidentLog, db
from relay.web import auth

log = logging.getLogger(__name__)

bp = Blueprint("ui", __name__)

RETRYABLE = states.REPLAYABLE
# Why a row has no inbound alert, by its source: the relay makes some events itself.
NO_ALERT = {storm.SOURCE: "None: the relay made this event itself, the summary incident of the route's storm valve.",
            heartbeats.SOURCE: "None: the relay made this event itself, for a heartbeat that went silent, reported a "
                               "failure or came back."}
API_OR_CLI = "None: the event came in through the API or the CLI."
LOG_ID = "int(min=1, max=9223372036854775807)"  # ids are 64-bit: larger numbers are not found, never a 500


class CrossOrigin(RelayError):
    """A state-changing form POST that did not come from this page's origin (CSRF)."""

    status_code = 403
    code = "forbidden"


@bp.before_request
def _take_token():
    """Turn a one-time ?token= into the page cookie and drop it from the address bar."""
    if request.method not in ("GET", "HEAD") or auth.UI_TOKEN_ARG not in request.args:
        return None
    kept = [(k, v) for k, v in request.args.items(multi=True) if k != auth.UI_TOKEN_ARG]
    response = redirect(request.script_root + request.path + ("?" + urlencode(kept) if kept else ""), 303)
    token = current_app.config["RELAY_API_TOKEN"]
    # The guard has checked it already; checked again so a valid bearer header can't mint a cookie for a bad one.
    if token and auth.same(request.args[auth.UI_TOKEN_ARG], token):
        response.set_cookie(auth.UI_COOKIE, auth.ui_cookie_value(token), httponly=True, samesite="Strict",
                            secure=request.is_secure, path="/")
    return response


@bp.after_request
def _secure_headers(response):
    """Only our own CSS and the one inline script (by nonce) run; no framing; pages are not cached."""
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; style-src 'self'; script-src 'nonce-{nonce()}'; connect-src 'self'; "
        "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response


def nonce() -> str:
    """The CSP nonce of this response."""
    if "csp_nonce" not in g:
        g.csp_nonce = secrets.token_urlsafe(16)
    return g.csp_nonce


def page(template: str, status: int = 200, routing_keys=(), **context):
    """Render a page and scrub it of the given full routing keys (defence in depth: only masks are meant in)."""
    keys = sorted(set(routing_keys), key=len, reverse=True)
    html = redact(render_template(template, nonce=nonce(), **context), *keys)
    return html, status, {"Content-Type": "text/html; charset=utf-8"}


@bp.get("/")
def index():
    """The incident log, newest first, with counts per status, filtered by the query string; bad filters and
    unknown parameters are shown, with a 400."""
    # The form sends its empty fields: they filter nothing. A name the filters do not know is refused, even empty.
    given = {k: v.strip() for k, v in request.args.items() if v.strip() or k not in logquery.log_filter.fields}
    try:
        query = logquery.log_filter.load(given)
    except ValidationError as exc:
        return page("log.html", 400, given=given, errors=exc.messages, entries=[], statuses=logquery.STATUSES)
    # The table never shows the JSON columns; raiseload turns any slip into an error rather than N+1 queries.
    rows, next_before_id = logquery.find(db.session, query, defer(IncidentLog.event, raiseload=True),
                                         defer(IncidentLog.alert, raiseload=True))
    kept = {k: v for k, v in given.items() if k != "before_id"}
    unfiltered = {k: v for k, v in kept.items() if k != "status"}
    return page("log.html", given=given, errors=None, entries=log_entries(db.session, rows),
                statuses=logquery.STATUSES, retryable=RETRYABLE,
                counts=logquery.status_counts(db.session, query),
                by_status={status: url_for(".index", **unfiltered, status=status) for status in logquery.STATUSES},
                any_status=url_for(".index", **unfiltered),
                older=url_for(".index", **kept, before_id=next_before_id) if next_before_id else None,
                newest=url_for(".index", **kept) if "before_id" in given else None,
                routing_keys=[row.routing_key for row in rows],
                unreachable=unreachable_endpoints(),
                heartbeats=heartbeats.overview(db.session.connection()) if heartbeats.declared(current_app.config)
                else [])


def unreachable_endpoints() -> list[dict]:
    """The PagerDuty endpoints that are down now, for the page's banner: URL, since when, events waiting."""
    return [{"url": safe_url(endpoint.events_url), "since": endpoint.down_since.isoformat(),
             "waiting": endpoint.waiting}
            for endpoint in endpoints.overview(db.session, current_app.config["PAGERDUTY_EVENTS_URL"], down_only=True)]


@bp.get(f"/log/<{LOG_ID}:log_id>")
def detail(log_id):
    """One row: what came in, what was sent, PagerDuty's answer and every attempt."""
    row = db.session.get(IncidentLog, log_id)
    if row is None:
        return page("error.html", 404, title="Not found", message=f"no incident_log row with id {log_id}")
    entry = log_entries(db.session, [row], with_attempts=True)[0]
    return page("detail.html", e=entry, retryable=RETRYABLE, routing_keys=[row.routing_key], links=links(entry),
                event_json=pretty(entry["event"]), alert_json=pretty(entry["alert"]) if entry["alert"] else None,
                no_alert=NO_ALERT.get(row.source, API_OR_CLI))


def links(entry: dict) -> list[dict]:
    """The links of the event and of its inbound alert (a resolve's are on the alert), each href once, marked
    whether it may be a link: only http and https URLs are, anything else (javascript:, data:) stays text."""
    found, seen = [], set()
    for link in [*(entry["event"].get("links") or []), *((entry["alert"] or {}).get("links") or [])]:
        href = link.get("href") if isinstance(link, dict) else None
        if isinstance(href, str) and href not in seen:
            seen.add(href)
            found.append({"href": href, "text": link.get("text") or href, "http": is_http_url(href)})
    return found


@bp.post(f"/log/<{LOG_ID}:log_id>/retry")
def retry(log_id):
    """Requeue a failed or dead row (as POST /api/v1/log/<id>/retry does), then go back to where it was."""
    if not same_origin():
        raise CrossOrigin("cross-origin form posts are refused; retry from the relay's own page")
    incidents.requeue_one(log_id)
    return redirect(local_path(request.form.get("next")) or url_for(".detail", log_id=log_id), 303)


def same_origin() -> bool:
    """Tell whether a POST comes from a page of this host: its Origin, or without one its Referer."""
    source = request.headers.get("Origin") or request.headers.get("Referer") or ""
    host = urlsplit(source).netloc if source != "null" else ""
    return bool(host) and host.lower() == request.host.lower()


def local_path(target: str | None) -> str | None:
    """Return target if it is a path on this site (never another host: no open redirect), else None."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return None
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else None


def pretty(value) -> str:
    """Indented JSON for people."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


@bp.app_template_filter("utc")
def utc(iso: str | None) -> str:
    """Show an ISO time as 'YYYY-MM-DD HH:MM:SS' in UTC, whatever zone the store handed it back in."""
    if not iso:
        return "—"
    return datetime.fromisoformat(iso).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


@bp.errorhandler(RelayError)
def _relay_error(exc):
    html, status, headers = page("error.html", exc.status_code, title=exc.code.replace("_", " ").capitalize(),
                                 message=exc.message)
    return html, status, {**headers, **retry_after_headers(exc)}


@bp.errorhandler(HTTPException)
def _http_error(exc):
    return page("error.html", exc.code, title=exc.name, message=exc.description)


@bp.errorhandler(Exception)
def _unexpected_error(exc):
    unavailable = store_unavailable(exc)
    if unavailable is not None:
        return _relay_error(unavailable)
    log.exception("unhandled error on the log page")
    return page("error.html", 500, title="Internal error", message="internal error; see the relay's log")
