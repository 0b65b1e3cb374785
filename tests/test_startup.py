"""Start-up as a person meets it: a bad setting stops `flask --app wsgi relay …`, the delivery process and gunicorn
at once with one line naming it; a fresh store is migrated once, under a lock; the relay says in one line what it
will do, and warns once per process group."""
import json
import os
import sqlite3
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from conftest import fresh_postgres_database

from relay.startup.process import BAD_CONFIGURATION, STORE_UNAVAILABLE
from tests.processes import BIN, ROOT, gunicorn, wait_for

KEY = "5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e"
UNSET = ("PAGERDUTY_ROUTING_KEY", "RELAY_CONFIG", "DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR", "RELAY_API_TOKEN",
         "RELAY_WEBHOOK_TOKEN", "RELAY_LOG_LEVEL", "RELAY_AUTO_MIGRATE")
HEAD = ScriptDirectory(str(ROOT / "migrations")).get_current_head()  # the revision this code needs
WARNINGS = ("no default route", "webhooks for alertmanager have no credential", "RELAY_API_TOKEN is not set")


@pytest.fixture
def env(tmp_path, pd):
    """A relay's environment: a fresh SQLite file, the simulator as PagerDuty, nothing else set."""
    environ = {k: v for k, v in os.environ.items() if k not in UNSET}
    return {**environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'relay.sqlite3'}",
            "PAGERDUTY_EVENTS_URL": pd.events_url, "PATH": f"{BIN}:{os.environ['PATH']}"}


