"""Heartbeats (relay/delivery/heartbeats.py): a route's watchdog alerts and jobs' check-ins are heartbeats whose
absence pages, on both stores, judged by the evaluation duty run with a driven clock; one incident per heartbeat,
also with two instances; state in the API, CLI, metrics and page."""
import json
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from relay.cli.duties import heartbeat_table
from relay.delivery import duties, heartbeats
from relay.intake.routing import ConfigError
from relay.store.models import Heartbeat, IncidentLog, db, utcnow
from tests.helpers import alertmanager_notification, firing, wait_until

KEY = "0123456789abcdef0123456789abcdef"
JOB_KEY = "fedcba9876543210fedcba9876543210"
WATCHDOG_ROUTE = {"name": "watchdog", "matchers": ['alertname="Watchdog"'], "routing_key": KEY,
                  "heartbeat": {"within": "5m"}}
HOUR = timedelta(hours=1)
TEN_MINUTES = timedelta(minutes=10)


def watchdog_app(make_app, **heartbeat):
    route = {**WATCHDOG_ROUTE, "heartbeat": {"within": "5m", **heartbeat}}
    return make_app(ROUTES=[route], DEFAULT_ROUTE={"name": "default", "routing_key": "d" * 32})


def job_app(make_app, **job):
    spec = {"name": "backup", "every": "1h", "grace": "10m", "routing_key": JOB_KEY, **job}
    # Judged every 10 minutes, so a driven clock can cross hours in few turns.
    return make_app(HEARTBEATS=[{k: v for k, v in spec.items() if v is not None}],
                    RELAY_HEARTBEAT_CHECK_SECONDS=600)


def send_watchdog(client, external_url="http://am-1:9093", **labels):
    body = alertmanager_notification([firing("Watchdog", severity="none", **labels)])
    response = client.post("/webhooks/alertmanager", json={**body, "externalURL": external_url})
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def beating(app, external_url="http://am-1:9093", **labels):
    """Start the evaluation, then send one heartbeat; return when the evaluation started."""
    start = utcnow()
    evaluate(app, start)
    send_watchdog(app.test_client(), external_url, **labels)
    return start


def evaluate(app, now):
    """Run the evaluation duty once at a driven moment, as the duty runner would."""
    woken = []
    with app.app_context():
        heartbeats.duty(app.config).run(db.engine, now, lambda: woken.append(now))
    return woken


def watch(app, start, end, step=timedelta(seconds=15)):
    """Evaluate every step from start until end (inclusive), as a running duty would."""
    moment = start
    while moment < end:
        evaluate(app, moment)
        moment += step
    evaluate(app, end)


def log_rows(app):
    with app.app_context():
        return db.session.execute(select(IncidentLog.source, IncidentLog.event_action, IncidentLog.dedup_key,
                                         IncidentLog.summary, IncidentLog.route, IncidentLog.event)
                                  .order_by(IncidentLog.id)).all()


def states(app):
    with app.app_context():
        return {row.name: row.state for row in db.session.execute(select(Heartbeat)).scalars()}


# --- watchdog heartbeats -----------------------------------------------------------------------------

def test_a_watchdog_alert_is_a_heartbeat_not_an_incident_and_its_silence_pages_once_then_resolves(make_app):
    app = watchdog_app(make_app)
    client = app.test_client()
    start = utcnow()
    evaluate(app, start)  # the relay is watching
    answer = send_watchdog(client)
    assert answer["events"][0]["status"] == "heartbeat" and "log_id" not in answer["events"][0]
    assert log_rows(app) == []
    assert states(app) == {"watchdog http://am-1:9093": "up"}

    assert evaluate(app, start + timedelta(minutes=4, seconds=50)) == []  # within the window: nothing
    assert log_rows(app) == []
    assert evaluate(app, start + timedelta(minutes=5, seconds=10))  # past it: paged, delivery woken
    evaluate(app, start + timedelta(minutes=5, seconds=20))  # still silent: no second trigger
    rows = log_rows(app)
    assert [(r.source, r.event_action, r.route) for r in rows] == [("heartbeats", "trigger", "watchdog")]
    assert rows[0].summary.startswith("No heartbeat from Prometheus Alertmanager at http://am-1:9093 for 5m; last seen ")
    assert rows[0].event["payload"]["severity"] == "critical"
    assert states(app) == {"watchdog http://am-1:9093": "down"}

    send_watchdog(client)  # Prometheus is back
    rows = log_rows(app)
    assert [r.event_action for r in rows] == ["trigger", "resolve"] and rows[0].dedup_key == rows[1].dedup_key
    assert states(app) == {"watchdog http://am-1:9093": "up"}


