"""The storm valve (issue 14 item 3): past a route's max_triggers new alerts in its window, further new alerts are
held (kept in the log, never sent, nor their resolves) and one summary incident stands for them; on SQLite and
PostgreSQL, through the real webhook, and through the delivery worker to the simulator over its socket."""
import threading
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from relay.delivery import duties
from relay.delivery import storm as summary
from relay.intake.routing import ConfigError, load_route
from relay.store import storm
from relay.store.models import IncidentLog, Storm, StormTrigger, db, utcnow
from tests.helpers import wait_until
from tests.test_collapse import alert as one_alert
from tests.test_collapse import post
from tests.test_metrics import delta, scrape, value

KEY = "5707a5707a5707a5707a5707a5707a57"
OTHER_KEY = "0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c"
VALVE = {"max_triggers": 3, "per": "1m", "count_by": "cluster"}


def routes(valve=VALVE):
    """A route with a storm valve for team "web", and a default route without one."""
    return {"ROUTES": [{"name": "web", "matchers": ['team="web"'], "routing_key": KEY, "storm": valve}],
            "DEFAULT_ROUTE": {"name": "default", "routing_key": OTHER_KEY}}


def alert(number: int, name: str = "Down", status: str = "firing", team: str = "web", cluster: str = "eu") -> dict:
    """Alertmanager's alert for host number, on the route with the valve unless another team is given."""
    return one_alert(name, status, f"host {number} down", team=team, cluster=cluster, host=f"h{number}")


def rows(app, **where) -> list:
    with app.app_context():
        found = db.session.execute(select(IncidentLog).filter_by(**where).order_by(IncidentLog.id)).scalars().all()
        db.session.expunge_all()  # loaded, and kept so once the session ends
        db.session.remove()
        return found


def run_duty(app, now):
    """One turn of the summary incident's duty at a driven moment; return whether it woke delivery."""
    woken = []
    with app.app_context():
        summary.run(db.engine, now, lambda: woken.append(1))
    return bool(woken)


def current_storm(app):
    with app.app_context(), db.engine.connect() as conn:
        return storm.current(conn, "web")


@pytest.fixture
def relay(make_app):
    """An app whose rows nobody sends: what is stored, and how, is all there is to see."""
    return make_app(**routes())


@pytest.fixture
def http(relay):
    return relay.test_client()


# --- the option ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("valve, message", [
    ({"per": "1m"}, "route 'web', field 'storm': max_triggers: Missing data for required field."),
    ({"max_triggers": 0}, "route 'web', field 'storm': max_triggers: Must be greater than or equal to 1."),
    ({"max_triggers": "50"}, "route 'web', field 'storm': max_triggers: Not a valid integer."),
    ({"max_triggers": 5, "per": "soon"}, "route 'web', field 'storm': per: 'soon' is not a duration such as 30s"),
    ({"max_triggers": 5, "per": "0s"}, "route 'web', field 'storm': per: must be longer than 0s"),
    ({"max_triggers": 5, "count_by": ""}, "route 'web', field 'storm': count_by: Length must be between 1 and 255."),
    ({"max_triggers": 5, "every": "1m"}, "route 'web', field 'storm': every: Unknown field."),
])
def test_a_bad_storm_option_is_refused_naming_it(valve, message):
    with pytest.raises(ConfigError) as refused:
        load_route({"name": "web", "routing_key": KEY, "storm": valve})
    assert str(refused.value).startswith(message)


def test_the_valve_is_off_by_default_and_read_with_its_window():
    assert load_route({"name": "web", "routing_key": KEY}).storm is None
    valve = load_route({"name": "web", "routing_key": KEY, "storm": {"max_triggers": 50}}).storm
    assert (valve.max_triggers, valve.per_seconds, valve.count_by) == (50, 60.0, None)
    no_reconciler = {"RELAY_RECONCILE_INTERVAL_SECONDS": 0}
    assert duties.enabled({"ROUTES": [], "DEFAULT_ROUTE": {"name": "d", "routing_key": KEY}, **no_reconciler}) == []
    (offered,) = duties.enabled({**routes({"max_triggers": 5, "per": "20s"}), **no_reconciler})
    assert (offered.name, offered.every) == ("storm-valve", 5.0)


