"""Settings as people write them: numbers, durations with units, database and PagerDuty URLs, the RELAY_CONFIG
file; each bad one named with what was expected."""
from datetime import timedelta

import pytest

from relay import create_app
from relay.intake.routing import ConfigError
from relay.startup.settings import Environment, events_url_problem, read_config_file
from relay.timeutil import parse_seconds

KNOWN = {"ROUTES", "DEFAULT_ROUTE", "GENERIC_WEBHOOK", "RELAY_SYNC_WAIT_SECONDS"}


@pytest.mark.parametrize("text, seconds", [("10", 10), ("2.5", 2.5), ("10s", 10), ("5m", 300), ("1d", 86400),
                                           (" 1.5h ", 5400), ("0", 0)])
def test_seconds_are_plain_numbers_or_durations_with_a_unit(text, seconds):
    assert parse_seconds(text) == seconds


@pytest.mark.parametrize("text", ["10x", "", "ten", "-5", "nan", "inf", "5 minutes"])
def test_seconds_refuse_other_forms(text):
    with pytest.raises(ValueError, match="seconds"):
        parse_seconds(text)


def test_environment_reads_durations_with_units_wherever_seconds_are_read():
    env = Environment({"RELAY_SYNC_WAIT_SECONDS": "10s", "PAGERDUTY_READ_TIMEOUT": "1m",
                       "RELAY_PRUNE_DELIVERED_AFTER": "3600", "RELAY_GIVE_UP_AFTER_SECONDS": "1d"})
    assert env.seconds("RELAY_SYNC_WAIT_SECONDS", 10) == 10.0
    assert env.seconds("PAGERDUTY_READ_TIMEOUT", 10) == 60.0
    assert env.seconds("RELAY_GIVE_UP_AFTER_SECONDS", 1) == 86400.0
    assert env.duration("RELAY_PRUNE_DELIVERED_AFTER", None) == timedelta(hours=1)
    assert env.seconds("RELAY_RETRY_MAX_SECONDS", 300) == 300  # unset: the default
    assert env.problems == []


def test_environment_names_every_bad_variable_and_what_it_expected():
    env = Environment({"RELAY_SYNC_WAIT_SECONDS": "10x", "RELAY_DELIVERY_CONCURRENCY": "64.5",
                       "RELAY_MAX_BODY_BYTES": "4MB", "RELAY_PRUNE_DELIVERED_AFTER": "a month",
                       "RELAY_LOG_LEVEL": "verbose"})
    assert env.seconds("RELAY_SYNC_WAIT_SECONDS", 10) == 10  # the default meanwhile; start-up refuses anyway
    env.whole("RELAY_DELIVERY_CONCURRENCY", 64)
    env.whole("RELAY_MAX_BODY_BYTES", 1)
    env.duration("RELAY_PRUNE_DELIVERED_AFTER", None)
    assert env.choice("RELAY_LOG_LEVEL", "INFO", ("DEBUG", "INFO")) == "INFO"
    assert env.problems == [
        "RELAY_SYNC_WAIT_SECONDS must be a number of seconds or a duration such as 90s, 5m or 1d, not '10x'",
        "RELAY_DELIVERY_CONCURRENCY must be a whole number, not '64.5'",
        "RELAY_MAX_BODY_BYTES must be a whole number, not '4MB'",
        "RELAY_PRUNE_DELIVERED_AFTER must be a duration such as 12h, 30d or 2w, or 0 for none, not 'a month'",
        "RELAY_LOG_LEVEL must be one of DEBUG, INFO, not 'verbose'",
    ]


def test_switches_are_1_or_0_and_anything_else_is_named():
    env = Environment({"RELAY_DELIVERY": "0", "RELAY_AUTO_MIGRATE": "", "RELAY_ALLOW_UNAUTHENTICATED_WEBHOOKS": "true"})
    assert env.flag("RELAY_DELIVERY", True) is False
    assert env.flag("RELAY_AUTO_MIGRATE", True) is True  # empty: the default
    assert env.flag("RELAY_ALLOW_UNAUTHENTICATED_WEBHOOKS") is False
    assert env.problems == ["RELAY_ALLOW_UNAUTHENTICATED_WEBHOOKS must be 1 (on) or 0 (off), not 'true'"]


@pytest.mark.parametrize("url, expected", [
    ("postgres://relay:pw@db/relay", "postgresql+psycopg://relay:pw@db/relay"),
    ("postgresql://relay:pw@db/relay", "postgresql+psycopg://relay:pw@db/relay"),
    ("postgresql+psycopg://relay@db/relay", "postgresql+psycopg://relay@db/relay"),
    ("sqlite:////var/lib/relay/relay.sqlite3", "sqlite:////var/lib/relay/relay.sqlite3"),
])
def test_database_urls_the_relay_has_a_driver_for(url, expected):
    env = Environment({"DATABASE_URL": url})
    assert env.database_url() == expected and env.problems == []


@pytest.mark.parametrize("url, what", [("mysql://relay:s3cret@db/relay", "a 'mysql' URL"),
                                       ("postgress://relay:s3cret@db/relay", "a 'postgress' URL"),
                                       ("postgresql+psycopg2://relay:s3cret@db/relay", "a 'postgresql+psycopg2' URL"),
                                       ("relay:s3cret@db/relay", "a URL with no scheme")])
