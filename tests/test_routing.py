"""Routes from config.py: loading, validation errors that name route and field, and choosing routes."""
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from relay.intake.alert import FIRING, Alert
from relay.intake.matchers import Matcher
from relay.intake.render import DEFAULT_TEMPLATES, DEFAULTS, alert_context, compile_template, render, render_macros
from relay.intake.routing import ConfigError, load_route, load_routing

KEY = "0123456789abcdef0123456789abcdef"


def route(name="r", **options):
    """A route dict with a literal routing key unless the options give another way."""
    keyed = {"routing_key", "routing_key_env", "routing_key_template"} & set(options)
    return {"name": name, **({} if keyed else {"routing_key": KEY}), **options}


def alert(**labels):
    return Alert(source="alertmanager", status=FIRING, labels=labels)


def names(routes):
    return [r.name for r in routes]


# --- loading -----------------------------------------------------------------------------------

def test_minimal_route_gets_every_default():
    loaded = load_route({"name": "all", "routing_key": KEY})
    assert loaded.name == "all" and loaded.matchers == [] and loaded.routing_key == KEY
    assert loaded.routing_key_template is None
    assert (loaded.severity_labels, loaded.severity_map, loaded.default_severity) == \
        (("severity", "priority"), {}, "error")
    assert (loaded.builtin_severities, loaded.no_data_severity) == (True, "warning")
    assert (loaded.dedup, loaded.dedup_template) == ("alert", None)
    assert loaded.templates == {} and loaded.custom_details is None and loaded.continue_ is False


def test_every_option_is_loaded_and_compiled():
    loaded = load_route({
        "name": "db",
        "matchers": ['team="db"', '{env=~"prod|staging", severity!="info"}'],
        "routing_key_env": "PD_DB_KEY",
        "severity_label": "priority",
        "severity_map": {" P1 ": "critical", "P3": "warning"},
        "default_severity": "warning",
        "dedup": "{{ labels.alertname }}/{{ labels.instance }}",
        "templates": {"summary": "{{ labels.alertname }} on {{ labels.instance }}", "class": "db"},
        "custom_details": {"team": "{{ labels.team }}"},
        "continue": True,
    }, environ={"PD_DB_KEY": KEY})
    assert loaded.matchers == [Matcher("team", "=", "db"), Matcher("env", "=~", "prod|staging"),
                               Matcher("severity", "!=", "info")]
    assert loaded.routing_key == KEY and loaded.severity_labels == ("priority",)
    assert loaded.severity_map == {"p1": "critical", "p3": "warning"}
    assert loaded.default_severity == "warning" and loaded.dedup == "template" and loaded.continue_ is True
    assert loaded.dedup_template.render(labels={"alertname": "A", "instance": "i"}) == "A/i"
    assert sorted(loaded.templates) == ["class", "summary"] and list(loaded.custom_details) == ["team"]


def test_routing_key_template_is_compiled_and_no_fixed_key_kept():
    loaded = load_route({"name": "by-label", "routing_key_template": "{{ labels.pd_key }}"})
    assert loaded.routing_key is None
    assert loaded.routing_key_template.render(labels={"pd_key": "abc"}) == "abc"


def test_dedup_group_is_accepted():
    assert load_route(route(dedup="group")).dedup == "group"


