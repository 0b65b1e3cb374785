"""The reconciler (relay/delivery/reconcile.py): every policy × state, and checks run against a real store (SQLite
file and PostgreSQL) and an Alertmanager API stand-in on a real socket, Grafana's API in its documented shape, and
once through the delivery worker to the PagerDuty simulator. The real Alertmanager: tests/e2e/test_reconcile.py."""
import json
import logging
import secrets

import pytest
import sqlalchemy as sa

from relay.cli.incident_log import log_table
from relay.delivery import reconcile
from relay.delivery.reconcile import ABSENT, ACKNOWLEDGED, FIRING, MUTED, MUTED_RESOLVED, OPEN, Decision, decide
from relay.intake.routing import ConfigError, load_route
from relay.metrics import RECONCILE_ERRORS
from relay.store.entry import log_entries
from relay.store.models import IncidentLog, ReconcileWatch, db, utcnow
from tests.alerts_api import alerts_api
from tests.helpers import alertmanager_notification, firing, fixture, wait_until

KEEP, ACK, RESOLVE = "keep", "acknowledge", "resolve"
POLICIES = (KEEP, ACK, RESOLVE)


# --- every policy × state: (view, found, misses before) → by the policy that applies, (action, misses, forget) ---

def _expect(view, found, misses, on_muted, on_gone):
    """The decision the issue asks for, written out case by case."""
    if found == FIRING:
        return (None, 0, False) if view == OPEN else ("trigger", 0, False)  # unmuted: triggered again
    if found == MUTED:
        if view == OPEN:
            return ({KEEP: None, ACK: "acknowledge", RESOLVE: "resolve"}[on_muted], 0, False)
        if view == ACKNOWLEDGED:
            return ("resolve" if on_muted == RESOLVE else None, 0, False)
        return (None, 0, False)  # resolved while muted: stays so
    if misses == 0:
        return (None, 1, False)  # absent once: a restarting Alertmanager proves nothing
    if view == OPEN:
        return {KEEP: (None, 2, False), ACK: ("acknowledge", 2, False), RESOLVE: ("resolve", 2, True)}[on_gone]
    if view == ACKNOWLEDGED:
        return ("resolve", 2, True) if on_gone == RESOLVE else (None, 2, True)
    return (None, 2, True)  # resolved while muted, now gone: nothing left to do


CASES = [(view, found, misses, on_muted, on_gone)
         for view in (OPEN, ACKNOWLEDGED, MUTED_RESOLVED)
         for found, misses in ((FIRING, 0), (FIRING, 1), (MUTED, 0), (MUTED, 1), (ABSENT, 0), (ABSENT, 1))
         for on_muted in POLICIES for on_gone in POLICIES]


@pytest.mark.parametrize("view,found,misses,on_muted,on_gone", CASES)
def test_every_policy_and_state(view, found, misses, on_muted, on_gone):
    decision = decide(view, found, misses, on_muted, on_gone)
    assert (decision.action, decision.misses, decision.forget) == _expect(view, found, misses, on_muted, on_gone)


def test_the_defaults_keep_a_muted_alert_and_resolve_a_gone_one():
    route = load_route({"name": "r", "routing_key": "k" * 32})
    assert (route.on_muted, route.on_gone) == (KEEP, RESOLVE)
    assert decide(OPEN, MUTED, 0, route.on_muted, route.on_gone) == Decision(None, 0, note="muted; on_muted is keep")


def test_a_bad_policy_names_the_route_and_the_option():
    with pytest.raises(ConfigError, match=r"route 'db', field 'on_gone': Must be one of: resolve, acknowledge, keep"):
        load_route({"name": "db", "routing_key": "k" * 32, "on_gone": "close"})


@pytest.mark.parametrize("setting, problem", [
    ("RELAY_RECONCILE_TIMEOUT_SECONDS", "RELAY_RECONCILE_TIMEOUT_SECONDS (0) must be more than 0"),
    ("RELAY_RECONCILE_MAX_RESOLVES", "RELAY_RECONCILE_MAX_RESOLVES (0) must be at least 1 "
                                     "(RELAY_RECONCILE_INTERVAL_SECONDS=0 turns the reconciler off)"),
    ("RELAY_HEARTBEAT_CHECK_SECONDS", "RELAY_HEARTBEAT_CHECK_SECONDS (0) must be more than 0"),
])
def test_a_duty_setting_that_cannot_work_stops_start_up_naming_it(make_app, setting, problem):
    with pytest.raises(ConfigError) as refused:  # a 0 s timeout was a ValueError traceback at the first check
        make_app(**{setting: 0})
    assert str(refused.value) == problem