def test_each_alertmanager_replica_is_its_own_heartbeat(make_app):
    app = watchdog_app(make_app)
    client = app.test_client()
    start = beating(app, "http://am-1:9093")
    send_watchdog(client, "http://am-2:9093")
    evaluate(app, start + timedelta(minutes=5, seconds=10))
    rows = log_rows(app)
    assert len(rows) == 2 and len({r.dedup_key for r in rows}) == 2  # both silent: two incidents
    send_watchdog(client, "http://am-2:9093")
    assert states(app) == {"watchdog http://am-1:9093": "down", "watchdog http://am-2:9093": "up"}


def test_heartbeats_per_label_set(make_app):
    app = watchdog_app(make_app, per=["cluster"], severity="error")
    client = app.test_client()
    start = beating(app, cluster="eu1")
    send_watchdog(client, "http://am-2:9093", cluster="eu1")  # another replica: the same heartbeat
    send_watchdog(client, cluster="us1")
    assert set(states(app)) == {"watchdog cluster=eu1", "watchdog cluster=us1"}
    evaluate(app, start + timedelta(minutes=5, seconds=10))
    assert {r.summary.split(";")[0] for r in log_rows(app)} == {"No heartbeat from cluster=eu1 for 5m",
                                                               "No heartbeat from cluster=us1 for 5m"}
    assert {r.event["payload"]["severity"] for r in log_rows(app)} == {"error"}


def test_a_relay_back_from_a_pause_gives_every_heartbeat_a_window_before_paging(make_app, caplog):
    app = watchdog_app(make_app)
    start = beating(app)
    evaluate(app, start + timedelta(seconds=15))
    back = start + HOUR  # the relay was stopped for an hour: the sender had no chance to check in
    evaluate(app, back)
    assert log_rows(app) == [] and states(app) == {"watchdog http://am-1:9093": "starting"}
    assert "not evaluated since" in caplog.text
    watch(app, back, back + timedelta(minutes=5))
    assert log_rows(app) == []
    evaluate(app, back + timedelta(minutes=5, seconds=1))  # a full window, and still nothing: paged
    assert [r.event_action for r in log_rows(app)] == ["trigger"]


def test_a_watchdog_silent_for_the_forget_age_is_forgotten_with_a_log_line(make_app, caplog):
    app = watchdog_app(make_app)
    app.config["RELAY_HEARTBEAT_FORGET_AFTER"] = timedelta(minutes=10)
    start = utcnow()
    send_watchdog(app.test_client())
    watch(app, start, start + timedelta(minutes=9, seconds=55), timedelta(seconds=20))
    assert states(app) == {"watchdog http://am-1:9093": "down"}
    evaluate(app, start + timedelta(minutes=10, seconds=5))
    assert states(app) == {}
    assert [r.event_action for r in log_rows(app)] == ["trigger", "resolve"]  # nothing else would close it
    assert "heartbeat watchdog http://am-1:9093 forgotten" in caplog.text


def test_the_heartbeat_option_is_checked_at_start_up(make_app):
    with pytest.raises(ConfigError, match=r"field 'heartbeat': within: 'soon' is not a duration such as 30s"):
        make_app(ROUTES=[{**WATCHDOG_ROUTE, "heartbeat": {"within": "soon"}}])
    with pytest.raises(ConfigError, match=r"field 'heartbeat': per: Unknown field|field 'heartbeat': pr: Unknown"):
        make_app(ROUTES=[{**WATCHDOG_ROUTE, "heartbeat": {"within": "5m", "pr": ["x"]}}])