@pytest.mark.parametrize("options, field, reason", [
    ({"matchers": ["team"]}, "matchers", "missing operator after 'team'"),
    ({"matchers": ['1team="db"']}, "matchers", "bad label name '1team'"),
    ({"matchers": ['team=="db"']}, "matchers", "unescaped double quote"),
    ({"matchers": ['env=~"prod|("']}, "matchers", "bad regex 'prod|('"),
    ({"matchers": 'team="db"'}, "matchers", "Not a valid list"),
    ({"matchers": [5]}, "matchers", "Not a valid string"),
    ({"templates": {"summary": "{{ labels.alertname "}}, "templates.summary", "invalid template"),
    ({"templates": {"title": "x"}}, "templates", "Must be one of"),
    ({"custom_details": {"team": "{% if %}"}}, "custom_details.team", "invalid template"),
    ({"routing_key_template": "{{ labels.key"}, "routing_key_template", "invalid template"),
    ({"dedup": "per-alert"}, "dedup", "'per-alert' is not 'alert', 'group' or a template"),
    ({"dedup": "{{ labels.x }"}, "dedup", "invalid template"),
    ({"default_severity": "urgent"}, "default_severity", "Must be one of: critical, error, warning, info"),
    ({"default_severity": "Critical"}, "default_severity", "Must be one of"),
    ({"severity_map": {"page": "high"}}, "severity_map", "Must be one of: critical, error, warning, info"),
    ({"matcher": ['team="db"']}, "matcher", "Unknown field"),
    ({"continue_": True}, "continue_", "Unknown field"),
])
def test_bad_route_is_an_error_naming_route_and_field(options, field, reason):
    raw = route("payments", **options)
    with pytest.raises(ConfigError) as caught:
        load_routing([raw], None, environ={})
    message = str(caught.value)
    assert message.startswith(f"route {raw['name']!r}, field {field!r}: "), message
    assert reason in message


def test_missing_environment_variable_is_named():
    with pytest.raises(ConfigError) as caught:
        load_routing([route("db", routing_key_env="PD_DB_KEY")], None, environ={"OTHER": "x"})
    assert str(caught.value) == "route 'db', field 'routing_key_env': environment variable PD_DB_KEY is not set"


def test_empty_environment_variable_counts_as_missing():
    with pytest.raises(ConfigError, match="PD_DB_KEY is not set"):
        load_routing([route("db", routing_key_env="PD_DB_KEY")], None, environ={"PD_DB_KEY": ""})


def test_routing_key_from_environment_is_read_at_load():
    routing = load_routing([route("db", routing_key_env="PD_DB_KEY")], None, environ={"PD_DB_KEY": KEY})
    assert routing.routes[0].routing_key == KEY


@pytest.mark.parametrize("keys", [
    {},
    {"routing_key": KEY, "routing_key_env": "PD_KEY"},
    {"routing_key": KEY, "routing_key_template": "{{ labels.k }}"},
    {"routing_key_env": "PD_KEY", "routing_key_template": "{{ labels.k }}"},
    {"routing_key": KEY, "routing_key_env": "PD_KEY", "routing_key_template": "{{ labels.k }}"},
])
def test_exactly_one_way_to_the_routing_key(keys):
    with pytest.raises(ConfigError) as caught:
        load_route({"name": "ops", **keys}, environ={"PD_KEY": KEY})
    assert str(caught.value) == ("route 'ops', field 'routing_key': give exactly one of routing_key, "
                                 "routing_key_env, routing_key_template")


def test_errors_never_show_the_routing_key():
    with pytest.raises(ConfigError) as caught:
        load_route({"name": "ops", "routing_key": KEY, "routing_key_env": "PD_KEY", "bogus": KEY})
    assert KEY not in str(caught.value)


def test_route_without_name_is_named_by_position():
    with pytest.raises(ConfigError) as caught:
        load_routing([route("first"), {"routing_key": KEY}], None)
    assert str(caught.value) == "route #2, field 'name': Missing data for required field."


def test_route_with_empty_name_is_named_by_position():
    with pytest.raises(ConfigError) as caught:
        load_routing([{"name": "", "routing_key": KEY}], None)
    assert str(caught.value) == "route #1, field 'name': Length must be between 1 and 128."


def test_route_that_is_not_a_dict_is_named_by_position():
    with pytest.raises(ConfigError) as caught:
        load_routing([route("first"), 'team="db"'], None)
    assert str(caught.value) == "route #2: must be a dict, not str"


def test_bad_default_route_is_named():
    with pytest.raises(ConfigError) as caught:
        load_routing([], {"name": "default", "routing_key_env": "PD_KEY"}, environ={})
    assert str(caught.value) == "route 'default', field 'routing_key_env': environment variable PD_KEY is not set"
    with pytest.raises(ConfigError, match=r"^DEFAULT_ROUTE: must be a dict, not list$"):
        load_routing([], [route("default")])


