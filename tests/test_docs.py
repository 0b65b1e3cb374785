"""The docs tell the truth: their files, links, make targets, CLI commands, settings and metrics exist, the README's
example payloads are accepted as it says, and the new capabilities' pages (drop-in, heartbeats, storms, reconciler)
show the answers, check-config lines and errors the relay gives. Fast: no processes, one SQLite file."""
import json
import os
import re
import runpy
from pathlib import Path

import pytest
from conftest import app_config
from sqlalchemy import delete

from relay import create_app
from relay.cli import relay_cli
from relay.intake.configure import describe
from relay.intake.routing import ConfigError, load_routing
from relay.intake.sources import SOURCES, settings_key
from relay.store.models import Heartbeat, db
from tests.alerts_api import alerts_api
from tests.helpers import alertmanager_notification, firing

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = [README, ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MAX_README_LINES = 250

SHIPPED_PATH = re.compile(r"(?<![\w/.-])(?:\.\./)?((?:examples|docs|deploy|bench|relay|tests|tools|migrations)/[\w./-]*\w)")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"```.*?```|`[^`\n]+`", re.S)
FENCED = re.compile(r"^```.*?^```", re.S | re.M)
MAKE_TARGET = re.compile(r"\bmake ([a-z][\w-]*)")
RELAY_COMMAND = re.compile(r"\bflask (?:--app wsgi )?relay ([a-z][\w-]*)")
CONSOLE_COMMAND = re.compile(r"(?:^|\$ |`|\.venv/bin/)relay ([a-z][\w-]*)", re.M)  # in code: `relay log`
SETTING = re.compile(r"\b(RELAY_[A-Z0-9_<>]*[A-Z0-9>]|PAGERDUTY_[A-Z0-9_]*[A-Z0-9]|DATABASE_URL)\b")
READ_SETTING = re.compile(r"""(?:environ\.get|environ\[|_env_\w+|environment\.\w+)\(?\s*["']([A-Z][A-Z0-9_]+)["']""")
SOURCE_SUFFIX = re.compile(r"""prefix \+ ["']([A-Z][A-Z0-9_]+)["']""")


def doc_id(path: Path) -> str:
    """Name a doc by its path from the project root."""
    return str(path.relative_to(ROOT))


def code_in(text: str) -> str:
    """Return the code blocks and code spans of a Markdown text."""
    return "\n".join(CODE.findall(text))