def test_no_duty_while_nothing_declares_heartbeats(make_app):
    app = make_app()
    assert heartbeats.duty(app.config) is None
    assert heartbeats.duty(watchdog_app(make_app).config).name == "heartbeats"


# --- job heartbeats ----------------------------------------------------------------------------------

def job(app):
    return app.extensions["relay.heartbeats"]["backup"]


def check_in(app, signal, now, message=None):
    with app.app_context():
        return heartbeats.check_in(db.engine, job(app), signal, message, now, app.config["PAGERDUTY_EVENTS_URL"])


def test_a_job_on_time_stays_up_a_late_one_pages_after_its_grace_and_a_check_in_resolves(make_app):
    app = job_app(make_app)
    start = utcnow()
    evaluate(app, start)
    check_in(app, heartbeats.SUCCESS, start, "backed up 12 GB")
    watch(app, start, start + timedelta(minutes=59), TEN_MINUTES)
    check_in(app, heartbeats.SUCCESS, start + timedelta(minutes=59))  # on time
    watch(app, start + timedelta(minutes=59), start + timedelta(minutes=118), TEN_MINUTES)
    assert states(app) == {"backup": "up"} and log_rows(app) == []

    evaluate(app, start + timedelta(minutes=120))  # expected at 1:59: late, within its grace, not paged
    assert states(app) == {"backup": "late"} and log_rows(app) == []
    evaluate(app, start + timedelta(minutes=128, seconds=59))
    assert log_rows(app) == []
    evaluate(app, start + timedelta(minutes=129, seconds=1))  # past 1:59 + 10 m
    rows = log_rows(app)
    assert [(r.event_action, r.route) for r in rows] == [("trigger", "backup")]
    assert rows[0].summary.startswith("Job backup has not checked in: expected by ")

    row = check_in(app, heartbeats.SUCCESS, start + timedelta(minutes=131))
    assert row.state == "up" and row.next_expected == start + timedelta(minutes=191)
    assert [r.event_action for r in log_rows(app)] == ["trigger", "resolve"]


def test_a_job_reporting_failure_pages_at_once_and_a_start_changes_nothing(make_app):
    app = job_app(make_app, summary="Nightly backup failed or missing", severity="error")
    start = utcnow()
    evaluate(app, start)
    row = check_in(app, heartbeats.START, start, "starting")
    assert row.last_start == start and row.state == "starting" and log_rows(app) == []
    row = check_in(app, heartbeats.FAIL, start + timedelta(minutes=3), "disk full\nat /var/backups")
    assert row.state == "down" and row.last_message == "disk full\nat /var/backups"
    check_in(app, heartbeats.FAIL, start + timedelta(minutes=4), "disk still full")  # already paged
    rows = log_rows(app)
    assert [r.event_action for r in rows] == ["trigger"]
    assert rows[0].summary == "Nightly backup failed or missing"
    assert rows[0].event["payload"]["severity"] == "error"
    assert rows[0].event["payload"]["custom_details"]["last_message"] == "disk full\nat /var/backups"
    check_in(app, heartbeats.SUCCESS, start + timedelta(minutes=30))
    assert [r.event_action for r in log_rows(app)] == ["trigger", "resolve"]


def test_a_never_seen_job_is_judged_from_when_it_was_first_watched(make_app):
    app = job_app(make_app)
    start = utcnow()
    evaluate(app, start)
    assert states(app) == {"backup": "starting"}
    watch(app, start, start + timedelta(minutes=69), TEN_MINUTES)
    assert log_rows(app) == []
    evaluate(app, start + timedelta(minutes=70, seconds=1))
    assert [r.summary.split(";")[1].strip() for r in log_rows(app)] == [
        f"not seen since watched from {start.strftime('%Y-%m-%d %H:%M:%S')} UTC"]


