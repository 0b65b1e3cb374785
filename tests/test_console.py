"""The `relay` console command, installed as requirements.txt installs it (pip, editable) into a throwaway venv,
and run from another folder with its configuration from the environment."""
import json
import os
import pty
import shutil
import subprocess
import sys
import sysconfig

import pytest

from relay.startup.process import BAD_CONFIGURATION
from tests.processes import ROOT

# What the Dockerfile copies: the package needs nothing else of the checkout.
SHIPPED = ("pyproject.toml", "config.py", "wsgi.py", "relay", "migrations")


@pytest.fixture(scope="module")
def relay_command(tmp_path_factory):
    """A copy of the checkout pip-installed with --no-deps into a new venv that sees this venv's packages; return
    the venv's `relay` script."""
    home = tmp_path_factory.mktemp("console")
    checkout = home / "checkout"
    for name in SHIPPED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, checkout / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            checkout.mkdir(exist_ok=True)
            shutil.copy(source, checkout / name)
    venv = home / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    # --system-site-packages would see the base interpreter's packages, not this venv's: point at them instead.
    site = subprocess.run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (home / "venv" / site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "--no-deps", "-e", checkout], check=True)
    return venv / "bin" / "relay"


@pytest.fixture
def elsewhere(tmp_path, pd):
    """A folder outside the checkout and an environment naming a fresh SQLite store and the simulator."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("RELAY_", "PAGERDUTY_", "DATABASE_"))}
    env.update(DATABASE_URL=f"sqlite:///{tmp_path / 'relay.sqlite3'}", PAGERDUTY_EVENTS_URL=pd.events_url,
               COLUMNS="120")
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    return folder, env


def test_relay_migrates_triggers_and_lists_from_any_folder(relay_command, elsewhere, pd, routing_key):
    folder, env = elsewhere

    def relay(*args):
        return subprocess.run([relay_command, *args], cwd=folder, env=env, capture_output=True, text=True,
                              timeout=60)

    assert relay("db", "upgrade").returncode == 0
    sent = relay("trigger", "--title", "From the console", "--service-key", routing_key)
    assert sent.returncode == 0, sent.stderr
    answer = json.loads(sent.stdout)
    assert answer["success"] is True and pd.accepted()[0]["dedup_key"] == answer["dedup_key"]
    listed = relay("log", "--status", "delivered", "--source", "cli")
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == [answer["log_id"]]
    assert not (folder / "instance").exists() and os.listdir(folder) == []


def test_relay_log_is_a_table_on_a_terminal(relay_command, elsewhere, pd, routing_key):
    folder, env = elsewhere
    subprocess.run([relay_command, "db", "upgrade"], cwd=folder, env=env, check=True, capture_output=True)
    subprocess.run([relay_command, "trigger", "--title", "Disk \x1b[31mfull\x1b[0m on db-1", "--service-key",
                    routing_key, "--dedup-key", "disk-db-1"], cwd=folder, env=env, check=True, capture_output=True)
    primary, secondary = pty.openpty()
    proc = subprocess.Popen([relay_command, "log"], cwd=folder, env=env, stdout=secondary,
                            stderr=subprocess.DEVNULL)
    os.close(secondary)
    shown = b""
    while chunk := _read(primary):
        shown += chunk
    os.close(primary)
    assert proc.wait(timeout=30) == 0
    heading, row = shown.decode().splitlines()
    assert heading.split() == ["ID", "CREATED", "(UTC)", "STATUS", "SOURCE", "ROUTE", "ACTION", "TRIES", "BY", "DEDUP",
                               "KEY", "SUMMARY"]
    assert row.split()[3:] == ["delivered", "cli", "trigger", "1", "disk-db-1", "Disk", "[31mfull", "[0m", "on",
                               "db-1"]
    assert "\x1b" not in row and routing_key[-4:] not in row and len(row) <= 120


def _read(fd) -> bytes:
    """Read what a pty has, b"" once its other side is closed."""
    try:
        return os.read(fd, 4096)
    except OSError:  # EIO: the command has exited and closed the terminal
        return b""


def test_a_bad_configuration_is_one_line_and_exit_2(relay_command, elsewhere, tmp_path):
    folder, env = elsewhere
    (tmp_path / "bad.py").write_text('ROUTES = [{"name": "db"}]\n')
    result = subprocess.run([relay_command, "log"], cwd=folder, env={**env, "RELAY_CONFIG": str(tmp_path / "bad.py")},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == BAD_CONFIGURATION and result.stdout == ""
    assert result.stderr.splitlines() == ["relay: configuration error: route 'db', field 'routing_key': give "
                                          "exactly one of routing_key, routing_key_env, routing_key_template"]


def test_help_needs_no_configuration(relay_command, elsewhere):
    folder, env = elsewhere
    result = subprocess.run([relay_command, "--help"], cwd=folder, env={**env, "RELAY_CONFIG": "/nonexistent.py"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    commands = {line.split()[0] for line in result.stdout.split("Commands:")[1].splitlines() if line.strip()}
    assert commands == {"acknowledge", "check-config", "db", "heartbeats", "log", "prepare", "preview", "prune",
                        "reconcile", "replay", "resolve", "run-job", "trigger", "worker"}