# --- the decision at intake ---------------------------------------------------------------------------------------

def test_past_max_triggers_new_alerts_are_held_and_say_why(relay, http):
    events = post(http, *(alert(n) for n in range(5)))
    assert [event.get("status") for event in events] == [None, None, None, "held", "held"]
    assert events[3]["problem"] == "held: storm on route web (more than 3 new alerts in 1m); not sent"
    assert [row.status for row in rows(relay, source="alertmanager")] == ["pending"] * 3 + ["held"] * 2
    assert current_storm(relay).started_at is not None


def test_the_count_holds_across_webhooks_and_leaves_other_routes_alone(relay, http):
    for pair in range(3):
        post(http, alert(2 * pair), alert(2 * pair + 1))
    post(http, *(alert(n, team="db") for n in range(10)))  # the default route has no valve
    assert [row.status for row in rows(relay, source="alertmanager", route="web")] == ["pending"] * 3 + ["held"] * 3
    assert {row.status for row in rows(relay, route="default")} == {"pending"}


def test_a_held_alert_stays_held_its_resolve_too_and_firing_again_it_is_new(relay, http):
    post(http, *(alert(n) for n in range(4)))
    (repeat,) = post(http, alert(3))
    assert repeat["status"] == "held" and "its alert was held by the storm valve" in repeat["problem"]
    run_duty(relay, utcnow() + timedelta(minutes=2))
    assert current_storm(relay) is None
    (after_storm,) = post(http, alert(3))  # still firing after the storm: not sent later either
    assert after_storm["status"] == "held"
    (resolve,) = post(http, alert(3, status="resolved"))
    assert resolve["status"] == "held"
    (again,) = post(http, alert(3) | {"startsAt": "2026-11-26T11:00:00Z"})  # over and firing again: a new alert
    assert "status" not in again
    with relay.app_context():
        held = db.session.execute(select(StormTrigger.held).order_by(StormTrigger.id)).scalars().all()
    assert held == [False]  # counted (the storm's counts are forgotten once it is over); repeats and resolves not


def test_alerts_paged_before_the_storm_update_and_resolve_as_usual(relay, http):
    (paged,) = post(http, alert(0))
    with relay.app_context():
        db.session.execute(update(IncidentLog).where(IncidentLog.id == paged["log_id"]).values(status="delivered"))
        db.session.commit()
    post(http, *(alert(n) for n in range(1, 10)))
    (changed,) = post(http, alert(0) | {"annotations": {"summary": "host 0 still down"}})
    (resolve,) = post(http, alert(0, status="resolved"))
    assert "status" not in changed and "status" not in resolve  # to be sent
    assert rows(relay, id=resolve["log_id"])[0].status == "pending"


def test_the_window_slides(relay, http):
    post(http, *(alert(n) for n in range(4)))
    with relay.app_context():  # a minute and more goes by
        db.session.execute(update(StormTrigger).values(created_at=utcnow() - timedelta(seconds=61)))
        db.session.commit()
    events = post(http, alert(10), alert(11), alert(12), alert(13))
    assert [event.get("status") for event in events] == [None, None, None, "held"]