def test_routes_must_be_a_list():
    with pytest.raises(ConfigError, match="ROUTES must be a list of dicts, not dict"):
        load_routing(route("a"), None)


def test_duplicate_route_names_are_refused():
    with pytest.raises(ConfigError) as caught:
        load_routing([route("db"), route("web"), route("db")], None)
    assert str(caught.value) == "route names must be unique: db used more than once"


def test_default_route_may_not_reuse_a_route_name():
    # Route names are part of the per-alert dedup key: sharing one would merge two routes' incidents.
    with pytest.raises(ConfigError, match="route names must be unique: db used more than once"):
        load_routing([route("db")], route("db"))


def test_the_first_problem_stops_loading():
    with pytest.raises(ConfigError, match=r"^route 'second', field 'dedup'"):
        load_routing([route("first"), route("second", dedup="nope"), route("third", dedup="nope")], None)


# --- choosing routes ---------------------------------------------------------------------------

ROUTES = [
    route("db-critical", matchers=['team="db"', 'severity="critical"']),
    route("db", matchers=['team="db"']),
    route("web", matchers=['{team="web", env=~"prod|staging"}']),
]


@pytest.mark.parametrize("labels, expected", [
    ({"team": "db", "severity": "critical"}, ["db-critical"]),  # first match wins, the next is not tried
    ({"team": "db", "severity": "warning"}, ["db"]),
    ({"team": "web", "env": "prod"}, ["web"]),
    ({"team": "web", "env": "production"}, ["fallback"]),  # regexes are anchored
    ({"team": "web"}, ["fallback"]),  # every matcher must hold
    ({}, ["fallback"]),
])
def test_routes_for_takes_the_first_match_in_order(labels, expected):
    routing = load_routing(ROUTES, route("fallback"))
    assert names(routing.routes_for(alert(**labels))) == expected


def test_order_of_routes_decides():
    routing = load_routing(list(reversed(ROUTES)), None)
    assert names(routing.routes_for(alert(team="db", severity="critical"))) == ["db"]


def test_continue_fans_out_until_a_route_without_it():
    routing = load_routing([
        route("audit", matchers=['env="prod"'], **{"continue": True}),
        route("other-team", matchers=['team="web"'], **{"continue": True}),
        route("db", matchers=['team="db"'], **{"continue": True}),
        route("db-also", matchers=['team="db"']),
        route("never", matchers=['team="db"']),
    ], route("fallback"))
    assert names(routing.routes_for(alert(team="db", env="prod"))) == ["audit", "db", "db-also"]
    assert names(routing.routes_for(alert(team="db", env="dev"))) == ["db", "db-also"]


def test_default_route_only_when_nothing_matches():
    routing = load_routing([route("audit", matchers=['env="prod"'], **{"continue": True})], route("fallback"))
    assert names(routing.routes_for(alert(env="prod"))) == ["audit"]
    assert names(routing.routes_for(alert(env="dev"))) == ["fallback"]


def test_without_a_default_an_unmatched_alert_has_no_route():
    routing = load_routing([route("db", matchers=['team="db"'])], None)
    assert routing.default is None and routing.routes_for(alert(team="web")) == []


def test_route_without_matchers_takes_everything():
    routing = load_routing([route("all"), route("never")], None)
    assert names(routing.routes_for(alert(anything="x"))) == ["all"]


# --- severity ----------------------------------------------------------------------------------

SEVERITY_ROUTE = route("sev", severity_map={"page": "critical", "Ticket": "warning", "critical": "error"},
                       default_severity="warning")