def test_check_config_shows_a_route_policy_other_than_the_defaults(make_app):
    app = make_app(ROUTES=[{"name": "db", "routing_key": "k" * 32, "on_muted": "resolve"},
                           {"name": "web", "routing_key": "w" * 32}], DEFAULT_ROUTE=None)
    lines = app.test_cli_runner().invoke(args=["relay", "check-config"]).output.splitlines()
    assert lines[:2] == ["db: (everything) → key …kkkk, dedup alert, reconciler: muted → resolve, gone → resolve",
                         "web: (everything) → key …wwww, dedup alert"]


# --- checks against a real store and an Alertmanager API on a real socket ----------------------------------------

ROUTING_KEY = "r" * 32


def _app(make_app, **route):
    return make_app(ROUTES=[{"name": "am", "routing_key": ROUTING_KEY, **route}], RELAY_RECONCILE_MAX_RESOLVES=100)


def _post(app, external_url, *alerts, source="alertmanager", body=None):
    body = body or {**alertmanager_notification(list(alerts)), "externalURL": external_url}
    answer = app.test_client().post(f"/webhooks/{source}", json=body)
    assert answer.status_code == 202, answer.get_json()


def _check(app, dry_run=False):
    with app.app_context():
        woken = []
        reconciler = app.extensions.setdefault("test.reconciler", reconcile.Reconciler(app.config))
        if dry_run:
            return reconciler.check(db.engine, utcnow(), dry_run=True)
        report = reconciler.run(db.engine, utcnow(), lambda: woken.append(1))
        assert bool(woken) == bool(report.stored)
        return report


def _rows(app):
    with app.app_context():
        return [dict(row._mapping) for row in db.session.execute(sa.text(
            "SELECT id, event_action, dedup_key, cause, source, route, status FROM incident_log ORDER BY id"))]


def _alert(name, fingerprint, **labels):
    return {**firing(name, **labels), "fingerprint": fingerprint}


def test_a_silenced_alert_is_resolved_with_the_silence_and_triggered_again_once_unsilenced(make_app, caplog):
    app = _app(make_app, on_muted="resolve")
    with alerts_api() as (url, am):
        _post(app, url, _alert("DiskFull", "a1a1a1a1a1a1a1a1", host="db1"))
        am.alert("a1a1a1a1a1a1a1a1", {"alertname": "DiskFull", "host": "db1"})
        assert not _check(app).stored  # firing: nothing to do
        am.alerts.clear()
        am.alert("a1a1a1a1a1a1a1a1", {"alertname": "DiskFull", "host": "db1"}, silenced_by=["s-1"])
        am.silences["s-1"] = {"id": "s-1", "createdBy": "ann", "comment": "disk swap tonight"}
        with caplog.at_level(logging.INFO, logger="relay.delivery.reconcile"):
            report = _check(app)
        trigger, resolve = _rows(app)
        assert report.stored == [resolve["id"]]
        assert (resolve["event_action"], resolve["dedup_key"], resolve["route"], resolve["source"]) == \
            ("resolve", trigger["dedup_key"], "am", "alertmanager")
        assert resolve["cause"] == "reconciled: silenced by s-1 (ann: disk swap tonight)"
        assert "disk swap tonight" in caplog.text
        assert not _check(app).stored  # still silenced: resolved once
        am.alerts.clear()
        am.alert("a1a1a1a1a1a1a1a1", {"alertname": "DiskFull", "host": "db1"})  # the silence expired
        _check(app)
        again = _rows(app)[-1]
        assert (again["event_action"], again["dedup_key"], again["cause"]) == \
            ("trigger", trigger["dedup_key"], "reconciled: unmuted and still firing")
        assert not _check(app).stored  # open and firing again: nothing more


def test_an_inhibited_alert_is_acknowledged_naming_the_inhibiting_alert(make_app):
    app = _app(make_app, on_muted="acknowledge")
    with alerts_api() as (url, am):
        _post(app, url, _alert("Tgt", "b2b2b2b2b2b2b2b2"))
        am.alert("c3c3c3c3c3c3c3c3", {"alertname": "Src"})
        am.alert("b2b2b2b2b2b2b2b2", {"alertname": "Tgt"}, inhibited_by=["c3c3c3c3c3c3c3c3"])
        _check(app)
        ack = _rows(app)[-1]
        assert (ack["event_action"], ack["cause"]) == ("acknowledge", "reconciled: inhibited by c3c3c3c3c3c3c3c3 (Src)")


