"""The log page at / (relay/ui.py): table, filters, pagination, detail, Retry, CSRF, token cookie, no full keys."""
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from relay.intake.routing import ConfigError
from relay.store.models import IncidentLog, db
from relay.store.states import STATUSES
from relay.web.auth import UI_COOKIE
from tests.helpers import wait_until

FIXTURES = Path(__file__).parent / "fixtures"
KEY = "0123456789abcdef0123456789abcdef"
LABEL_KEY = "fedcba9876543210fedcba9876543210"  # a key that travels in the alert's own labels
SAME_ORIGIN = {"Origin": "http://localhost"}  # the test client's host
REMOTE = {"REMOTE_ADDR": "203.0.113.9"}


def row_ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr id="row-(\d+)"', html)]


def page(client, path="/", status=200, **kwargs):
    response = client.get(path, **kwargs)
    assert response.status_code == status, response.get_data(as_text=True)[:2000]
    assert response.mimetype == "text/html"
    return response.get_data(as_text=True)


def set_status(app, log_id, status, **values):
    """Move a row by hand (the apps without a worker never deliver)."""
    with app.app_context():
        db.session.execute(sa.update(IncidentLog).where(IncidentLog.id == log_id).values(status=status, **values))
        db.session.commit()


@pytest.fixture
def filled(make_app):
    """No worker; the log holds 2 routed Alertmanager rows, 1 unrouted generic row, 1 row keyed by a label."""
    app = make_app(DEFAULT_ROUTE=None, ROUTES=[
        {"name": "by-label", "matchers": ['pd_key=~".+"'], "routing_key_template": "{{ labels.pd_key }}"},
        {"name": "infra", "matchers": ['alertname=~".+"'], "routing_key": KEY},
    ])
    client = app.test_client()
    assert client.post("/webhooks/alertmanager", data=(FIXTURES / "alertmanager_firing_v4.json").read_bytes(),
                       content_type="application/json").status_code == 202
    assert client.post("/webhooks/generic", json={"summary": "no route for me", "labels": {"team": "x"}}) \
        .status_code == 202
    assert client.post("/webhooks/generic", json={
        "summary": f"<script>alert(1)</script> key {LABEL_KEY}", "labels": {"pd_key": LABEL_KEY}}).status_code == 202
    with app.app_context():
        ids = {row.source + ":" + (row.route or "-"): row.id for row in db.session.scalars(sa.select(IncidentLog))}
    return app, client, ids


def test_page_lists_rows_newest_first_with_masked_keys(filled):
    _, client, _ = filled
    html = page(client)
    assert len(row_ids(html)) == 4 and row_ids(html) == sorted(row_ids(html), reverse=True)
    assert "High CPU Temperature" in html and "no route for me" in html
    assert "…cdef" in html and "…3210" in html
    assert 'class="badge badge-pending"' in html and 'class="badge badge-unrouted"' in html
    assert KEY not in html and LABEL_KEY not in html


def test_user_text_is_escaped(filled):
    html = page(filled[1])
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


@pytest.mark.parametrize("query, count", [
    ({"status": "unrouted"}, 1),
    ({"status": "pending"}, 3),
    ({"source": "alertmanager"}, 2),
    ({"route": "infra"}, 2),
    ({"route": "by-label"}, 1),
    ({"since": "1h"}, 4),
    ({"since": "2000-01-01T00:00:00Z", "until": "2000-01-02T00:00:00Z"}, 0),
    ({"status": "", "source": "", "route": " ", "dedup_key": "", "since": ""}, 4),  # the form's empty fields
])
def test_filters(filled, query, count):
    html = page(filled[1], query_string=query)
    assert len(row_ids(html)) == count
    if count == 0:
        assert "No rows match." in html


def test_filter_form_keeps_what_was_asked(filled):
    html = page(filled[1], query_string={"status": "unrouted", "source": "generic"})
    assert '<option value="unrouted" selected>' in html and 'name="source" value="generic"' in html


def test_dedup_key_filter(filled):
    app, client, ids = filled
    with app.app_context():
        key = db.session.get(IncidentLog, ids["generic:by-label"]).dedup_key
    assert row_ids(page(client, query_string={"dedup_key": key})) == [ids["generic:by-label"]]