@pytest.mark.parametrize("labels, expected", [
    ({"severity": "page"}, "critical"),  # mapped
    ({"severity": " PAGE "}, "critical"),  # case and spaces do not matter
    ({"severity": "ticket"}, "warning"),  # map keys are case-insensitive too
    ({"severity": "critical"}, "error"),  # the map wins over a PagerDuty value
    ({"severity": "Warning"}, "warning"),  # a PagerDuty severity passes through, lower-cased
    ({"severity": "info"}, "info"),
    ({"severity": "error"}, "error"),
    ({"severity": "urgent"}, "warning"),  # PagerDuty would refuse it: the route's default
    ({"severity": ""}, "warning"),
    ({}, "warning"),
    ({"priority": "info"}, "info"),  # without a severity label, the priority label
    ({"severity": "", "priority": "info"}, "info"),  # an empty label is no word
    ({"severity": "urgent", "priority": "info"}, "warning"),  # the first label the alert has decides
    ({"level": "critical"}, "warning"),  # not a severity label
])
def test_severity_is_mapped_or_falls_back(labels, expected):
    assert load_route(SEVERITY_ROUTE).severity(alert(**labels)) == expected


def test_severity_label_is_configurable():
    loaded = load_route(route("p", severity_label="priority", severity_map={"p1": "critical"}))
    assert loaded.severity(alert(priority="P1", severity="info")) == "critical"
    assert loaded.severity(alert(severity="info")) == "error"  # built-in default


def test_a_lease_shorter_than_one_send_stops_start_up(make_app):
    from relay.intake.routing import ConfigError
    with pytest.raises(ConfigError, match="RELAY_CLAIM_LEASE_SECONDS"):
        make_app(RELAY_CLAIM_LEASE_SECONDS=2.0, PAGERDUTY_CONNECT_TIMEOUT=1.0, PAGERDUTY_READ_TIMEOUT=2.0)


@pytest.mark.parametrize("nice", [-1, 20])
def test_a_delivery_priority_the_worker_cannot_take_stops_start_up(make_app, nice):
    from relay.intake.routing import ConfigError
    with pytest.raises(ConfigError, match="RELAY_DELIVERY_NICE"):
        make_app(RELAY_DELIVERY_NICE=nice)


# The default templates rendered together, as macros of one template, against each rendered on its own.
_COMPILED_DEFAULTS = {name: compile_template(text) for name, text in DEFAULT_TEMPLATES.items()}
_VALUES = st.one_of(st.just(""), st.just("  "), st.text(max_size=4),
                    st.sampled_from(["db1:9100", " x ", "None", "DatasourceNoData", "DatasourceError"]))
_LABELS = st.dictionaries(st.sampled_from(["alertname", "rulename", "datasource_uid", "instance", "pod", "host",
                                           "hostname", "node", "service", "job", "container", "cluster", "namespace",
                                           "grafana_folder", "env", "severity", "other"]), _VALUES, max_size=6)
_NOTES = st.dictionaries(st.sampled_from(["summary", "title", "description", "message", "runbook_url"]), _VALUES,
                         max_size=3)
_ALERTS = st.builds(Alert, source=st.one_of(st.sampled_from(["alertmanager", "grafana", "generic"]), _VALUES),
                    status=st.just(FIRING), labels=_LABELS, annotations=_NOTES,
                    external_url=st.one_of(st.none(), _VALUES, st.just("http://am:9093")))


@settings(max_examples=200, deadline=None)
@given(_ALERTS, _LABELS)
@example(Alert(source="alertmanager", status=FIRING), {})
@example(Alert(source="", status=FIRING, labels={"job": "", "alertname": " "}, external_url=""), {})
def test_the_default_templates_render_together_as_each_alone(alert, distinguishing):
    context = alert_context(alert, distinguishing)
    assert render_macros(DEFAULTS, context) == {name: render(template, context)
                                                for name, template in _COMPILED_DEFAULTS.items()}


@pytest.mark.parametrize("source, client", [("alertmanager", "Prometheus Alertmanager"), ("grafana", "Grafana"),
                                            ("generic", "relay"), ("retired", "relay")])
def test_the_default_client_is_the_one_the_source_declares(source, client):
    assert render_macros(DEFAULTS, alert_context(Alert(source=source, status=FIRING)))["client"] == client