def anchors(path: Path) -> set[str]:
    """Return the heading anchors GitHub makes for a Markdown file."""
    headings = re.findall(r"^#+ (.+)$", FENCED.sub("", path.read_text()), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


def settings_read() -> set[str]:
    """Return every environment variable config.py, gunicorn.conf.py and the relay package read."""
    files = [ROOT / "config.py", ROOT / "gunicorn.conf.py", *(ROOT / "relay").rglob("*.py")]
    names, suffixes = set(), set()
    for path in files:
        text = path.read_text()
        names.update(READ_SETTING.findall(text))
        suffixes.update(SOURCE_SUFFIX.findall(text))
    per_source = {f"RELAY_{source.upper()}_{suffix}" for source in (*SOURCES, "heartbeats") for suffix in suffixes}
    placeholders = {f"RELAY_<SOURCE>_{suffix}" for suffix in suffixes}
    source_settings = {settings_key(source) for source in SOURCES.values()}  # PAGERDUTY_WEBHOOK, in RELAY_CONFIG
    return names | per_source | placeholders | source_settings


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_every_shipped_path_named_exists(doc):
    missing = {path for path in SHIPPED_PATH.findall(doc.read_text()) if not (ROOT / path).exists()}
    assert not missing, f"{doc_id(doc)} names files that are not shipped"


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_every_relative_link_resolves(doc):
    broken = []
    for target in LINK.findall(doc.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        file_part, _, anchor = target.partition("#")
        path = (doc.parent / file_part).resolve() if file_part else doc
        if not path.exists() or (anchor and path.suffix == ".md" and anchor not in anchors(path)):
            broken.append(target)
    assert not broken, f"{doc_id(doc)}: broken links"


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_every_make_target_named_exists(doc):
    targets = set(re.findall(r"^([\w.-]+):", (ROOT / "Makefile").read_text(), re.M))
    named = set(MAKE_TARGET.findall(code_in(doc.read_text())))
    assert named <= targets, f"{doc_id(doc)} names make targets the Makefile lacks"


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_every_relay_command_named_exists(doc):
    named = set(RELAY_COMMAND.findall(doc.read_text()))
    assert named <= set(relay_cli.commands), f"{doc_id(doc)} names `flask relay` commands the CLI lacks"
    console = set(CONSOLE_COMMAND.findall(code_in(doc.read_text())))
    assert console <= {*relay_cli.commands, "db"}, f"{doc_id(doc)} names `relay` commands the console lacks"


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_every_setting_named_is_read(doc):
    named = set(SETTING.findall(doc.read_text()))
    assert named <= settings_read(), f"{doc_id(doc)} names settings nothing reads"


def test_readme_reads_in_five_minutes():
    assert len(README.read_text().splitlines()) <= MAX_README_LINES


def test_make_check_and_make_test_are_the_documented_tiers():
    targets = set(re.findall(r"^([\w.-]+):", (ROOT / "Makefile").read_text(), re.M))
    assert {"run", "test", "check", "simulator"} <= targets
    assert "make test" in (ROOT / ".ci" / "run").read_text()


# --- the README's quick start, through the Flask test client ------------------------------------------------

def quickstart():
    """Return the README's routing key, and each webhook its curl posts with the file and the answer shown."""
    text = README.read_text()
    routing_key = re.search(r"PAGERDUTY_ROUTING_KEY=(\w+)", text).group(1)
    posts = re.findall(r"curl [^\n]*?/webhooks/(\w+)[^\n]*\\\n\s*--data-binary @(\S+)\n# (\{.*?\})\n(?!#\s+\")",
                       text, re.S)
    shown = [(source, path, re.sub(r"\n#\s*", "", answer)) for source, path, answer in posts]
    return routing_key, shown


def webhook_app(database_urls, pd, monkeypatch, **config):
    """Build the relay as `make run` would with this environment (config.py read afresh), on a test store."""
    fresh = runpy.run_path(str(ROOT / "config.py"))["Config"]
    return create_app(app_config(database_urls("sqlite"), pd.events_url, DEFAULT_ROUTE=fresh.DEFAULT_ROUTE,
                                 **config))


def test_the_readme_curl_payload_is_accepted_as_shown(database_urls, pd, monkeypatch):
    routing_key, posts = quickstart()
    assert posts, "the README's curl to /webhooks/… and its answer were not found"
    monkeypatch.delenv("RELAY_CONFIG", raising=False)
    monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", routing_key)
    client = webhook_app(database_urls, pd, monkeypatch).test_client()
    for source, path, shown in posts:
        answer = client.post(f"/webhooks/{source}", data=(ROOT / path).read_bytes(),
                             content_type="application/json")
        assert answer.status_code == 202, answer.get_json()
        got = answer.get_json()
        expected = json.loads(shown.replace("…", ""))  # the README shortens dedup keys with …
        assert got["accepted"] == expected["accepted"]
        for event, shown_event in zip(got["events"], expected["events"]):
            assert event["route"] == shown_event["route"]
            assert event["event_action"] == shown_event["event_action"]
            assert event["routing_key"] == shown_event["routing_key"]
            head, _, tail = re.search(r'"dedup_key":"([^"]*)"', shown).group(1).partition("…")
            assert event["dedup_key"].startswith(head) and event["dedup_key"].endswith(tail)


def test_the_resolved_example_resolves_what_the_firing_one_opened(database_urls, pd, monkeypatch):
    monkeypatch.delenv("RELAY_CONFIG", raising=False)
    monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", quickstart()[0])
    client = webhook_app(database_urls, pd, monkeypatch).test_client()
    events = [client.post("/webhooks/alertmanager", data=(ROOT / "examples" / name).read_bytes(),
                          content_type="application/json").get_json()["events"][0]
              for name in ("alertmanager-firing.json", "alertmanager-resolved.json")]
    assert [event["event_action"] for event in events] == ["trigger", "resolve"]
    assert events[0]["dedup_key"] == events[1]["dedup_key"]


def test_the_example_routes_route_as_documented(database_urls, pd, monkeypatch):
    monkeypatch.setenv("RELAY_CONFIG", str(ROOT / "examples" / "routes.py"))
    for name in ("PD_DATABASE_KEY", "PD_AUDIT_KEY", "PAGERDUTY_ROUTING_KEY"):
        monkeypatch.setenv(name, name.lower().replace("_", "")[:8] * 4)
    app = create_app(app_config(database_urls("sqlite"), pd.events_url))
    assert app.test_cli_runner().invoke(args=["relay", "check-config"]).exit_code == 0
    answer = app.test_client().post("/webhooks/alertmanager", content_type="application/json",
                                    data=(ROOT / "examples" / "alertmanager-firing.json").read_bytes())
    assert answer.status_code == 202
    assert [event["route"] for event in answer.get_json()["events"]] == ["database", "audit"]


def test_the_generic_example_maps_as_documented(database_urls, pd, monkeypatch):
    monkeypatch.setenv("RELAY_CONFIG", str(ROOT / "examples" / "generic-webhook.py"))
    monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", quickstart()[0])
    client = webhook_app(database_urls, pd, monkeypatch).test_client()
    answer = client.post("/webhooks/generic", data=(ROOT / "examples" / "generic.json").read_bytes(),
                         content_type="application/json")
    assert answer.status_code == 202
    assert [(event["dedup_key"], event["event_action"]) for event in answer.get_json()["events"]] == [
        ("backup-nightly", "trigger"), ("disk-backup-1", "resolve")]


# --- the new capabilities' pages: their commands, answers and quoted lines ---------------------------------------

DOC_KEYS = {"PAGERDUTY_ROUTING_KEY": "0123456789abcdef0123456789abcdef", "PD_DATABASE_KEY": "d" * 32,
            "PD_AUDIT_KEY": "a" * 32, "PD_WEB_KEY": "w" * 32}  # masked in what the docs show, so any key will do
MASKED = re.compile(r"…\w{4}")
METRIC = re.compile(r"(?<![\w/.-])relay_[a-z_]*[a-z]\b")  # not a file such as /etc/alertmanager/relay_token
DEFINED_METRIC = re.compile(r"""["'](relay_[a-z_]+)["']""")
CHECK_CONFIG = re.compile(r"^\$ ((?:\w+=\S*\s+)*)\.venv/bin/flask --app wsgi relay check-config\n((?:[^$`\n].*\n)*)",
                          re.M)


def doc_text(name: str) -> str:
    return (ROOT / "docs" / name).read_text()


def metrics_defined() -> set[str]:
    """Every metric name the relay's code defines, with the series a histogram adds."""
    names = {name for path in (ROOT / "relay").rglob("*.py") for name in DEFINED_METRIC.findall(path.read_text())}
    return names | {f"{name}_{suffix}" for name in names for suffix in ("bucket", "count", "sum")}


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_every_metric_named_is_one_the_relay_exports(doc):
    named = set(METRIC.findall(code_in(doc.read_text())))
    assert named <= metrics_defined(), f"{doc_id(doc)} names metrics the relay does not export"


def check_config_output(database_urls, pd, monkeypatch, assignments: str) -> list[str]:
    """What `ENV=… flask --app wsgi relay check-config` prints (its error line when the configuration is refused)."""
    monkeypatch.delenv("RELAY_CONFIG", raising=False)
    for name, value in DOC_KEYS.items():
        monkeypatch.setenv(name, value)
    for assignment in assignments.split():
        name, _, value = assignment.partition("=")
        monkeypatch.setenv(name, str(ROOT / value) if name == "RELAY_CONFIG" else value)
    config_file = os.environ.get("RELAY_CONFIG")
    overrides = {}  # the file's DEFAULT_ROUTE wins over config.py's, as in the real command
    if config_file and "DEFAULT_ROUTE" in (file_settings := runpy.run_path(config_file)):
        overrides["DEFAULT_ROUTE"] = file_settings["DEFAULT_ROUTE"]
    try:
        fresh = runpy.run_path(str(ROOT / "config.py"))["Config"]
        app = create_app(app_config(database_urls("sqlite"), pd.events_url,
                                    **{"DEFAULT_ROUTE": fresh.DEFAULT_ROUTE, **overrides}))
    except ConfigError as refused:
        return [f"relay: configuration error: {refused}"]
    return app.test_cli_runner().invoke(args=["relay", "check-config"]).output.splitlines()


@pytest.mark.parametrize("doc", [ROOT / "docs" / "routing.md", ROOT / "docs" / "heartbeats.md"], ids=doc_id)
def test_check_config_prints_what_the_docs_show(database_urls, pd, monkeypatch, doc):
    shown = CHECK_CONFIG.findall(doc.read_text())
    assert shown, f"{doc_id(doc)}: no check-config console block found"
    for assignments, output in shown:
        got = check_config_output(database_urls, pd, monkeypatch, assignments)
        expected = output.splitlines()
        assert [MASKED.sub("…", line) for line in got][:len(expected)] == [
            MASKED.sub("…", line) for line in expected], assignments


def route_shown(doc: str, name: str) -> dict:
    """The route of that name in a doc's Python example."""
    for block in re.findall(r"```python\n(.*?)```", doc_text(doc), re.S):
        for found in re.finditer(r"\{\"name\": \"" + name + r"\".*?\}\}?(?=,?\s*(?:#|\]|\{|\Z|$))", block, re.S):
            return eval(found.group(0))  # noqa: S307 - the doc's own example, a literal
    raise AssertionError(f"docs/{doc}: no route {name!r} in a Python block")


def test_the_storm_valve_reads_and_refuses_as_routing_md_says(monkeypatch):
    text = doc_text("routing.md")
    route = route_shown("routing.md", "web")
    shown_valve = re.search(r"`…(, storm valve [^`]+)`", text).group(1)
    assert shown_valve.replace("50", str(route["storm"]["max_triggers"])) in describe(
        load_routing([route], None, DOC_KEYS))[0]
    shown_error = re.search(r"\(`(route 'web', field 'storm': [^`]+)`\)", text).group(1)
    without_max = {**route, "storm": {k: v for k, v in route["storm"].items() if k != "max_triggers"}}
    with pytest.raises(ConfigError) as refused:
        load_routing([without_max], None, DOC_KEYS)
    assert str(refused.value) == shown_error


def test_the_reconciler_policy_reads_as_reconciler_md_says():
    text = doc_text("reconciler.md")
    shown = re.search(r"`…(, reconciler: [^`]+)`", text).group(1)
    assert describe(load_routing([route_shown("reconciler.md", "database")], None, DOC_KEYS))[0].endswith(shown)


def dropin_curl():
    """docs/dropin.md's curl to /v2/enqueue: the event it posts and the answer it shows."""
    found = re.search(r"curl -s -X POST localhost:8080/v2/enqueue [^\n]*\\\n\s*-d '(.*?)'\n# (\{.*?\})\n",
                      doc_text("dropin.md"), re.S)
    assert found, "docs/dropin.md: the curl to /v2/enqueue and its answer were not found"
    return json.loads(found.group(1)), json.loads(found.group(2).replace("…", ""))


def test_the_dropin_curl_is_answered_as_shown_and_its_refusal_reads_as_shown(database_urls, pd, monkeypatch):
    event, shown = dropin_curl()
    client = webhook_app(database_urls, pd, monkeypatch).test_client()
    answer = client.post("/v2/enqueue", json=event)
    assert answer.status_code == 202
    got = answer.get_json()
    assert set(got) == set(shown) and {k: got[k] for k in ("status", "message")} == {
        k: shown[k] for k in ("status", "message")}
    assert re.fullmatch(r"[0-9a-f]{32}", got["dedup_key"])  # the doc shortens it: 32 hex digits, as PagerDuty's
    refusal = json.loads(re.search(r"`(\{\"status\": \"invalid event\".*?\})`", doc_text("dropin.md")).group(1))
    bad = {**event, "payload": {**event["payload"], "severity": "high"}}
    assert client.post("/v2/enqueue", json=bad).get_json() == refusal


def test_the_heartbeat_curls_check_in_as_heartbeats_md_says(database_urls, pd, monkeypatch):
    monkeypatch.setenv("RELAY_CONFIG", str(ROOT / "examples" / "heartbeats.py"))
    monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", DOC_KEYS["PAGERDUTY_ROUTING_KEY"])
    app = webhook_app(database_urls, pd, monkeypatch)
    with app.app_context():
        db.session.execute(delete(Heartbeat))
        db.session.commit()
    client = app.test_client()
    curls = re.findall(r"curl -fsS -X POST localhost:8080(/heartbeats/\S+)(?: --data-binary '([^']*)')?",
                       doc_text("heartbeats.md"))
    assert len(curls) >= 3, "docs/heartbeats.md: the check-in curls were not found"
    states = []
    for path, body in curls:
        answer = client.post(path, data=body)
        assert answer.status_code == 200, (path, answer.get_json())
        states.append(answer.get_json()["state"])
        if body:
            assert answer.get_json()["last_message"] == body
    assert states == ["up", "up", "down"]  # checked in, started, failed
    unknown = client.post("/heartbeats/nightly")
    assert unknown.status_code == 404 and "nightly-backup, sync-invoices" in unknown.get_json()["error"]["message"]
    listed = re.search(r'`GET /api/v1/heartbeats` \(API token\): `\{"items": \[\{(.*?)\}\]\}`',
                       doc_text("heartbeats.md"), re.S).group(1)
    fields = set(re.findall(r'"(\w+)"', listed))
    assert {tuple(sorted(item)) for item in client.get("/api/v1/heartbeats").get_json()["items"]} == {
        tuple(sorted(fields))}


def test_the_dry_run_line_has_the_fields_reconciler_md_shows(database_urls, pd, monkeypatch):
    shown = json.loads(re.search(r"^\$ \.venv/bin/relay reconcile --dry-run\n(\{.*\})$", doc_text("reconciler.md"),
                                 re.M).group(1))
    monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", DOC_KEYS["PAGERDUTY_ROUTING_KEY"])
    app = webhook_app(database_urls, pd, monkeypatch, ROUTES=[{**route_shown("reconciler.md", "database"),
                                                                "routing_key_env": "PAGERDUTY_ROUTING_KEY"}])
    with alerts_api() as (url, am):
        notification = {**alertmanager_notification([firing("DiskFull", {}, team="db")]), "externalURL": url}
        assert app.test_client().post("/webhooks/alertmanager", json=notification).status_code == 202
        am.alert("1234567890abcdef", {"alertname": "DiskFull", "team": "db"}, silenced_by=["5f0c"])
        am.silences["5f0c"] = {"id": "5f0c", "createdBy": "ann", "comment": "disk swap"}
        result = app.test_cli_runner().invoke(args=["relay", "reconcile", "--dry-run"])
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines and list(lines[-1]) == list(shown)
    assert {k: lines[-1][k] for k in ("route", "relay", "found", "action")} == {
        k: shown[k] for k in ("route", "relay", "found", "action")}
    assert lines[-1]["cause"] == "reconciled: silenced by 5f0c (ann: disk swap)"