@pytest.mark.parametrize("query, field, message", [
    ({"status": "exploded"}, "status", "Must be one of"),
    ({"since": "yesterday"}, "since", "since"),
    ({"limit": "0"}, "limit", "greater than or equal to 1"),
    ({"before_id": "x"}, "before_id", "Not a valid integer"),
])
def test_bad_filter_is_a_400_page_naming_the_field(filled, query, field, message):
    html = page(filled[1], status=400, query_string=query)
    assert "Bad filter" in html and f"<strong>{field}</strong>" in html and message in html
    assert row_ids(html) == []


def test_older_pages_walk_every_row_once(filled):
    _, client, _ = filled
    first = page(client, query_string={"limit": "3", "source": "generic"})
    assert len(row_ids(first)) == 2 and "Older" not in first  # only 2 generic rows: no next page
    first = page(client, query_string={"limit": "3"})
    older = re.search(r'<a href="([^"]+)" rel="next">Older', first).group(1).replace("&amp;", "&")
    assert "limit=3" in older and "before_id=" in older
    second = page(client, older)
    ids = row_ids(first) + row_ids(second)
    assert len(ids) == 4 == len(set(ids)) and ids == sorted(ids, reverse=True)
    assert "Older" not in second and "Newest" in second


def selects(app, path, client):
    """The SELECT statements one page view runs."""
    seen = []

    def count(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    with app.app_context():
        engine = db.engine
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        page(client, path)
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    return seen


def test_two_queries_per_list_page_and_two_per_detail(filled):
    app, client, ids = filled
    # 4 rows, the counts per status, and the endpoints down (for the banner): no N+1
    assert len(selects(app, "/", client)) == 3
    assert len(selects(app, f"/log/{ids['alertmanager:infra']}", client)) == 2  # the row, its attempts


def test_detail_of_a_webhook_row_shows_inbound_alert_and_event(filled):
    _, client, ids = filled
    html = page(client, f"/log/{ids['alertmanager:infra']}")
    assert "Inbound alert" in html and "High CPU Temperature" in html
    assert "&#34;routing_key&#34;: &#34;…cdef&#34;" in html  # the event, pretty JSON, key masked
    assert "No attempts yet." in html and KEY not in html


def test_detail_shows_attempts_and_pagerduty_errors(app, client, pd, routing_key):
    pd.inject(400)
    body = client.post("/api/v1/incidents", json={"title": "Refused", "service_key": routing_key}).get_json()
    html = page(client, f"/log/{body['log_id']}")
    assert 'class="badge badge-failed"' in html and "Injected fault" in html and "invalid event" in html
    attempts = re.search(r'<table class="attempts">.*?</table>', html, re.S).group(0)
    assert "failed" in attempts and ">400<" in attempts and re.search(r"\d+ ms", attempts)
    assert f'action="/log/{body["log_id"]}/retry"' in html  # failed: a Retry button
    assert routing_key not in html


def test_detail_of_unknown_row_is_a_404_page(filled):
    assert "no incident_log row with id 987654" in page(filled[1], "/log/987654", status=404)
    assert filled[1].get("/log/99999999999999999999").status_code == 404  # past 64 bits: no route, no 500
    assert filled[1].post("/log/99999999999999999999/retry", headers=SAME_ORIGIN).status_code == 404


def test_retry_requeues_and_shows_the_row_pending(filled):
    app, client, ids = filled
    log_id = ids["alertmanager:infra"]
    set_status(app, log_id, "failed", http_status=400, pd_errors=["Invalid routing key"])
    html = page(client)
    assert f'action="/log/{log_id}/retry"' in html and html.count('class="retry"') == 1  # only the failed row
    response = client.post(f"/log/{log_id}/retry", data={"next": "/?source=alertmanager"}, headers=SAME_ORIGIN)
    assert response.status_code == 303 and response.headers["Location"] == "/?source=alertmanager"
    listed = page(client, response.headers["Location"])
    assert re.search(rf'<tr id="row-{log_id}" data-status="pending"', listed)
    assert 'class="retry"' not in listed


def test_retry_button_flow_gets_the_row_delivered(app, client, pd, routing_key):
    pd.inject(400)
    log_id = client.post("/api/v1/incidents", json={"title": "Retry me", "service_key": routing_key}) \
        .get_json()["log_id"]
    assert 'data-status="failed"' in page(client)
    response = client.post(f"/log/{log_id}/retry", headers=SAME_ORIGIN)  # no next: back to the row
    assert response.status_code == 303 and response.headers["Location"] == f"/log/{log_id}"
    html = wait_until(lambda: "badge-delivered" in (text := page(client, f"/log/{log_id}")) and text, 10,
                      "the retried row shown delivered")
    assert "badge-delivered" in html and ">202<" in html
    assert [e["payload"]["summary"] for e in pd.accepted()] == ["Retry me"]


def test_retry_of_a_row_that_is_not_failed_is_a_409_page(filled):
    app, client, ids = filled
    response = client.post(f"/log/{ids['generic:-']}/retry", headers=SAME_ORIGIN)
    assert response.status_code == 409 and "only failed or dead rows" in response.get_data(as_text=True)
    assert client.post("/log/987654/retry", headers=SAME_ORIGIN).status_code == 404


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"},
    {"Origin": "http://localhost.evil.example"},
    {"Origin": "null"},
    {"Referer": "http://evil.example/log/1"},
    {"Origin": "http://evil.example", "Referer": "http://localhost/"},  # Origin, when sent, decides
    {},  # neither: refused, not assumed
])
def test_cross_origin_retry_is_refused(filled, headers):
    app, client, ids = filled
    log_id = ids["alertmanager:infra"]
    set_status(app, log_id, "dead")
    response = client.post(f"/log/{log_id}/retry", headers=headers)
    assert response.status_code == 403 and "cross-origin" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(IncidentLog, log_id).status == "dead"


