"""The log page in a real browser: Debian's Chromium driven by Playwright, against gunicorn and the simulator.

Needs /usr/bin/chromium (`apt-get install -y chromium`; .ci/run installs it) and the playwright package from
requirements-dev.txt. Playwright's own browser downloads are never used. A missing browser fails, not skips.
"""
import os
import re
import secrets
import time
from pathlib import Path

import pytest
import requests

from tests.e2e.harness import relay_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]
KEY = "0123456789abcdef0123456789abcdef"
OTHER_KEY = "a" * 32
API_TOKEN = "browser-test-token-3e1f"
SCREENSHOT = "/tmp/relay_ui.png"

http = requests.Session()
http.trust_env = False  # loopback only, whatever proxy the environment names


@pytest.fixture(scope="module")
def relay(tmp_path_factory, simulator):
    """One relay under gunicorn for the module: the simulator as PagerDuty, the API and page behind a token."""
    with relay_server(tmp_path_factory.mktemp("ui-browser"), simulator.events_url, routing_key=KEY,
                      extra_env={"RELAY_API_TOKEN": API_TOKEN, "RELAY_RETRY_BASE_SECONDS": "0.1",
                                 "RELAY_DELIVERY_POLL_SECONDS": "0.2"}) as served:
        yield served


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless; a clear failure when it or Playwright is missing."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"{CHROMIUM} is missing: the browser tests need Debian's Chromium. Run .ci/run as root "
                    "(it installs it) or apt-get install -y chromium", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: pip install -r requirements-dev.txt", pytrace=False)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def open_page(browser, relay):
    """A fresh browser context signed in the way a person is: ?token= once, then the cookie."""
    contexts = []

    def make(path="/", **context_options):
        context = browser.new_context(**context_options)
        contexts.append(context)
        tab = context.new_page()
        tab.problems = []
        tab.on("console", lambda msg: tab.problems.append(msg.text) if msg.type == "error" else None)
        tab.on("pageerror", lambda exc: tab.problems.append(str(exc)))
        tab.on("response", lambda r: tab.problems.append(f"{r.status} {r.url}") if r.status == 404 else None)
        response = tab.goto(f"{relay.url}{path}{'&' if '?' in path else '?'}token={API_TOKEN}")
        assert response.status == 200, response.status
        assert "token=" not in tab.url  # the redirect took the token out of the address bar
        return tab

    yield make
    for context in contexts:
        context.close()


def trigger(relay, title, **extra):
    """Send an event through the API, as a person or script would; return its log id."""
    response = http.post(relay.url + "/api/v1/incidents", timeout=15, headers={"Authorization": f"Bearer {API_TOKEN}"},
                         json={"title": title, "service_key": KEY, **extra})
    assert response.status_code in (200, 202, 422), response.text  # 422: PagerDuty refused it, as some tests ask
    return response.json()["log_id"]


def row(tab, log_id):
    return tab.locator(f"#row-{log_id}")


def test_page_lists_rows_and_filters(open_page, relay, pd):
    delivered = trigger(relay, "Disk full on db-1")
    webhook = http.post(relay.url + "/webhooks/generic", timeout=10,
                        json={"summary": "Queue backlog on mq-2", "severity": "warning", "labels": {"team": "mq"}})
    assert webhook.status_code == 202, webhook.text
    tab = open_page()
    assert row(tab, delivered).locator(".badge").inner_text() == "delivered"
    tab.screenshot(path=SCREENSHOT.replace(".png", "_desktop.png"))
    assert "Queue backlog on mq-2" in tab.locator("table.log").inner_text()
    assert "…cdef" in tab.content() and KEY not in tab.content()

    tab.get_by_label("Source").fill("generic")
    tab.get_by_role("button", name="Filter").click()
    tab.wait_for_url(re.compile(r"source=generic"))
    summaries = tab.locator("table.log td.summary").all_inner_texts()
    assert summaries and all("Queue backlog on mq-2" in s for s in summaries)
    assert row(tab, delivered).count() == 0
    assert tab.problems == []  # no script error, no CSP violation

    response = tab.goto(relay.url + "/?since=yesterday")
    assert response.status == 400
    assert "Bad filter" in tab.locator("[role=alert]").inner_text()