def test_muted_alerts_are_kept_by_default(make_app):
    app = _app(make_app)
    with alerts_api() as (url, am):
        _post(app, url, _alert("Quiet", "d4d4d4d4d4d4d4d4"))
        am.alert("d4d4d4d4d4d4d4d4", {"alertname": "Quiet"}, silenced_by=["s-2"])
        assert not _check(app).stored and not _check(app).stored
        assert [row["event_action"] for row in _rows(app)] == ["trigger"]


def test_a_gone_alert_is_resolved_only_at_the_second_check_even_across_a_restart(make_app):
    app = _app(make_app)
    with alerts_api() as (url, am):
        _post(app, url, _alert("Gone", "e5e5e5e5e5e5e5e5"))
        assert not _check(app).stored  # absent once
        with app.app_context():
            assert db.session.execute(sa.select(ReconcileWatch.misses)).scalar_one() == 1
        app.extensions.pop("test.reconciler")  # a new process: the count is in the store
        report = _check(app)
        assert len(report.stored) == 1
        resolve = _rows(app)[-1]
        assert resolve["event_action"] == "resolve" and resolve["cause"].startswith("reconciled: gone from ")
        assert not _check(app).stored  # resolved and forgotten
        with app.app_context():
            assert db.session.execute(sa.select(sa.func.count()).select_from(ReconcileWatch)).scalar_one() == 0


def test_an_alert_back_before_the_second_check_is_not_gone(make_app):
    app = _app(make_app)
    with alerts_api() as (url, am):
        _post(app, url, _alert("Flaky", "f6f6f6f6f6f6f6f6"))
        _check(app)  # absent once (Alertmanager restarting)
        am.alert("f6f6f6f6f6f6f6f6", {"alertname": "Flaky"})
        _check(app)
        am.alerts.clear()
        assert not _check(app).stored  # absent once again: the count started over
        assert [row["event_action"] for row in _rows(app)] == ["trigger"]


def test_alerts_of_a_route_with_one_dedup_key_per_group_are_left_alone(make_app):
    app = _app(make_app, dedup="group")
    with alerts_api() as (url, am):
        _post(app, url, _alert("Grouped", "3333333333333333"), _alert("Grouped", "4444444444444444", n="2"))
        am.alert("4444444444444444", {"alertname": "Grouped", "n": "2"})  # one still fires: the group is open
        assert not _check(app).stored and not _check(app).stored and not am.requests
        assert [row["event_action"] for row in _rows(app)] == ["trigger"]  # one for the group


def test_labels_match_when_the_fingerprint_differs(make_app):
    app = _app(make_app, on_muted="resolve")
    with alerts_api() as (url, am):
        _post(app, url, _alert("Relabelled", "1111111111111111", team="db"))
        am.alert("2222222222222222", {"alertname": "Relabelled", "team": "db"}, silenced_by=["s-3"])
        _check(app)
        assert _rows(app)[-1]["cause"] == "reconciled: silenced by s-3"  # the silence itself could not be read


@pytest.mark.parametrize("fault", [500, 401, "closed"])
def test_a_source_that_cannot_be_read_resolves_nothing_and_says_so(make_app, caplog, fault):
    app = _app(make_app)
    before = RECONCILE_ERRORS.labels("alertmanager")._value.get()
    with alerts_api(authorization="Bearer not-given" if fault == 401 else None) as (url, am):
        am.fault = 500 if fault == 500 else None
        _post(app, url, _alert("Blind", "7777777777777777"))
        if fault != "closed":
            reports = [_check(app) for _ in range(3)]
        if fault == 500:
            am.fault = None
            assert not _check(app).unavailable
            assert "reconciler: the alerts of alertmanager can be read again" in caplog.text
    if fault == "closed":
        reports = [_check(app) for _ in range(3)]
    assert not any(report.stored for report in reports)
    assert all(report.unavailable for report in reports)
    assert [row["event_action"] for row in _rows(app)] == ["trigger"]
    assert RECONCILE_ERRORS.labels("alertmanager")._value.get() == before + 3
    said = [record for record in caplog.records if "cannot read the alerts of alertmanager" in record.getMessage()]
    assert [record.levelname for record in said] == ["WARNING"]  # said once, not at every check
    with app.app_context():
        # unread checks count nothing; the one check that read (500 then recovered) found it gone once
        assert db.session.execute(sa.select(ReconcileWatch.misses)).scalar_one() == (1 if fault == 500 else 0)


