"""The delivery process's duties from a shell: the heartbeats' states, and what a reconciler check would do now."""
import json
import sys

import click
from flask import current_app

from relay.cli.group import relay_cli
from relay.cli.output import cell, echo_entries, json_option
from relay.delivery import heartbeats, reconcile
from relay.store import models
from relay.store.models import db

HEARTBEAT_COLUMNS = ("name", "kind", "state", "last_seen", "next_expected")


@relay_cli.command("heartbeats")
@json_option
def show_heartbeats(as_json):
    """Print every heartbeat's state (up, late, down), last arrival and next expected one."""
    with db.engine.connect() as conn:
        entries = heartbeats.overview(conn)
    if not entries:  # said on stderr: the JSON lines on stdout stay JSON lines (none)
        click.echo("relay: no heartbeat is watched: HEARTBEATS jobs and routes with a heartbeat option are watched "
                   "once the delivery process runs (docs/heartbeats.md)", err=True)
    echo_entries(entries, as_json, heartbeat_table)


def heartbeat_table(entries: list[dict]) -> list[str]:
    """Lay heartbeats out as a table of HEARTBEAT_COLUMNS, times in UTC."""
    rows = [[cell(f"{entry[name]:%Y-%m-%d %H:%M:%S}" if name in ("last_seen", "next_expected") and entry[name]
                  else entry[name] or "—") for name in HEARTBEAT_COLUMNS] for entry in entries]
    headings = [name.replace("_", " ").upper() for name in HEARTBEAT_COLUMNS]
    sizes = [max(len(row[i]) for row in [headings, *rows]) for i in range(len(headings))]
    return [" ".join(text.ljust(size) for text, size in zip(row, sizes)).rstrip() for row in [headings, *rows]]


@relay_cli.command("reconcile")
@click.option("--dry-run", is_flag=True, help="Required: print what a check would do now; nothing is sent (the "
              "delivery process runs the checks themselves, every RELAY_RECONCILE_INTERVAL_SECONDS).")
def reconcile_now(dry_run):
    """Ask Alertmanager and Grafana what became of each open alert and print, one JSON line each, what the
    reconciler would do now (docs/reconciler.md); nothing is stored or sent. Exits 1 when a source cannot be read."""
    if not dry_run:
        raise click.UsageError("only --dry-run: the delivery process runs the checks (RELAY_RECONCILE_INTERVAL_SECONDS)")
    db.session.remove()  # the check reads and rolls back through the engine; hold no session transaction meanwhile
    report = reconcile.Reconciler(current_app.config).check(db.engine, models.utcnow(), dry_run=True)
    if not report.findings:
        click.echo("relay: no open alert to reconcile: none the relay triggered through Alertmanager or Grafana is "
                   "unresolved", err=True)
    for finding in report.findings:
        click.echo(json.dumps(finding.line(), ensure_ascii=False))
    for problem in report.unavailable.values():  # each problem names its URL
        click.echo(f"relay: source not read, nothing would be resolved for its alerts: {problem}", err=True)
    if report.unavailable:
        sys.exit(1)