def test_detail_and_retry_of_a_failed_row(open_page, relay, pd):
    pd.set_routing_keys([OTHER_KEY])  # PagerDuty refuses our key: 400, failed at once
    log_id = trigger(relay, "Refused by PagerDuty")
    tab = open_page("/?status=failed")
    assert row(tab, log_id).locator(".badge").inner_text() == "failed"

    row(tab, log_id).get_by_role("link", name="Refused by PagerDuty").click()
    tab.wait_for_url(f"**/log/{log_id}")
    assert "Invalid routing key" in tab.locator("ul.pd-errors").inner_text()
    attempts = tab.locator("table.attempts tbody tr")
    assert attempts.count() == 1 and "failed" in attempts.inner_text() and "400" in attempts.inner_text()
    assert '"routing_key": "…cdef"' in tab.locator("pre.json").first.inner_text()

    pd.set_routing_keys(None)  # PagerDuty takes it now
    tab.get_by_role("button", name=f"Retry row {log_id}").click()
    tab.wait_for_url(f"**/log/{log_id}")
    assert tab.locator("h1 .badge").inner_text() in ("pending", "delivered")
    # Auto-refresh (no reload by the test) shows it delivered.
    tab.locator("h1 .badge-delivered").wait_for(timeout=15_000)
    assert tab.locator("table.attempts tbody tr").count() == 2
    assert [e["payload"]["summary"] for e in pd.accepted()] == ["Refused by PagerDuty"]
    assert tab.problems == []


def test_auto_refresh_shows_new_rows_and_can_be_paused(open_page, relay, pd):
    tab = open_page()
    tab.evaluate("window.stillHere = true")
    first = trigger(relay, "Arrives while watching")
    row(tab, first).wait_for(timeout=12_000)
    assert tab.evaluate("window.stillHere") is True  # swapped in place: the page was not reloaded

    tab.get_by_label("Auto-refresh every 5 s").uncheck()
    second = trigger(relay, "Arrives while paused")
    time.sleep(6.5)  # more than one refresh period
    assert row(tab, second).count() == 0
    tab.reload()  # the pause is remembered in this browser
    assert tab.get_by_label("Auto-refresh every 5 s").is_checked() is False
    assert row(tab, second).count() == 1
    assert tab.problems == []


def test_phone_width_has_no_horizontal_overflow(open_page, relay, pd):
    trigger(relay, "A long summary that would widen a table: " + "disk-io-latency-p99-over-threshold " * 4,
            urgency="low")
    pd.set_routing_keys([OTHER_KEY])
    failed = trigger(relay, "Failed row with a Retry button")
    pd.set_routing_keys(None)
    tab = open_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True)
    assert row(tab, failed).is_visible()
    widths = tab.evaluate("[document.documentElement.scrollWidth, document.body.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[2] and widths[1] <= widths[2], widths
    # Cards, not a squeezed table: each cell is labelled, the retry button is reachable.
    assert row(tab, failed).get_by_role("button", name=f"Retry row {failed}").is_visible()
    tab.screenshot(path=SCREENSHOT, full_page=True)

    tab.goto(f"{relay.url}/log/{failed}")
    widths = tab.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], widths
    tab.screenshot(path=SCREENSHOT.replace(".png", "_detail.png"), full_page=True)
    assert tab.problems == []