def test_same_origin_referer_without_origin_is_accepted(filled):
    app, client, ids = filled
    set_status(app, ids["alertmanager:infra"], "dead")
    response = client.post(f"/log/{ids['alertmanager:infra']}/retry", headers={"Referer": "http://localhost/"})
    assert response.status_code == 303


@pytest.mark.parametrize("target", ["//evil.example/x", "http://evil.example/", "/\\evil.example", "log/1"])
def test_retry_never_redirects_off_site(filled, target):
    app, client, ids = filled
    log_id = ids["alertmanager:infra"]
    set_status(app, log_id, "failed")
    response = client.post(f"/log/{log_id}/retry", data={"next": target}, headers=SAME_ORIGIN)
    assert response.status_code == 303 and response.headers["Location"] == f"/log/{log_id}"


def test_no_full_routing_key_on_any_page(filled):
    app, client, ids = filled
    for name, key in (("alertmanager:infra", KEY), ("generic:by-label", LABEL_KEY)):  # errors quoting the key
        set_status(app, ids[name], "failed", error=f"boom for {key}", pd_errors=[f"bad key {key}"])
    paths = ["/", "/?status=failed", "/?limit=1", "/?since=bad", "/log/987654",
             *(f"/log/{i}" for i in ids.values())]
    bodies = [client.get(path).get_data(as_text=True) for path in paths]
    bodies.append(client.post(f"/log/{ids['generic:by-label']}/retry", headers=SAME_ORIGIN,
                              follow_redirects=True).get_data(as_text=True))
    label_row = bodies[paths.index(f"/log/{ids['generic:by-label']}")]
    assert "&#34;pd_key&#34;: &#34;…3210&#34;" in label_row  # the key in the inbound labels, masked on its way out
    for body in bodies:
        assert KEY not in body and LABEL_KEY not in body


def test_security_headers_and_script_nonce(filled):
    response = filled[1].get("/")
    csp = response.headers["Content-Security-Policy"]
    nonce = re.search(r"'nonce-([^']+)'", csp).group(1)
    assert f'<script nonce="{nonce}">' in response.get_data(as_text=True)
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert response.headers["X-Frame-Options"] == "DENY" and response.headers["Cache-Control"] == "no-store"
    assert filled[1].get("/").headers["Content-Security-Policy"] != csp  # a fresh nonce per response


def test_stylesheet_is_served_locally(filled):
    html = page(filled[1])
    assert '<link rel="stylesheet" href="/static/relay.css">' in html and "http" not in html.split("<body>")[0]
    response = filled[1].get("/static/relay.css")
    assert response.status_code == 200 and b"@media (max-width: 600px)" in response.data