def test_one_check_resolves_at_most_the_cap(make_app, caplog):
    app = make_app(ROUTES=[{"name": "am", "routing_key": ROUTING_KEY}], RELAY_RECONCILE_MAX_RESOLVES=2)
    with alerts_api() as (url, am):
        _post(app, url, *[_alert("Many", f"{i:016x}", n=str(i)) for i in range(3)])
        _check(app)
        with caplog.at_level(logging.WARNING, logger="relay.delivery.reconcile"):
            assert len(_check(app).stored) == 2
        assert "1 alert(s) left open this check: over RELAY_RECONCILE_MAX_RESOLVES (2)" in caplog.text
        assert len(_check(app).stored) == 1
        assert [row["event_action"] for row in _rows(app)] == ["trigger"] * 3 + ["resolve"] * 3


def test_the_credential_is_sent_and_never_shown(make_app, caplog, monkeypatch):
    token = "tok-" + secrets.token_hex(8)
    app = _app(make_app)
    with alerts_api(authorization=f"Bearer {token}") as (url, am):
        app.config["RELAY_ALERT_APIS"] = {"alertmanager": {"url": url.replace("http://", "http://u:pw-secret@"),
                                                           "bearer_token": token}}
        _post(app, "http://unreachable.invalid", _alert("Auth", "8888888888888888"))
        with caplog.at_level(logging.DEBUG):
            _check(app)
            am.fault = 503
            report = _check(app)
        assert am.requests[0] == ("/api/v2/alerts", f"Bearer {token}")  # the override URL, not externalURL
        assert report.unavailable == {f"{url}/api/v2": f"{url}/api/v2/alerts answered HTTP 503"}
        lines = json.dumps([finding.line() for finding in _check(app, dry_run=True).findings])
    for shown in (caplog.text, lines, json.dumps(_rows(app))):
        assert token not in shown and "pw-secret" not in shown


def test_dry_run_prints_what_a_check_would_do_and_changes_nothing(make_app):
    app = _app(make_app, on_muted="resolve")
    with alerts_api() as (url, am):
        _post(app, url, _alert("Dry", "9999999999999999"))
        am.alert("9999999999999999", {"alertname": "Dry"}, silenced_by=["s-9"])
        am.silences["s-9"] = {"id": "s-9", "createdBy": "bob", "comment": "deploy"}
        result = app.test_cli_runner().invoke(args=["relay", "reconcile", "--dry-run"])
        assert result.exit_code == 0, result.output
        (line,) = [json.loads(text) for text in result.output.splitlines()]
        assert line["action"] == "resolve" and line["cause"] == "reconciled: silenced by s-9 (bob: deploy)"
        assert line["found"] == MUTED and line["relay"] == OPEN and line["routing_key"] == "…rrrr"
        assert [row["event_action"] for row in _rows(app)] == ["trigger"]
        with app.app_context():
            assert db.session.execute(sa.select(sa.func.count()).select_from(ReconcileWatch)).scalar_one() == 0
        am.fault = 500
        failed = app.test_cli_runner().invoke(args=["relay", "reconcile", "--dry-run"])
        assert failed.exit_code == 1 and "answered HTTP 500" in failed.output
        (said,) = [line for line in failed.stderr.splitlines() if line.startswith("relay:")]
        assert said == ("relay: source not read, nothing would be resolved for its alerts: "
                        f"{url}/api/v2/alerts answered HTTP 500")
    assert app.test_cli_runner().invoke(args=["relay", "reconcile"]).exit_code == 2  # only --dry-run


def test_a_dry_run_with_nothing_to_reconcile_says_so(make_app):
    result = _app(make_app).test_cli_runner().invoke(args=["relay", "reconcile", "--dry-run"])
    assert result.exit_code == 0 and result.stdout == ""
    assert result.stderr == ("relay: no open alert to reconcile: none the relay triggered through Alertmanager or "
                             "Grafana is unresolved\n")