def api_get(relay, path, **params):
    response = http.get(relay.url + path, params=params, timeout=10, headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert response.status_code == 200, response.text
    return response.json()


def webhook(relay, **body):
    """Send a generic alert; return its log id."""
    response = http.post(relay.url + "/webhooks/generic", json=body, timeout=10)
    assert response.status_code == 202, response.text
    return response.json()["events"][0]["log_id"]


def test_desktop_width_fits_long_texts_and_says_why(open_page, relay, pd):
    word = "disk-io-latency-p99-over-threshold-on-volume-" * 10  # one word, no place to break
    long_label = webhook(relay, summary="Queue backlog " + "on the nightly batch importer " * 12,
                         labels={"pod": "importer-" + "x" * 300, "team": "batch"})
    trigger(relay, word)
    pd.set_routing_keys([OTHER_KEY])  # PagerDuty refuses our key: 400, failed at once
    dedup_key = "refused-" + secrets.token_hex(4)
    failed = trigger(relay, "Refused " + word, dedup_key=dedup_key)
    pd.set_routing_keys(None)
    pd.inject(503, retry_after=250)
    retrying = webhook(relay, summary="Waits for PagerDuty", labels={"team": "wait"})
    wait_for = time.monotonic() + 10
    while api_get(relay, f"/api/v1/log/{retrying}")["status"] != "retrying":
        assert time.monotonic() < wait_for, "the row never went retrying"
        time.sleep(0.1)
    pd.set_routing_keys([OTHER_KEY])
    resolved = http.post(f"{relay.url}/api/v1/incidents/{dedup_key}/resolve", timeout=15, json={"service_key": KEY},
                         headers={"Authorization": f"Bearer {API_TOKEN}"}).json()["log_id"]
    pd.set_routing_keys(None)

    tab = open_page(viewport={"width": 1280, "height": 900})
    widths = tab.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert widths[0] <= widths[1], widths  # no horizontal scrolling
    table = tab.locator("table.log").bounding_box()
    assert table["x"] + table["width"] <= 1280, table
    tab.screenshot(path=SCREENSHOT.replace(".png", "_1280.png"), full_page=True)

    assert "HTTP 400" in row(tab, failed).locator(".why").inner_text()
    assert "Invalid routing key" in row(tab, failed).locator(".why").inner_text()
    assert "HTTP 503" in row(tab, retrying).locator(".why").inner_text()
    assert row(tab, retrying).locator(".next time").is_visible()  # when it is tried again
    assert row(tab, resolved).locator("td.summary a").inner_text().startswith("Refused disk-io")
    assert row(tab, failed).get_by_role("button", name=f"Retry row {failed}").is_visible()  # still on screen
    counts = tab.locator("nav.counts")
    for status in ("failed", "retrying", "delivered"):  # each count is what choosing that status lists
        listed = len(api_get(relay, "/api/v1/log", status=status, limit=500)["items"])
        assert counts.locator(f"[data-status={status}] b").inner_text() == str(listed) != "0"

    tab.get_by_label("Search").fill("IMPORTER-XXX")  # a label's value, in another letter case
    tab.get_by_role("button", name="Filter").click()
    tab.wait_for_url(re.compile(r"q=IMPORTER"))
    assert tab.locator("table.log tbody tr").count() == 1 and row(tab, long_label).count() == 1
    counts.locator("[data-status=pending]").wait_for()
    assert tab.problems == []


def test_detail_links_open_and_fit(open_page, relay, pd):
    body = (Path(__file__).parents[1] / "examples" / "alertmanager-firing.json").read_bytes()
    response = http.post(relay.url + "/webhooks/alertmanager", data=body, timeout=10,
                         headers={"Content-Type": "application/json"})
    assert response.status_code == 202, response.text
    log_id = response.json()["events"][0]["log_id"]
    tab = open_page(f"/log/{log_id}", viewport={"width": 1280, "height": 900})
    runbook = tab.get_by_role("link", name="Runbook")
    assert runbook.get_attribute("href") == "https://runbooks.example.com/postgres/replication-lag"
    assert runbook.get_attribute("rel") == "noopener noreferrer"
    assert tab.get_by_role("link", name="Source").get_attribute("href").startswith("http://prometheus:9090/graph")
    widths = tab.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert widths[0] <= widths[1], widths
    tab.screenshot(path=SCREENSHOT.replace(".png", "_1280_detail.png"), full_page=True)
    assert tab.problems == []


def test_without_the_token_the_browser_is_refused(browser, relay):
    context = browser.new_context()
    try:
        tab = context.new_page()
        response = tab.goto(relay.url + "/")
        assert response.status == 401 and "?token=" in tab.content()
        assert context.cookies() == []
    finally:
        context.close()