def test_a_cron_job_in_a_time_zone_is_expected_by_the_wall_clock_across_a_dst_change(make_app):
    # Europe/Berlin moves to summer time on 2026-03-29 at 02:00: 03:00 local is 02:00 UTC the day before,
    # 01:00 UTC that day. A 24-hour period would wait until 02:30 UTC to page.
    app = job_app(make_app, every=None, cron="0 3 * * *", tz="Europe/Berlin", grace="30m")
    assert job(app).every is None
    ran = datetime(2026, 3, 28, 2, 5, tzinfo=timezone.utc)  # Saturday's run checked in at 03:05 CET
    assert job(app).expected_after(ran) == datetime(2026, 3, 29, 1, 0, tzinfo=timezone.utc)
    evaluate(app, ran)
    check_in(app, heartbeats.SUCCESS, ran)
    watch(app, ran, datetime(2026, 3, 29, 1, 29, tzinfo=timezone.utc), TEN_MINUTES)
    assert states(app) == {"backup": "late"} and log_rows(app) == []
    evaluate(app, datetime(2026, 3, 29, 1, 30, 1, tzinfo=timezone.utc))
    assert [r.event_action for r in log_rows(app)] == ["trigger"]
    assert "expected by 2026-03-29 01:00:00 UTC" in log_rows(app)[0].summary


@pytest.mark.parametrize("change, problem", [
    ({"every": None}, "HEARTBEATS 'backup', field 'every': give exactly one of every, cron"),
    ({"cron": "0 3 * *"}, "HEARTBEATS 'backup', field 'every'"),
    ({"every": None, "cron": "0 61 * * *"}, "HEARTBEATS 'backup', field 'cron'"),
    ({"tz": "Mars/Olympus"}, "HEARTBEATS 'backup', field 'tz': 'Mars/Olympus' is not a time zone"),
    ({"grace": "-5m"}, "HEARTBEATS 'backup', field 'grace'"),
    ({"routing_key": "short"}, "HEARTBEATS 'backup', field 'routing_key': the key has 5 characters"),
    ({"name": "a/b"}, "HEARTBEATS 'a/b', field 'name'"),
    ({"evry": "1h"}, "HEARTBEATS 'backup', field 'evry': Unknown field."),
])
def test_a_bad_job_stops_start_up_naming_it(make_app, change, problem):
    spec = {k: v for k, v in {"name": "backup", "every": "1h", "routing_key": JOB_KEY, **change}.items()
            if v is not None}
    with pytest.raises(ConfigError) as caught:
        make_app(HEARTBEATS=[spec])
    assert str(caught.value).startswith(problem)
    assert JOB_KEY not in str(caught.value)


def test_check_ins_over_http_keep_the_body_and_are_authenticated_like_webhooks(make_app):
    app = make_app(HEARTBEATS=[{"name": "backup", "every": "1h", "routing_key": JOB_KEY}],
                   HEARTBEATS_AUTH={"bearer_token": "beat-token"})
    client = app.test_client()
    assert client.post("/heartbeats/backup").status_code == 401
    auth = {"Authorization": "Bearer beat-token"}
    response = client.post("/heartbeats/backup/start", headers=auth, data="begin")
    assert response.status_code == 200 and response.get_json()["last_start"]
    # curl --data-binary sends a form's content type: the body is still kept as it came
    response = client.post("/heartbeats/backup", headers=auth, data="12 GB in 4 min&more=1",
                           content_type="application/x-www-form-urlencoded")
    answer = response.get_json()
    assert response.status_code == 200 and answer["state"] == "up" and answer["last_message"] == "12 GB in 4 min&more=1"
    assert answer["routing_key"] == "…3210" and JOB_KEY not in response.get_data(as_text=True)
    response = client.post("/heartbeats/restore", headers=auth)
    assert response.status_code == 404
    assert response.get_json()["error"]["message"] == "no heartbeat named 'restore' in HEARTBEATS; known: backup"
    assert client.post("/heartbeats/backup/finish", headers=auth).status_code == 404
    assert client.get("/heartbeats/backup", headers=auth).status_code == 405
    response = client.post("/heartbeats/backup/fail", headers=auth, data="exit 2")
    assert response.get_json()["state"] == "down"
    assert [r.event_action for r in log_rows(app)] == ["trigger"]
    with pytest.raises(ConfigError, match=r"^HEARTBEATS_AUTH: basic_user is set without basic_password"):
        make_app(HEARTBEATS_AUTH={"basic_user": "cron"})