# --- counts, search, why and when, unknown parameters, links (issue 13, items 10 and 12) ------------------

def alertmanager_ids(app) -> list[int]:
    """The ids of the two Alertmanager rows of filled, newest first."""
    with app.app_context():
        return db.session.scalars(sa.select(IncidentLog.id).where(IncidentLog.source == "alertmanager")
                                  .order_by(IncidentLog.id.desc())).all()


def counts(html: str) -> dict[str, int]:
    """The counts per status at the top of the page."""
    return {status: int(count) for status, count in
            re.findall(r'data-status="(\w+)" class="count-[^"]*"[^>]*>\w+ <b>(\d+)</b>', html)}


def test_counts_per_status_follow_the_filters_but_the_status(filled):
    app, client, ids = filled
    set_status(app, alertmanager_ids(app)[0], "failed")
    html = page(client)
    assert counts(html) == {"pending": 2, "retrying": 0, "delivered": 0, "failed": 1, "dead": 0, "unrouted": 1,
                            "stale": 0, "superseded": 0, "held": 0}
    assert re.search(r'aria-current="page">all <b>4</b>', html)
    assert counts(page(client, query_string={"source": "generic"}))["unrouted"] == 1
    assert counts(page(client, query_string={"source": "generic"}))["failed"] == 0
    chosen = page(client, query_string={"status": "failed", "source": "alertmanager"})
    assert row_ids(chosen) == alertmanager_ids(app)[:1]
    assert counts(chosen)["pending"] == 1 and counts(chosen)["failed"] == 1  # what each status would list
    assert 'href="/?source=alertmanager&amp;status=pending"' in chosen


def test_search_finds_summary_dedup_key_and_labels(filled):
    app, client, ids = filled
    assert row_ids(page(client, query_string={"q": "cpu TEMPERATURE"})) == alertmanager_ids(app)
    assert row_ids(page(client, query_string={"q": "team"})) == [ids["generic:-"]]  # a label's name
    html = page(client, query_string={"q": "no route", "status": ""})
    assert row_ids(html) == [ids["generic:-"]] and 'name="q" value="no route"' in html
    assert counts(html)["unrouted"] == 1 and sum(counts(html).values()) == 1


@pytest.mark.parametrize("query", [{"stauts": "failed"}, {"bogus": ""}, {"status": "failed", "Q": "x"}])
def test_an_unknown_parameter_is_a_400_page_naming_it(filled, query):
    html = page(filled[1], status=400, query_string=query)
    (unknown,) = set(query) - {"status"}
    assert "Bad filter" in html and f"<strong>{unknown}</strong>: unknown parameter" in html
    assert row_ids(html) == []