def test_other_database_urls_are_named_without_their_password(url, what):
    env = Environment({"DATABASE_URL": url})
    assert env.database_url() is None
    (problem,) = env.problems
    assert problem == ("DATABASE_URL must be postgresql://USER:PASSWORD@HOST:5432/DATABASE or "
                       f"sqlite:////path/to/relay.sqlite3, not {what}")
    assert "s3cret" not in problem


@pytest.mark.parametrize("url", ["https://events.pagerduty.com/v2/enqueue", "http://127.0.0.1:8081/v2/enqueue",
                                 "https://events.eu.pagerduty.com/v2/enqueue"])
def test_events_urls_with_scheme_host_and_path_pass(url):
    assert events_url_problem("PAGERDUTY_EVENTS_URL", url) is None


@pytest.mark.parametrize("url", ["events.pagerduty.com/v2/enqueue", "https://events.pagerduty.com",
                                 "https://events.pagerduty.com/", "ftp://events.pagerduty.com/v2/enqueue",
                                 "https:///v2/enqueue", ""])
def test_events_urls_without_scheme_host_or_path_are_refused_with_the_expected_form(url):
    assert events_url_problem("PAGERDUTY_EVENTS_URL", url) == (
        f"PAGERDUTY_EVENTS_URL must be a full URL such as https://events.pagerduty.com/v2/enqueue, not {url!r}")


def config_file(tmp_path, text: str) -> str:
    path = tmp_path / "relay_config.py"
    path.write_text(text)
    return str(path)


def test_config_file_settings_are_read_and_its_helpers_left_alone(tmp_path):
    path = config_file(tmp_path, "import os\nfrom datetime import timedelta\n_private = 1\nteam = 'db'\n"
                                 "def matcher(name):\n    return f'team=\"{name}\"'\n"
                                 "ROUTES = [{'name': team, 'matchers': [matcher(team)], 'routing_key_env': 'K'}]\n")
    settings, problems = read_config_file(path, KNOWN)
    assert problems == [] and settings == {
        "ROUTES": [{"name": "db", "matchers": ['team="db"'], "routing_key_env": "K"}]}


def test_config_file_names_a_misspelt_setting_and_suggests_the_closest(tmp_path):
    path = config_file(tmp_path, "ROUTS = []\nDEFALT_ROUTE = None\nTEAM_KEYS = {}\n")
    assert read_config_file(path, KNOWN)[1] == [
        "RELAY_CONFIG: ROUTS is not a setting; did you mean ROUTES?",
        "RELAY_CONFIG: DEFALT_ROUTE is not a setting; did you mean DEFAULT_ROUTE?",
        "RELAY_CONFIG: TEAM_KEYS is not a setting",
    ]


def test_config_file_refuses_a_setting_in_lowercase(tmp_path):
    path = config_file(tmp_path, "routes = []\nDefault_Route = None\n")
    assert read_config_file(path, KNOWN)[1] == [
        "RELAY_CONFIG: routes is not read: settings are uppercase; did you mean ROUTES?",
        "RELAY_CONFIG: Default_Route is not read: settings are uppercase; did you mean DEFAULT_ROUTE?",
    ]


def test_config_file_missing_broken_or_raising_is_one_problem_with_where(tmp_path):
    assert read_config_file(str(tmp_path / "nope.py"), KNOWN)[1] == [
        f"RELAY_CONFIG: cannot read {tmp_path / 'nope.py'}: No such file or directory"]
    broken = config_file(tmp_path, "ROUTES = [\n    {'name': 'db',\n")
    (problem,) = read_config_file(broken, KNOWN)[1]
    assert problem.startswith(f"RELAY_CONFIG: {broken}, line 2: ")
    raising = config_file(tmp_path, "import os\nROUTES = []\nKEY = os.environ['NO_SUCH_VARIABLE_HERE']\n")
    assert read_config_file(raising, KNOWN)[1] == [
        f"RELAY_CONFIG: {raising}, line 3 raised KeyError: 'NO_SUCH_VARIABLE_HERE'"]


def test_create_app_refuses_a_config_file_with_a_misspelt_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("RELAY_CONFIG", config_file(tmp_path, "ROUTS = []\n"))
    with pytest.raises(ConfigError, match=r"^RELAY_CONFIG: ROUTS is not a setting; did you mean ROUTES\?$"):
        create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'relay.sqlite3'}"})


def test_create_app_takes_flask_and_source_settings_from_a_config_file(tmp_path, monkeypatch):
    monkeypatch.setenv("RELAY_CONFIG", config_file(
        tmp_path, "SQLALCHEMY_ECHO = False\nGENERIC_WEBHOOK = {'summary': 'title'}\nRELAY_SYNC_WAIT_SECONDS = 3\n"))
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'relay.sqlite3'}"})
    assert app.config["GENERIC_WEBHOOK"] == {"summary": "title"} and app.config["RELAY_SYNC_WAIT_SECONDS"] == 3


def test_create_app_refuses_an_events_url_without_a_path(tmp_path):
    with pytest.raises(ConfigError, match=r"^PAGERDUTY_EVENTS_URL must be a full URL such as "):
        create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'relay.sqlite3'}",
                    "PAGERDUTY_EVENTS_URL": "https://events.pagerduty.com"})