# --- where operators look ----------------------------------------------------------------------------

def test_the_cli_says_when_no_heartbeat_is_watched(make_app):
    result = make_app().test_cli_runner().invoke(args=["relay", "heartbeats", "--json"])
    assert result.exit_code == 0 and result.stdout == ""
    assert result.stderr.startswith("relay: no heartbeat is watched: HEARTBEATS jobs and routes with a heartbeat")


def test_state_in_the_api_the_cli_the_metrics_and_the_page(make_app):
    app = make_app(ROUTES=[WATCHDOG_ROUTE], HEARTBEATS=[{"name": "backup", "every": "1h", "routing_key": JOB_KEY}])
    client = app.test_client()
    evaluate(app, utcnow())
    send_watchdog(client)
    check_in(app, heartbeats.FAIL, utcnow(), "exit 2")

    items = client.get("/api/v1/heartbeats").get_json()["items"]
    assert [(i["name"], i["kind"], i["state"], i["up"]) for i in items] == [
        ("backup", "job", "down", False), ("watchdog http://am-1:9093", "watchdog", "up", True)]
    assert items[1]["next_expected"] and items[1]["subject"] == "Prometheus Alertmanager at http://am-1:9093"
    assert KEY not in json.dumps(items) and JOB_KEY not in json.dumps(items)

    with app.app_context():
        (failed_id,) = db.session.execute(select(IncidentLog.id)).scalars().all()
        db.session.commit()
    page = client.get(f"/log/{failed_id}").get_data(as_text=True)
    assert "for a heartbeat that went silent" in page and "came in through the API" not in page

    result = app.test_cli_runner().invoke(args=["relay", "heartbeats", "--json"])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["state"] for line in result.output.splitlines()] == ["down", "up"]
    with app.app_context(), db.engine.connect() as conn:
        table = heartbeat_table(heartbeats.overview(conn))
    assert table[0].split() == ["NAME", "KIND", "STATE", "LAST", "SEEN", "NEXT", "EXPECTED"]
    assert table[2].startswith("watchdog http://am-1:9093 watchdog up ")

    metrics = {(s.name, s.labels.get("heartbeat")): s.value
               for family in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))
               for s in family.samples if s.name.startswith("relay_heartbeat")}
    assert metrics[("relay_heartbeat_up", "backup")] == 0
    assert metrics[("relay_heartbeat_up", "watchdog http://am-1:9093")] == 1
    assert abs(metrics[("relay_heartbeat_last_seen_timestamp_seconds", "backup")] - utcnow().timestamp()) < 60

    page = client.get("/").get_data(as_text=True)
    assert "Heartbeats" in page and "watchdog http://am-1:9093" in page and 'data-state="down"' in page
    assert KEY not in page and JOB_KEY not in page


# --- one place at a time, and through real delivery ----------------------------------------------------