def test_two_instances_deciding_at_once_page_no_more_than_max_triggers(make_app):
    first = make_app(**routes({"max_triggers": 20, "per": "1m"}))
    second = make_app(**routes({"max_triggers": 20, "per": "1m"}))  # another instance on the same store
    start = threading.Barrier(4)
    problems = []

    def send(app, offset):
        client = app.test_client()
        start.wait()
        try:
            for batch in range(10):
                post(client, *(alert(offset + 3 * batch + n) for n in range(3)))
        except AssertionError as exc:
            problems.append(exc)

    threads = [threading.Thread(target=send, args=(app, 1000 * n)) for n, app in
               enumerate([first, second, first, second])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert problems == []
    found = [row.status for row in rows(first, source="alertmanager")]
    assert len(found) == 120 and found.count("pending") == 20 and found.count("held") == 100


# --- the summary incident -----------------------------------------------------------------------------------------

def test_the_summary_is_triggered_updated_at_most_once_a_minute_and_resolved(relay, http):
    post(http, *(alert(n, name="Down" if n % 3 else "Slow", cluster=f"c{n % 2}") for n in range(9)))
    (first,) = rows(relay, source="storm")  # triggered at once, by the webhook that began the storm
    t0 = current_storm(relay).summary_at
    assert not run_duty(relay, t0)
    assert (first.event_action, first.dedup_key, first.route, first.routing_key) == (
        "trigger", "relay-storm-web", "web", KEY)
    assert first.summary == "storm on route web: 6 alerts held, top alertnames Down (4), Slow (2)"
    details = first.event["payload"]["custom_details"]
    assert details["by_alertname"] == {"Down": 4, "Slow": 2} and details["held_alerts"] == 6
    assert details["by_cluster"] == {"c0": 3, "c1": 3}
    assert details["valve"] == "more than 3 new alerts in 1m"

    post(http, alert(20), alert(21))
    with relay.app_context():  # held alerts go on arriving until t0 + 50 s
        db.session.execute(update(Storm).values(last_held_at=t0 + timedelta(seconds=50)))
        db.session.commit()
    assert not run_duty(relay, t0 + timedelta(seconds=30))  # grown, but updated less than a minute ago
    assert run_duty(relay, t0 + timedelta(seconds=61))
    update_row = rows(relay, source="storm")[-1]
    assert update_row.event_action == "trigger" and update_row.event["payload"]["custom_details"]["held_alerts"] == 8
    assert not run_duty(relay, t0 + timedelta(seconds=100))  # unchanged: nothing to say

    last_held = current_storm(relay).last_held_at
    assert not run_duty(relay, last_held + timedelta(seconds=59))  # a minute without a held alert not yet over
    assert run_duty(relay, last_held + timedelta(seconds=60))
    resolve = rows(relay, source="storm")[-1]
    assert (resolve.event_action, resolve.dedup_key) == ("resolve", "relay-storm-web")
    assert current_storm(relay) is None
    assert len(rows(relay, source="storm")) == 3


def test_a_burst_over_within_the_minute_still_tells_pagerduty_its_final_counts(relay, http):
    for n in range(8):  # Alertmanager sends a burst one group per webhook: the storm begins with one held alert
        post(http, alert(n, name="Down" if n % 2 else "Slow"))
    (first,) = rows(relay, source="storm")
    assert first.summary == "storm on route web: 1 alert held, top alertnames Down (1)"
    last_held = current_storm(relay).last_held_at
    assert run_duty(relay, last_held + timedelta(seconds=60))  # over before a minute allowed an update
    final, resolve = rows(relay, source="storm")[1:]
    assert (final.event_action, final.dedup_key) == ("trigger", "relay-storm-web")
    assert final.summary == "storm on route web: 5 alerts held, top alertnames Down (3), Slow (2)"
    assert final.event["payload"]["custom_details"]["held_alerts"] == 5
    assert (resolve.event_action, resolve.dedup_key, resolve.id > final.id) == ("resolve", "relay-storm-web", True)


def test_counts_past_their_window_are_forgotten_but_a_running_storm_keeps_its_tally(relay, http):
    post(http, *(alert(n) for n in range(5)))
    later = utcnow() + timedelta(minutes=5)
    with relay.app_context():
        db.session.execute(update(Storm).values(last_held_at=later))  # the storm goes on
        db.session.commit()
    run_duty(relay, later)
    with relay.app_context():
        assert db.session.execute(select(StormTrigger.held)).scalars().all() == [True, True]
        db.session.commit()
    run_duty(relay, later + timedelta(minutes=2))  # over: resolved, and its tally forgotten
    with relay.app_context():
        assert db.session.execute(select(StormTrigger)).scalars().all() == []
        db.session.commit()


def test_metrics_and_the_log_show_the_storm(relay, http):
    before = scrape(http)
    post(http, *(alert(n) for n in range(5)))
    after = scrape(http)
    assert delta(before, after, "relay_storm_held_total", route="web") == 2
    assert value(after, "relay_storm_active", route="web") == 1
    page = http.get("/?status=held").get_data(as_text=True)
    assert page.count('class="badge badge-held"') >= 2 and "held: storm on route web" in page
    listed = relay.test_cli_runner().invoke(args=["relay", "log", "--status", "held", "--json"])
    assert listed.exit_code == 0 and listed.output.count('"status": "held"') == 2
    run_duty(relay, utcnow() + timedelta(minutes=2))
    assert value(scrape(http), "relay_storm_active", route="web") == 0


def test_the_summary_rows_page_says_the_relay_made_it(relay, http):
    post(http, *(alert(n) for n in range(5)))
    (summary_row,) = rows(relay, source="storm")
    page = http.get(f"/log/{summary_row.id}").get_data(as_text=True)
    assert "the summary incident of the route&#39;s storm valve" in page
    assert "came in through the API or the CLI" not in page


# --- through the delivery worker to the simulator -----------------------------------------------------------------

def test_a_burst_pages_max_triggers_and_one_storm_incident_and_no_held_resolve(delivering, pd):
    app = delivering(**routes({"max_triggers": 20, "per": "4s"}))
    client = app.test_client()
    burst = [alert(n, name=f"Down{n % 4}") for n in range(200)]
    for start in range(0, 200, 50):
        post(client, *burst[start:start + 50])

    def sent(action):
        return [event for event in pd.accepted() if event["event_action"] == action]

    def of_storm(events):
        return [event for event in events if event["dedup_key"] == "relay-storm-web"]

    wait_until(lambda: of_storm(sent("resolve")), timeout=30, message="the storm incident resolved")
    triggers = sent("trigger")
    assert len(triggers) == 20 + 2  # the alerts paged before the valve closed, and the storm incident twice:
    storm_trigger, final = of_storm(triggers)
    # sent at once by the first webhook past the valve: its 30 held alerts; at most once a minute after that, and
    # with the final counts as it ends (4 s later here)
    assert storm_trigger["payload"]["summary"] == ("storm on route web: 30 alerts held, top alertnames "
                                                  "Down0 (8), Down1 (8), Down2 (7) …")
    assert final["payload"]["summary"] == ("storm on route web: 180 alerts held, top alertnames "
                                           "Down0 (45), Down1 (45), Down2 (45) …")

    for start in range(0, 200, 50):
        post(client, *(entry | {"status": "resolved", "endsAt": "2026-11-26T10:05:00Z"}
                       for entry in burst[start:start + 50]))
    wait_until(lambda: not rows(app, status="pending"), timeout=20, message="every resolve sent")
    assert len(sent("resolve")) == 1 + 20  # the storm's, and those of the alerts that were paged
    assert len(sent("trigger")) == 22
    assert len(rows(app, status="held")) == 180 + 180  # every held alert's trigger and resolve, kept in the log


def test_a_templated_route_summarizes_on_each_key_it_held_alerts_for_and_never_shows_a_key(make_app):
    app = make_app(ROUTES=[{"name": "web", "routing_key_template": "{{ labels.pd_key }}",
                            "storm": {"max_triggers": 1, "count_by": "pd_key"}}], DEFAULT_ROUTE=None)
    client = app.test_client()
    post(client, *(alert(n) | {"labels": {**alert(n)["labels"], "pd_key": key}}
                   for n, key in enumerate([KEY, KEY, OTHER_KEY])))
    summaries = rows(app, source="storm")
    assert sorted(row.routing_key for row in summaries) == sorted([KEY, OTHER_KEY])
    details = summaries[0].event["payload"]["custom_details"]
    assert details["by_pd_key"] == {"…" + KEY[-4:]: 1, "…" + OTHER_KEY[-4:]: 1}
    assert KEY not in str(summaries[0].event) and OTHER_KEY not in str(summaries[1].event)
