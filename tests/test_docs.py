"""The docs tell the truth: their files, links, make targets, CLI commands and settings exist, and the README's
example payloads are accepted as it says. Fast: no processes, one SQLite file."""
import json
import re
import runpy
from pathlib import Path

import pytest
from conftest import app_config

from relay import create_app
from relay.cli import relay_cli
from relay.intake.sources import SOURCES, settings_key

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = [README, ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MAX_README_LINES = 250

SHIPPED_PATH = re.compile(r"(?<![\w/.-])(?:\.\./)?((?:examples|docs|deploy|bench)/[\w./-]*\w)")
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