def test_retrying_failed_unrouted_and_stale_rows_say_why_in_the_list(filled):
    app, client, ids = filled
    (retrying, failed), stale = alertmanager_ids(app), ids["generic:by-label"]
    set_status(app, retrying, "retrying", http_status=503, pd_message="Service unavailable", attempts=2,
               next_attempt_at=datetime(2031, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    set_status(app, failed, "failed", http_status=400, pd_message="Event object is invalid",
               pd_errors=["Invalid routing key"])
    set_status(app, stale, "stale", error="stale: resolved at X is older than firing since Y (row 1); not sent")
    html = page(client)
    why = {int(i): text for i, text in re.findall(r'<tr id="row-(\d+)".*?<p class="why[^"]*" title="([^"]*)"', html,
                                                  re.S)}
    assert why == {retrying: "HTTP 503: Service unavailable",
                   failed: "HTTP 400: Event object is invalid; Invalid routing key",
                   stale: "stale: resolved at X is older than firing since Y (row 1); not sent",
                   ids["generic:-"]: "no route matches and there is no default route"}
    assert re.search(rf'<tr id="row-{retrying}".*?2 attempts · HTTP 503.*?next at <time datetime="2031-01-02T03:04:05'
                     r'[^"]*" title="2031-01-02 03:04:05 UTC">03:04:05</time>', html, re.S)
    assert 'class="badge badge-stale"' in html


def test_every_status_has_its_badge_style(filled):
    css = filled[1].get("/static/relay.css").get_data(as_text=True)
    assert [status for status in STATUSES if f".badge-{status} {{" not in css] == []


def test_a_follow_up_shows_its_triggers_summary_for_one_more_query(app, client, pd, routing_key):
    client.post("/api/v1/incidents", json={"title": "Disk full on db-9", "service_key": routing_key,
                                           "dedup_key": "db-9"})
    resolved = client.post("/api/v1/incidents/db-9/resolve", json={"service_key": routing_key}).get_json()["log_id"]
    html = page(client)
    assert re.search(rf'<tr id="row-{resolved}".*?>Disk full on db-9</a>', html, re.S)
    assert "Disk full on db-9" in page(client, f"/log/{resolved}")
    assert len(selects(app, "/", client)) == 4  # the rows, the counts, the follow-ups' summaries, endpoints down


def test_detail_links_only_http_urls(filled):
    app, client, ids = filled
    log_id = ids["generic:-"]
    with app.app_context():
        row = db.session.get(IncidentLog, log_id)
        row.event = {**row.event, "links": [{"href": "https://runbooks.example.com/x?a=1&b=2", "text": "Runbook"},
                                            {"href": "javascript:alert(1)", "text": "Source"},
                                            {"href": "http://grafana.example.com/d/1"}]}
        db.session.commit()
    html = page(client, f"/log/{log_id}")
    links = re.findall(r'<a href="([^"]+)" rel="noopener noreferrer">([^<]*)</a>', html)
    assert links == [("https://runbooks.example.com/x?a=1&amp;b=2", "Runbook"),
                     ("http://grafana.example.com/d/1", "http://grafana.example.com/d/1")]
    assert "<li>Source <code>javascript:alert(1)</code></li>" in html and 'href="javascript' not in html


# --- the API token, for browsers: ?token= once, then an HttpOnly SameSite=Strict cookie ------------------

API_TOKEN = "ui-token-5f2c9d"


@pytest.fixture
def secured(make_app):
    app = make_app(RELAY_API_TOKEN=API_TOKEN, DEFAULT_ROUTE=None,
                   ROUTES=[{"name": "infra", "matchers": ['team=~".+"'], "routing_key": KEY}])
    client = app.test_client()
    assert client.post("/webhooks/generic", json={"summary": "behind a token", "labels": {"team": "x"}},
                       headers={"Authorization": f"Bearer {API_TOKEN}"}).status_code == 202
    return app, client


def test_page_refuses_a_remote_browser_without_the_token(secured):
    _, client = secured
    for path in ("/", "/?token=wrong", f"/?token={API_TOKEN}x", "/log/1"):
        response = client.get(path, environ_base=REMOTE)
        assert response.status_code == 401 and "Set-Cookie" not in response.headers, path
        assert "?token=" in response.get_data(as_text=True)  # the page says how to get in
    client.set_cookie(UI_COOKIE, API_TOKEN)  # the token itself is not the cookie
    assert client.get("/", environ_base=REMOTE).status_code == 401


def test_token_once_sets_a_strict_httponly_cookie_and_leaves_the_url(secured):
    app, client = secured
    response = client.get(f"/?status=pending&token={API_TOKEN}", environ_base=REMOTE)
    assert response.status_code == 303 and response.headers["Location"] == "/?status=pending"
    set_cookie = response.headers["Set-Cookie"]
    assert set_cookie.startswith(UI_COOKIE + "=") and API_TOKEN not in set_cookie
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie and "Path=/" in set_cookie
    html = page(client, "/?status=pending", environ_base=REMOTE)  # the cookie, nothing else
    assert "behind a token" in html
    detail_id = row_ids(html)[0]
    assert "behind a token" in page(client, f"/log/{detail_id}", environ_base=REMOTE)
    # The cookie opens the page only: the API still wants the bearer token.
    assert client.get("/api/v1/log", environ_base=REMOTE).status_code == 401
    # …and it lets the page's own Retry through (same origin), but a token in a POST's query string does not.
    set_status(app, detail_id, "failed")
    assert client.post(f"/log/{detail_id}/retry", environ_base=REMOTE, headers=SAME_ORIGIN).status_code == 303
    set_status(app, detail_id, "failed")
    client.delete_cookie(UI_COOKIE)
    assert client.post(f"/log/{detail_id}/retry?token={API_TOKEN}", environ_base=REMOTE,
                       headers=SAME_ORIGIN).status_code == 401


def test_a_wrong_token_in_the_url_is_refused_even_with_a_good_cookie(secured):
    _, client = secured
    client.get(f"/?token={API_TOKEN}", environ_base=REMOTE)
    assert client.get("/", environ_base=REMOTE).status_code == 200
    assert client.get("/?token=wrong", environ_base=REMOTE).status_code == 401


def test_bearer_header_opens_the_page_too(secured):
    _, client = secured
    assert "behind a token" in page(client, environ_base=REMOTE, headers={"Authorization": f"Bearer {API_TOKEN}"})


def test_a_cookie_from_another_token_does_not_open_the_page(secured, make_app):
    _, client = secured
    client.get(f"/?token={API_TOKEN}", environ_base=REMOTE)
    other = make_app(RELAY_API_TOKEN="another-token").test_client()
    other.set_cookie(UI_COOKIE, client.get_cookie(UI_COOKIE).value)
    assert other.get("/", environ_base=REMOTE).status_code == 401


def test_without_a_token_the_page_answers_loopback_only(make_app):
    client = make_app(RELAY_API_TOKEN="").test_client()
    assert client.get("/").status_code == 200
    response = client.get("/?token=anything")  # nothing to keep: the URL is cleaned, no cookie set
    assert response.status_code == 303 and response.headers["Location"] == "/" and "Set-Cookie" not in response.headers
    assert client.get("/", environ_base=REMOTE).status_code == 403


# --- behind a TLS-terminating proxy (Hardening 11) ---------------------------------------------------

PROXY = {"REMOTE_ADDR": "10.0.0.5"}  # the proxy, as the relay sees it
HTTPS_FOR_REMOTE = {"X-Forwarded-Proto": "https", "X-Forwarded-For": REMOTE["REMOTE_ADDR"]}


def test_the_cookie_is_secure_behind_a_trusted_tls_proxy_only(make_app):
    def cookie(**config):
        client = make_app(RELAY_API_TOKEN=API_TOKEN, **config).test_client()
        response = client.get(f"/?token={API_TOKEN}", environ_base=PROXY, headers=HTTPS_FOR_REMOTE)
        assert response.status_code == 303
        return response.headers["Set-Cookie"]

    assert "Secure" not in cookie()  # by default the headers could be any client's: not trusted
    assert "Secure" in cookie(RELAY_TRUSTED_PROXY_COUNT=1)


def test_a_trusted_proxy_names_the_client_the_loopback_rule_sees(make_app):
    client = make_app(RELAY_API_TOKEN="", RELAY_TRUSTED_PROXY_COUNT=1).test_client()
    local_proxy = {"REMOTE_ADDR": "127.0.0.1"}
    assert client.get("/", environ_base=local_proxy, headers=HTTPS_FOR_REMOTE).status_code == 403
    assert client.get("/", environ_base=local_proxy, headers={"X-Forwarded-For": "127.0.0.1"}).status_code == 200


@pytest.mark.parametrize("count", [-1, "two"])
def test_a_proxy_count_that_is_no_count_stops_start_up(make_app, count):
    with pytest.raises(ConfigError, match="RELAY_TRUSTED_PROXY_COUNT"):
        make_app(RELAY_TRUSTED_PROXY_COUNT=count)


def test_a_key_from_a_label_is_on_no_page_of_another_routes_row(make_app):
    app = make_app(DEFAULT_ROUTE=None, ROUTES=[
        {"name": "by-label", "matchers": ['pd_key=~".+"'], "routing_key_template": "{{ labels.pd_key }}",
         "continue": True},
        {"name": "infra", "matchers": ['alertname=~".+"'], "routing_key": KEY}])
    client = app.test_client()
    assert client.post("/webhooks/generic", json={
        "summary": f"disk full {LABEL_KEY}", "labels": {"alertname": "Disk", "pd_key": LABEL_KEY}}).status_code == 202
    with app.app_context():
        rows = {row.route: row.id for row in db.session.scalars(sa.select(IncidentLog))}
    assert set(rows) == {"by-label", "infra"}
    for path in ["/", "/?route=infra", *(f"/log/{i}" for i in rows.values())]:
        html = page(client, path)
        assert LABEL_KEY not in html, path