def test_two_instances_evaluating_one_store_open_one_incident(make_app):
    app = watchdog_app(make_app)
    other = watchdog_app(make_app)
    start = beating(app)
    late = start + timedelta(minutes=5, seconds=1)
    barrier = threading.Barrier(4)

    def judge(instance):
        barrier.wait()
        evaluate(instance, late)

    # No lease here: the evaluation itself must never open a second incident.
    threads = [threading.Thread(target=judge, args=(instance,)) for instance in (app, other, app, other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [r.event_action for r in log_rows(app)] == ["trigger"]

    # And as they really run: two duty runners, the lease keeping the duty in one of them.
    send_watchdog(app.test_client())
    runs = []
    with app.app_context():
        db.session.execute(Heartbeat.__table__.update().values(last_seen=utcnow() - HOUR, watched_since=utcnow() - HOUR,
                                                               checked_at=utcnow()))
        db.session.commit()
    runners = [duties.DutyRunner(instance, name, [duties.Duty("heartbeats", 0.05, _counting(instance, name, runs))],
                                 lambda: None).start() for instance, name in ((app, "a"), (other, "b"))]
    try:
        wait_until(lambda: len(runs) >= 10, timeout=10, message="ten turns")
        assert len(set(runs)) == 1  # (once the holder stops, the other takes over: checked before)
    finally:
        for runner in runners:
            runner.stop()
    assert [r.event_action for r in log_rows(app)] == ["trigger", "resolve", "trigger"]


def _counting(app, name, runs):
    duty = heartbeats.duty(app.config)

    def run(engine, now, wake):
        runs.append(name)
        duty.run(engine, now, wake)
    return run


def test_the_delivery_process_judges_and_pages_through_the_simulator(delivering, pd):
    # The delivery worker runs the duty itself, on the real clock: a 1 s window, judged every 0.2 s.
    app = delivering(ROUTES=[{**WATCHDOG_ROUTE, "heartbeat": {"within": "1s"}}], RELAY_HEARTBEAT_CHECK_SECONDS=0.2)
    sent = time.monotonic()  # before: the heartbeat is seen while the webhook is handled
    send_watchdog(app.test_client())
    wait_until(lambda: [e["event_action"] for e in pd.accepted()] == ["trigger"], message="the trigger sent")
    assert 1 <= time.monotonic() - sent < 5
    trigger = pd.accepted()[0]
    assert trigger["routing_key"] == KEY and trigger["payload"]["source"] == "relay"
    assert trigger["payload"]["summary"].startswith("No heartbeat from Prometheus Alertmanager at http://am-1:9093 "
                                                    "for 1s; last seen ")
    send_watchdog(app.test_client())
    wait_until(lambda: [e["event_action"] for e in pd.accepted()][:2] == ["trigger", "resolve"],
               message="the resolve sent")
    assert pd.accepted()[1]["dedup_key"] == trigger["dedup_key"]


def test_the_example_configuration_loads_and_watches_as_documented(make_app, monkeypatch):
    monkeypatch.setenv("RELAY_CONFIG", str(Path(__file__).resolve().parents[1] / "examples" / "heartbeats.py"))
    monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", KEY)
    app = make_app()
    assert sorted(app.extensions["relay.heartbeats"]) == ["nightly-backup", "sync-invoices"]
    send_watchdog(app.test_client())
    with app.app_context(), db.engine.connect() as conn:
        assert [(b["name"], b["state"]) for b in heartbeats.overview(conn)] == [
            ("watchdog http://am-1:9093", "up")]


def test_check_config_lists_the_heartbeats_keys_masked(make_app):
    app = make_app(ROUTES=[WATCHDOG_ROUTE], HEARTBEATS=[
        {"name": "backup", "cron": "0 3 * * *", "tz": "Europe/Berlin", "grace": "30m", "routing_key": JOB_KEY},
        {"name": "sync", "every": "1h", "routing_key": JOB_KEY}])
    result = app.test_cli_runner().invoke(args=["relay", "check-config"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert 'watchdog: alertname="Watchdog" → key …cdef, dedup alert, heartbeat within 5m' in lines
    assert "heartbeat backup: cron '0 3 * * *' in Europe/Berlin, grace 30m → key …3210" in lines
    assert "heartbeat sync: every 1h, grace 5m → key …3210" in lines
    assert JOB_KEY not in result.output and KEY not in result.output


def test_a_job_taken_out_of_the_configuration_is_forgotten_and_its_incident_resolved(make_app, caplog):
    app = job_app(make_app)
    start = utcnow()
    evaluate(app, start)
    check_in(app, heartbeats.FAIL, start, "exit 1")
    app.config["HEARTBEATS"] = []  # the next deploy no longer has it
    app.config["ROUTES"] = [WATCHDOG_ROUTE]  # (something still declares heartbeats, so the duty runs)
    evaluate(app, start + timedelta(seconds=15))
    assert states(app) == {}
    assert [r.event_action for r in log_rows(app)] == ["trigger", "resolve"]
    assert "heartbeat backup forgotten" in caplog.text