def test_grafana_is_asked_through_its_alertmanager_api_with_a_service_account_token(make_app):
    app = make_app(ROUTES=[{"name": "graf", "routing_key": ROUTING_KEY, "on_muted": "resolve"}])
    with alerts_api(authorization="Bearer glsa_token") as (url, grafana):
        app.config["RELAY_ALERT_APIS"] = {"grafana": {"url": url + "/", "bearer_token": "glsa_token"}}
        _post(app, None, source="grafana", body=fixture("grafana_unified_firing_docs.json"))
        grafana.alerts = fixture("grafana_alertmanager_api_alerts_docs.json")
        silence = fixture("grafana_alertmanager_api_silence_docs.json")
        grafana.silences[silence["id"]] = silence
        _check(app)
        _check(app)
        rows = _rows(app)
        assert [(row["event_action"], row["cause"]) for row in rows[2:]] == [
            ("resolve", f"reconciled: silenced by {silence['id']} (grace: memory upgrade on us-1)")]
        assert {path for path, _ in grafana.requests} == {
            "/api/alertmanager/grafana/api/v2/alerts", f"/api/alertmanager/grafana/api/v2/silence/{silence['id']}"}


def test_the_resolve_reaches_pagerduty_through_the_delivery_worker(delivering, pd):
    app = delivering(ROUTES=[{"name": "am", "routing_key": ROUTING_KEY, "on_muted": "resolve"}],
                     RELAY_RECONCILE_INTERVAL_SECONDS=0.2)
    pd.set_routing_keys([ROUTING_KEY])
    with alerts_api() as (url, am):
        am.alert("abababababababab", {"alertname": "Sent"}, silenced_by=["s-5"])
        _post(app, url, _alert("Sent", "abababababababab"))
        wait_until(lambda: [e["event_action"] for e in pd.accepted()] == ["trigger", "resolve"], timeout=15,
                   message="the reconciler's resolve delivered after its trigger")
    trigger, resolve = pd.accepted()
    assert resolve["dedup_key"] == trigger["dedup_key"]
    assert pd.alerts()[0]["status"] == "resolved"


def test_the_cause_is_shown_in_the_api_the_cli_and_the_page(make_app):
    app = _app(make_app, on_gone="acknowledge")
    with alerts_api() as (url, am):
        _post(app, url, _alert("Shown", "5555555555555555"))
        _check(app)
        _check(app)
    ack = _rows(app)[-1]
    cause = f"reconciled: gone from {url}/api/v2/alerts for 2 checks"
    assert (ack["event_action"], ack["cause"]) == ("acknowledge", cause)
    client = app.test_client()
    assert client.get(f"/api/v1/log/{ack['id']}").get_json()["cause"] == cause
    assert [entry["cause"] for entry in client.get("/api/v1/log").get_json()["items"]] == [cause, None]
    assert cause in client.get(f"/log/{ack['id']}").get_data(as_text=True)
    assert cause in client.get("/").get_data(as_text=True)
    with app.app_context():
        lines = log_table(log_entries(db.session, [db.session.get(IncidentLog, ack["id"])]), 400)
    assert f"[{cause}] Shown" in lines[1]
    printed = app.test_cli_runner().invoke(args=["relay", "log", "--json"])
    assert json.loads(printed.output.splitlines()[0])["cause"] == cause


def test_many_alerts_are_read_in_batches_and_only_open_ones_are_watched(make_app, monkeypatch):
    monkeypatch.setattr(reconcile, "LATEST_BATCH", 7)
    app = _app(make_app)
    with alerts_api() as (url, am):
        _post(app, url, *[_alert("Batch", f"{i:016x}", n=str(i)) for i in range(20)])
        resolved = {**_alert("Batch", f"{0:016x}", n="0"), "status": "resolved", "endsAt": "2026-11-26T11:00:00Z"}
        _post(app, url, resolved)  # resolved by its sender: not watched
        for i in range(1, 20, 2):
            am.alert(f"{i:016x}", {"alertname": "Batch", "n": str(i)})
        _check(app)
        with app.app_context():
            assert db.session.execute(sa.select(sa.func.count()).select_from(ReconcileWatch)).scalar_one() == 19
        assert len(_check(app).stored) == 9  # the even ones, but the one resolved already
    assert sorted(row["dedup_key"] for row in _rows(app) if row["cause"]) == \
        sorted(row["dedup_key"] for row in _rows(app)[2:20:2])