def flask(env, *args, timeout=60):
    """Run `flask --app wsgi …`; return the finished process and how long it took."""
    started = time.monotonic()
    done = subprocess.run([BIN / "flask", "--app", "wsgi", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    return done, time.monotonic() - started


def config_file(tmp_path, text):
    path = tmp_path / "relay_config.py"
    path.write_text(text)
    return str(path)


# Each: what is set, and the start of the one line that must name it.
BAD = {
    "unit in a number": ({"RELAY_SYNC_WAIT_SECONDS": "10x"}, "RELAY_SYNC_WAIT_SECONDS must be a number of seconds "
                                                             "or a duration such as 90s, 5m or 1d, not '10x'"),
    "non-number in an int": ({"RELAY_DELIVERY_CONCURRENCY": "many"},
                             "RELAY_DELIVERY_CONCURRENCY must be a whole number, not 'many'"),
    "mysql": ({"DATABASE_URL": "mysql://relay:s3cret@db/relay"}, "DATABASE_URL must be postgresql://"),
    "misspelt postgres": ({"DATABASE_URL": "postgress://relay:s3cret@db/relay"},
                          "DATABASE_URL must be postgresql://USER:PASSWORD@HOST:5432/DATABASE or "
                          "sqlite:////path/to/relay.sqlite3, not a 'postgress' URL"),
    "missing config file": ({"RELAY_CONFIG": "/nonexistent/relay_config.py"},
                            "RELAY_CONFIG: cannot read /nonexistent/relay_config.py: No such file or directory"),
    "config file syntax": ({"RELAY_CONFIG": "ROUTES = [\n  {'name': 'db'\n"}, "RELAY_CONFIG: "),
    "misspelt setting": ({"RELAY_CONFIG": "ROUTS = []\n"},
                         "RELAY_CONFIG: ROUTS is not a setting; did you mean ROUTES?"),
    "lowercase setting": ({"RELAY_CONFIG": "routes = []\n"},
                          "RELAY_CONFIG: routes is not read: settings are uppercase; did you mean ROUTES?"),
    "events URL without scheme": ({"PAGERDUTY_EVENTS_URL": "events.pagerduty.com/v2/enqueue"},
                                  "PAGERDUTY_EVENTS_URL must be a full URL such as "
                                  "https://events.pagerduty.com/v2/enqueue, not 'events.pagerduty.com/v2/enqueue'"),
    "events URL without path": ({"PAGERDUTY_EVENTS_URL": "https://events.pagerduty.com"},
                                "PAGERDUTY_EVENTS_URL must be a full URL such as "),
    "short default key": ({"PAGERDUTY_ROUTING_KEY": "s3cret-but-short"},
                          "route 'default', field 'routing_key_env': the key in PAGERDUTY_ROUTING_KEY has 16 "
                          "characters; a PagerDuty integration (routing) key has 32"),
    "short route key": ({"RELAY_CONFIG": "ROUTES = [{'name': 'db', 'routing_key_env': 'PD_DB_KEY'}]\n",
                         "PD_DB_KEY": KEY[:31]},
                        "route 'db', field 'routing_key_env': the key in PD_DB_KEY has 31 characters"),
}


def bad_env(env, tmp_path, case):
    settings, _ = BAD[case]
    settings = dict(settings)
    if "RELAY_CONFIG" in settings and not settings["RELAY_CONFIG"].startswith("/"):
        settings["RELAY_CONFIG"] = config_file(tmp_path, settings["RELAY_CONFIG"])
    return {**env, **settings}


def assert_one_line_naming(stderr: str, case: str, prefix="relay: configuration error: "):
    _, message = BAD[case]
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if not line.startswith("{")]  # gunicorn's own JSON log aside
    assert lines == [lines[0]] and lines[0].startswith(prefix + message), stderr
    assert "s3cret" not in stderr and KEY[:31] not in stderr


@pytest.mark.parametrize("case, command", [
    *((case, ("relay", "check-config")) for case in BAD),
    *((case, command) for case in ("unit in a number", "misspelt setting", "short route key")
      for command in (("relay", "log"), ("relay", "worker"))),  # worker: the delivery process
])
def test_a_bad_setting_stops_the_cli_and_the_delivery_process_with_one_line(env, tmp_path, case, command):
    done, took = flask(bad_env(env, tmp_path, case), *command, timeout=30)
    assert done.returncode == BAD_CONFIGURATION and took < 15
    assert_one_line_naming(done.stderr, case)


@pytest.mark.parametrize("case", ["unit in a number", "config file syntax", "misspelt setting", "mysql",
                                  "events URL without path", "short default key"])
def test_gunicorn_with_a_bad_setting_exits_at_once_with_one_line(env, tmp_path, case):
    started = time.monotonic()
    with gunicorn(bad_env(env, tmp_path, case)) as (_, proc):
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == BAD_CONFIGURATION and time.monotonic() - started < 15  # no worker started again and again
    assert "Booting worker" not in output and "delivery process" not in output
    assert_one_line_naming(output, case)


@pytest.mark.parametrize("setting, value, message", [
    ("RELAY_WORKERS", "two", "RELAY_WORKERS must be a whole number, at least 1, not 'two'"),
    ("RELAY_WORKER_TIMEOUT", "30x", "RELAY_WORKER_TIMEOUT must be a number of seconds or a duration such as 30s, "
                                    "at least 1, not '30x'"),
    ("RELAY_LOG_LEVEL", "verbose", "RELAY_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, "
                                   "not 'verbose'"),
])
def test_gunicorn_with_a_bad_server_setting_exits_with_one_line(env, setting, value, message):
    with gunicorn({**env, setting: value}) as (_, proc):
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == BAD_CONFIGURATION
    assert output.splitlines() == [f"relay: configuration error: {message}"]


def test_durations_with_units_are_accepted_wherever_seconds_are_read(env, tmp_path):
    durations = {"RELAY_SYNC_WAIT_SECONDS": "10s", "PAGERDUTY_CONNECT_TIMEOUT": "3s", "PAGERDUTY_READ_TIMEOUT": "1m",
                 "RELAY_CLAIM_LEASE_SECONDS": "2m", "RELAY_RETRY_MAX_SECONDS": "5m",
                 "RELAY_GIVE_UP_AFTER_SECONDS": "1d",
                 "RELAY_READY_MAX_PENDING_AGE_SECONDS": "15m", "RELAY_DELIVERY_POLL_SECONDS": "1s",
                 "RELAY_RETRY_BASE_SECONDS": "1s", "RELAY_GRAFANA_MAX_SKEW_SECONDS": "5m",
                 "RELAY_PRUNE_DELIVERED_AFTER": "1w", "RELAY_WORKER_TIMEOUT": "1m",
                 "RELAY_REQUEST_DEADLINE_SECONDS": "10s"}
    done, _ = flask({**env, **durations}, "relay", "check-config")
    assert done.returncode == 0, done.stderr
    with gunicorn({**env, **durations}) as (base, proc):
        wait_for(base + "/readyz", proc)


def test_relay_help_says_nothing_in_the_log(env):
    done, _ = flask(env, "relay", "--help")
    assert done.returncode == 0 and "trigger" in done.stdout
    assert done.stderr == ""
    done, _ = flask(env, "relay", "log", "--help")  # a command's help touches no store
    assert done.returncode == 0 and done.stderr == ""


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_prepare_migrates_a_fresh_store_and_says_what_the_relay_will_do(env, tmp_path, pd):
    done, _ = flask({**env, "PAGERDUTY_ROUTING_KEY": KEY, "RELAY_GRAFANA_TOKEN": "grafana-token-1234"},
                    "relay", "prepare")
    assert done.returncode == 0, done.stderr
    lines = json_lines(done.stderr)
    (started,) = [line for line in lines if line["message"].startswith("relay ")]
    assert started["level"] == "INFO" and started["logger"] == "relay.startup"
    assert started["message"] == (f"relay {started['version']} starting: store {env['DATABASE_URL']}, PagerDuty "
                                  f"{pd.events_url}, 0 route(s) and a default route, webhook credentials for grafana")
    assert (started["store"], started["pagerduty_events_url"], started["routes"], started["default_route"],
            started["sources_with_credentials"]) == (env["DATABASE_URL"], pd.events_url, 0, True, ["grafana"])
    assert [line["message"] for line in lines if line["level"] == "WARNING"] == [
        "webhooks for alertmanager have no credential configured: accepted from loopback only",
        "webhooks for pagerduty have no credential configured: accepted from loopback only",
        "webhooks for generic have no credential configured: accepted from loopback only",
        "RELAY_API_TOKEN is not set: the API and the log page answer loopback only"]
    assert KEY not in done.stderr and "grafana-token-1234" not in done.stderr
    done, _ = flask(env, "relay", "log")  # the store is there: a command finds its table
    assert done.returncode == 0 and done.stdout == "", done.stderr


def test_without_auto_migrate_a_store_behind_is_refused_with_what_to_run(env):
    env = {**env, "RELAY_AUTO_MIGRATE": "0"}
    for command in [("relay", "log"), ("relay", "worker"), ("relay", "prepare")]:
        done, took = flask(env, *command, timeout=30)
        assert done.returncode == BAD_CONFIGURATION and took < 15
        assert done.stderr.splitlines() == [
            f"relay: the database schema is behind: at revision none (an empty database), this relay needs {HEAD}; "
            "run `flask --app wsgi db upgrade` (or unset RELAY_AUTO_MIGRATE=0)"]
    previous = ScriptDirectory(str(ROOT / "migrations")).get_revision(HEAD).down_revision
    assert flask(env, "db", "upgrade", previous)[0].returncode == 0  # a deploy of newer code, not yet migrated
    done, _ = flask(env, "relay", "log")
    assert done.returncode == BAD_CONFIGURATION and done.stderr.startswith(
        f"relay: the database schema is behind: at revision {previous}, this relay needs {HEAD}; ")
    done, _ = flask({**env, "RELAY_AUTO_MIGRATE": "1"}, "relay", "log")
    assert done.returncode == 0, done.stderr
    assert flask(env, "relay", "log")[0].returncode == 0  # migrated: accepted without auto-migrate too


def test_a_schema_newer_than_the_code_is_refused_not_migrated(env, tmp_path):
    assert flask(env, "relay", "prepare")[0].returncode == 0
    with sqlite3.connect(tmp_path / "relay.sqlite3") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")  # as a newer relay would leave it
    done, took = flask(env, "relay", "log", timeout=30)
    assert done.returncode == BAD_CONFIGURATION and took < 15
    assert done.stderr.splitlines() == [
        f"relay: the database schema is at revision 9999, which this relay does not know (it needs {HEAD}): was the "
        "store migrated by a newer relay?"]


def test_several_processes_starting_together_on_a_fresh_postgresql_database_all_come_up(env):
    with fresh_postgres_database() as url:
        password_url = sa.engine.make_url(url).set(password="s3cret-password")  # trust auth: it goes unchecked
        pg_env = {**env, "DATABASE_URL": password_url.render_as_string(hide_password=False)}
        with ThreadPoolExecutor(4) as pool:
            runs = list(pool.map(lambda _: flask(pg_env, "relay", "prepare")[0], range(4)))
        assert [run.returncode for run in runs] == [0] * 4, [run.stderr for run in runs]
        migrated = [run for run in runs if "bringing the database schema up to date" in run.stderr]
        assert len(migrated) == 1  # the others waited on the lock, then found it current
        (started,) = [line for line in json_lines(runs[0].stderr) if line["message"].startswith("relay ")]
        assert started["store"] == password_url.render_as_string(hide_password=True)
        assert all("s3cret-password" not in run.stderr for run in runs)
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all() == [HEAD]
        engine.dispose()


def test_gunicorns_starting_together_on_a_fresh_postgresql_database_all_serve(env):
    with fresh_postgres_database() as url:
        pg_env = {**env, "DATABASE_URL": url}
        with gunicorn(pg_env) as (first, first_proc), gunicorn(pg_env) as (second, second_proc):
            for base, proc in ((first, first_proc), (second, second_proc)):
                wait_for(base + "/readyz", proc, timeout=60)
                response = requests.post(base + "/webhooks/generic", json={"title": "Disk full"}, timeout=10)
                assert response.status_code == 202, response.text


def test_gunicorn_on_a_fresh_sqlite_file_serves_webhooks_and_warns_once(env):
    with gunicorn(env) as (base, proc):
        wait_for(base + "/readyz", proc)
        response = requests.post(base + "/webhooks/generic", json={"title": "Disk full"}, timeout=10)
        assert response.status_code == 202, response.text
        proc.terminate()
        output, _ = proc.communicate(timeout=30)
    messages = [line["message"] for line in json_lines(output)]
    assert len([m for m in messages if m.startswith("relay ") and " starting: store " in m]) == 1
    for warning in WARNINGS:  # the master's check says them; neither the workers nor the delivery process again
        assert len([m for m in messages if m.startswith(warning)]) == 1, warning
    assert not [m for m in messages if "start-up objects out of the garbage collector's way" in m]  # debug


def test_an_unreachable_store_is_an_outage_to_wait_out_not_a_setting_to_fix(env):
    """gunicorn's prepare starts anyway (webhooks get 503 meanwhile), a CLI command exits STORE_UNAVAILABLE, and
    neither says it is a configuration error."""
    down = {**env, "DATABASE_URL": "postgresql://relay:s3cret@127.0.0.1:1/relay"}  # nothing listens on port 1
    prepared, _ = flask(down, "relay", "prepare")
    assert prepared.returncode == 0, prepared.stderr
    warning = [json.loads(line) for line in prepared.stderr.splitlines() if "starting anyway" in line]
    assert len(warning) == 1 and "database unreachable: connection refused (127.0.0.1:1)" in warning[0]["message"]
    listed, _ = flask(down, "relay", "log")
    assert listed.returncode == STORE_UNAVAILABLE
    assert listed.stderr.splitlines()[-1] == ("relay: the store cannot be used: database unreachable: connection "
                                              "refused (127.0.0.1:1)")
    assert "s3cret" not in prepared.stderr + listed.stderr and "Traceback" not in listed.stderr
