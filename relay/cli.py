"""The relay's commands, as `relay …` (the console command, main) and as `flask --app wsgi relay …`: the
create-incident job from a shell, the log, and the operator's tools."""
import functools
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time

import click
from flask import current_app
from flask.cli import AppGroup, ScriptInfo
from flask_migrate.cli import db as db_commands
from marshmallow import ValidationError

from relay import accept, incidents
from relay.delivery import heartbeats, reconcile, worker
from relay.errors import RelayError, error_body
from relay.intake import configure, payload
from relay.pagerduty.client import safe_url
from relay.startup.process import BAD_CONFIGURATION, STORE_UNAVAILABLE, announce, app_or_exit, freeze_startup_objects
from relay.store import failures, logquery, models, outbox, retention, schema, states
from relay.store.entry import log_entry
from relay.store.models import IncidentLog, db
from relay.timeutil import parse_duration, parse_since

log = logging.getLogger(__name__)
relay_cli = AppGroup("relay", help="Send PagerDuty events through the relay.")
# The log's table on a terminal: (heading, entry field, widest cell); the summary takes the rest of the line.
LOG_COLUMNS = (("ID", "id", 12), ("CREATED (UTC)", "created_at", 19), ("STATUS", "status", 10),
               ("SOURCE", "source", 12), ("ROUTE", "route", 16), ("ACTION", "event_action", 11),
               ("TRIES", "attempts", 5), ("BY", "superseded_by", 12), ("DEDUP KEY", "dedup_key", 32))


def _emit(run):
    """Run a job, given the events URL its row is bound for, print its JSON answer, and exit with its outcome's
    code (relay/incidents.py OUTCOMES).

    A running delivery process sends the row, to its own endpoint: this command never delivers behind its back.
    Only when none runs does this command deliver, with a worker of its own that stops with it.
    """
    own_url = current_app.config["PAGERDUTY_EVENTS_URL"]
    running = worker.delivering_process()
    events_url = running.events_url if running else own_url
    click.echo(_delivery_line(running, events_url, own_url), err=True)
    if running is None:
        worker.start(current_app._get_current_object(), registered=False)
    try:
        result = run(events_url)
    except ValidationError as exc:
        click.echo(json.dumps(_error_json(exc)))
        sys.exit(incidents.INVALID_INPUT.exit_code)
    finally:
        if running is None:
            worker.stop()
    click.echo(json.dumps(result.body))
    sys.exit(result.exit_code)


def _delivery_line(running, events_url: str, own_url: str) -> str:
    """Say, for stderr, which endpoint the event goes to and who delivers it (no credentials)."""
    if running is None:
        return (f"relay: sending to {safe_url(events_url)} from this command: no delivery process is running "
                "(start one with `make run` or `flask --app wsgi relay worker`)")
    ignored = "" if events_url == own_url else f"; this shell's PAGERDUTY_EVENTS_URL {safe_url(own_url)} is not used"
    return (f"relay: sending to {safe_url(events_url)} through the running delivery process on host {running.host} "
            f"pid {running.pid}{ignored}")


@relay_cli.command("trigger")
@click.option("--title", required=True, help="The incident's summary.")
@click.option("--service-key", required=True, help="The PagerDuty integration (routing) key.")
@click.option("--urgency", type=click.Choice(["high", "low"]), default="high", show_default=True)
@click.option("--body", default="", help="Details shown on the incident.")
@click.option("--dedup-key", default=None, help="Key for later acknowledge/resolve (generated if absent).")
def trigger(title, service_key, urgency, body, dedup_key):
    """Create a PagerDuty incident."""
    data = {"title": title, "service_key": service_key, "urgency": urgency, "body": body}
    if dedup_key:
        data["dedup_key"] = dedup_key
    _emit(lambda events_url: incidents.trigger(data, source="cli", events_url=events_url))


@relay_cli.command("run-job")
@click.argument("job_file", type=click.File("r"))
def run_job(job_file):
    """Run the create-incident job from a JSON file holding its input block."""
    try:
        data = json.load(job_file)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="JOB_FILE") from None
    if isinstance(data, dict) and isinstance(data.get("input"), dict):
        data = data["input"]  # a whole job document: take its input block
    if not isinstance(data, dict):
        raise click.BadParameter("must hold a JSON object", param_hint="JOB_FILE")
    _emit(lambda events_url: incidents.trigger(data, source="cli", events_url=events_url))


def _follow_up_command(action):
    @click.argument("dedup_key")
    @click.option("--service-key", required=True, help="The routing key the incident was opened with.")
    def command(dedup_key, service_key):
        _emit(lambda events_url: incidents.follow_up(action, dedup_key, {"service_key": service_key}, source="cli",
                                                     events_url=events_url))

    command.__doc__ = f"{action.capitalize()} a PagerDuty incident by its dedup key."
    return relay_cli.command(action)(command)


acknowledge = _follow_up_command("acknowledge")
resolve = _follow_up_command("resolve")


@relay_cli.command("log")
@click.option("--limit", default=20, show_default=True, help="How many of the newest rows to show.")
@click.option("--status", default=None, help=f"Only rows in this state ({', '.join(states.STATUSES)}).")
@click.option("--source", default=None, help="Only rows from this source (alertmanager, grafana, generic, api, cli…).")
@click.option("--route", default=None, help="Only rows sent by this route.")
@click.option("--since", default=None, help="Only rows accepted since: 30m, 2h, 7d or an ISO 8601 time.")
@click.option("--dedup-key", default=None, help="Only rows of this dedup key.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines even on a terminal (the default elsewhere).")
@click.option("--id", "log_id", type=int, default=None, help="Show one row in full, with its attempts.")
def show_log(limit, status, source, route, since, dedup_key, as_json, log_id):
    """Print incident_log rows newest first (routing keys masked): a table on a terminal, JSON lines otherwise."""
    if log_id is not None:
        row = db.session.get(IncidentLog, log_id)
        if row is None:
            raise click.ClickException(f"no incident_log row with id {log_id}")
        click.echo(json.dumps(log_entry(row, with_attempts=True), indent=2, ensure_ascii=False))
        return
    given = {"limit": limit, "status": status, "source": source, "route": route, "since": since,
             "dedup_key": dedup_key}
    try:
        filters = logquery.log_filter.load({name: value for name, value in given.items() if value is not None})
    except ValidationError as exc:
        raise click.UsageError("; ".join(f"--{name.replace('_', '-')}: {' '.join(map(str, messages))}"
                                         for name, messages in exc.messages.items())) from None
    entries = [log_entry(row) for row in logquery.find(db.session, filters)[0]]
    if as_json or not sys.stdout.isatty():
        for entry in entries:
            click.echo(json.dumps(entry, ensure_ascii=False))
        return
    for line in log_table(entries, shutil.get_terminal_size().columns):
        click.echo(line)


def log_table(entries: list[dict], width: int) -> list[str]:
    """Lay log entries out as a table of LOG_COLUMNS and the summary, the summary cut to the terminal's width."""
    rows = [[_cell(entry["created_at"].replace("T", " ")[:19] if field == "created_at" else entry[field])
             for _, field, _ in LOG_COLUMNS] + [_cell(_summary_cell(entry))] for entry in entries]
    headings = [heading for heading, _, _ in LOG_COLUMNS] + ["SUMMARY"]
    sizes = [min(widest, max(len(row[i]) for row in [headings, *rows]))
             for i, (_, _, widest) in enumerate(LOG_COLUMNS)]
    summary_room = max(10, width - sum(sizes) - len(sizes))
    return [" ".join(_cut(text, size).ljust(size) for text, size in zip(row, sizes)) + " " + _cut(row[-1], summary_room)
            for row in [headings, *rows]]


def _summary_cell(entry: dict) -> str:
    """The summary, after the cause of an event the relay sent of its own accord (the reconciler's)."""
    if entry.get("cause"):
        return f"[{entry['cause']}] {entry['summary'] or ''}".strip()
    return entry["summary"]


def _cell(value) -> str:
    """A value as one line of printable text: a summary's control characters must not drive the terminal."""
    return "".join(c if c.isprintable() else " " for c in ("" if value is None else str(value)))


def _cut(text: str, size: int) -> str:
    """The text, cut to size with an ellipsis."""
    return text if len(text) <= size else text[:size - 1] + "…"


HEARTBEAT_COLUMNS = ("name", "kind", "state", "last_seen", "next_expected")


@relay_cli.command("heartbeats")
@click.option("--json", "as_json", is_flag=True, help="JSON lines even on a terminal (the default elsewhere).")
def show_heartbeats(as_json):
    """Print every heartbeat's state (up, late, down), last arrival and next expected one."""
    with db.engine.connect() as conn:
        entries = heartbeats.overview(conn)
    if as_json or not sys.stdout.isatty():
        for entry in entries:
            click.echo(json.dumps(entry, ensure_ascii=False, default=lambda moment: moment.isoformat()))
        return
    for line in heartbeat_table(entries):
        click.echo(line)


def heartbeat_table(entries: list[dict]) -> list[str]:
    """Lay heartbeats out as a table of HEARTBEAT_COLUMNS, times in UTC."""
    rows = [[_cell(f"{entry[name]:%Y-%m-%d %H:%M:%S}" if name in ("last_seen", "next_expected") and entry[name]
                   else entry[name] or "—") for name in HEARTBEAT_COLUMNS] for entry in entries]
    headings = [name.replace("_", " ").upper() for name in HEARTBEAT_COLUMNS]
    sizes = [max(len(row[i]) for row in [headings, *rows]) for i in range(len(headings))]
    return [" ".join(text.ljust(size) for text, size in zip(row, sizes)).rstrip() for row in [headings, *rows]]


@relay_cli.command("check-config")
def check_config():
    """Check config.py's routes and source settings (the app refuses to start when they are bad)."""
    routing, _ = configure.load(current_app.config)
    for line in configure.describe(routing):
        click.echo(line)
    for job in current_app.extensions["relay.heartbeats"].values():
        click.echo(heartbeats.describe_job(job))
    if routing.default is None:
        click.echo("warning: no default route: alerts matching no route are logged as unrouted, not sent")
    click.echo(f"configuration OK: {len(routing.routes)} route(s)"
               f"{' and a default route' if routing.default else ''}")


@relay_cli.command("preview")
@click.argument("source")
@click.argument("payload_file", type=click.Path(exists=True, dir_okay=False))
def preview(source, payload_file):
    """Show the events a webhook payload would produce; nothing is stored or sent."""
    with open(payload_file, "rb") as handle:
        raw = handle.read()
    try:
        found = accept.source_named(source)
        events = accept.preview(found, payload.parse(raw, current_app.config["RELAY_MAX_JSON_DEPTH"],
                                                     allow_array=True))
    except (RelayError, ValidationError) as exc:
        click.echo(json.dumps(_error_json(exc), indent=2, ensure_ascii=False))
        sys.exit(2)
    click.echo(json.dumps({"events": events}, indent=2, ensure_ascii=False))


def _error_json(exc):
    """The API's error JSON for an exception a payload caused."""
    if isinstance(exc, RelayError):
        return error_body(exc.code, exc.message, exc.fields)
    fields = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
    return error_body("invalid_input", "invalid input", fields)


@relay_cli.command("worker")
@click.option("--parent-pid", type=int, default=None,
              help="Stop once process PID is no longer this one's parent (gunicorn's master passes its own).")
def run_worker(parent_pid):
    """Run a delivery worker in the foreground until SIGINT or SIGTERM (for RELAY_DELIVERY=0 set-ups)."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    os.nice(current_app.config["RELAY_DELIVERY_NICE"])
    running = worker.start(current_app._get_current_object())
    if parent_pid is None:  # under gunicorn, its master said it all before it started this process
        announce(current_app)
    log.info("delivery worker %s running", running.id)
    freeze_startup_objects()
    heartbeat = current_app.config["RELAY_DELIVERY_HEARTBEAT_FILE"]
    while True:
        if heartbeat and running.alive and not _touch(heartbeat):
            heartbeat = ""  # said once in the log; /readyz will say the rest
        if stop.wait(1.0):
            break
        if not running.thread.is_alive():
            raise click.ClickException("the delivery loop stopped unexpectedly; see the log")
        if not running.alive:  # stuck in one step: its threads cannot be stopped, the process can be replaced
            log.error("the delivery loop has not come round for %.0f s; exiting so a new process takes over",
                      worker.stalled_after(running.poll_seconds))
            logging.shutdown()
            os._exit(1)
        if parent_pid and os.getppid() != parent_pid:  # a master killed with -9 runs no on_exit
            log.warning("the parent process %d is gone; stopping delivery", parent_pid)
            break
    worker.stop()
    log.info("delivery worker %s stopped", running.id)


def _touch(path) -> bool:
    """Mark the delivery loop alive for /readyz in the web workers; False, logged, if the file cannot be written."""
    try:
        with open(path, "a"):
            os.utime(path)
    except OSError as exc:
        log.warning("cannot touch the delivery heartbeat file %s: %s", path, exc.strerror)
        return False
    return True


@relay_cli.command("replay")
@click.option("--status", "statuses", multiple=True, type=click.Choice(states.REPLAYABLE),
              help="Which rows to send again (default: failed and dead).")
@click.option("--since", default=None, help="Only rows accepted since: 30m, 2h, 7d or an ISO 8601 time.")
@click.option("--id", "log_ids", multiple=True, type=int, help="Only these rows (repeatable).")
def replay(statuses, since, log_ids):
    """Put failed or dead rows back in the outbox; the delivery worker sends them again in order. A row a newer
    event of its alert supersedes is skipped, and listed with why."""
    conditions = [IncidentLog.id.in_(log_ids)] if log_ids else []
    if since:
        try:
            conditions.append(IncidentLog.created_at >= parse_since(since, models.utcnow()))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--since") from None
    statuses = statuses or states.REPLAYABLE
    ids = outbox.requeue(db.session, models.utcnow(), *conditions, statuses=statuses)
    skipped = outbox.superseded(db.session, *conditions, statuses=statuses)
    db.session.commit()
    worker.wake()
    click.echo(json.dumps({"requeued": len(ids), "log_ids": ids, "skipped": [
        {"log_id": row.id, "superseded_by": row.newer_id, "reason": row.reason} for row in skipped]}))


@relay_cli.command("prune")
@click.option("--older-than", required=True, help="Age of the rows to delete: 30d, 12h, 2w…")
@click.option("--status", "statuses", multiple=True, type=click.Choice(retention.FINISHED),
              help="Only rows in these states (default: every finished state; open rows are never pruned).")
def prune(older_than, statuses):
    """Delete finished incident_log rows (and their attempts) older than the given age."""
    try:
        before = models.utcnow() - parse_duration(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    db.session.remove()  # the prune writes through the engine; hold no session transaction meanwhile
    deleted = retention.prune(db.engine, before, statuses or retention.FINISHED)
    click.echo(json.dumps({"deleted": deleted, "before": before.isoformat()}))


@relay_cli.command("reconcile")
@click.option("--dry-run", is_flag=True, help="Print what a check would do now; nothing is sent.")
def reconcile_now(dry_run):
    """Ask Alertmanager and Grafana what became of each open alert and print, one JSON line each, what the
    reconciler would do now (docs/reconciler.md); nothing is stored or sent. Exits 1 when a source cannot be read."""
    if not dry_run:
        raise click.UsageError("only --dry-run: the delivery process runs the checks (RELAY_RECONCILE_INTERVAL_SECONDS)")
    db.session.remove()  # the check reads and rolls back through the engine; hold no session transaction meanwhile
    report = reconcile.Reconciler(current_app.config).check(db.engine, models.utcnow(), dry_run=True)
    for finding in report.findings:
        click.echo(json.dumps(finding.line(), ensure_ascii=False))
    for url, problem in report.unavailable.items():
        click.echo(f"relay: cannot read {url}: {problem}", err=True)
    if report.unavailable:
        sys.exit(1)


@relay_cli.command("prepare")
def prepare():
    """Bring the store's schema up to date and say what the relay will do (gunicorn.conf.py runs this once, before
    its workers start)."""
    announce(current_app)


def _schema_first(command):
    """Have a command bring the store's schema up to date (or refuse, in one line) before it runs."""
    run = command.callback

    @functools.wraps(run)
    def checked(*args, **kwargs):
        app = click.get_current_context().ensure_object(ScriptInfo).load_app()
        with app.app_context():
            _ensure_schema(app, command.name)
        return run(*args, **kwargs)

    command.callback = checked


def _ensure_schema(app, command_name: str) -> None:
    """Bring the schema up to date. A store that cannot be reached is an outage, not a mistake: the delivery
    process waits for it (and migrates then), gunicorn's start-up goes on (webhooks get 503 meanwhile), and any
    other command exits STORE_UNAVAILABLE; a schema problem is one line and BAD_CONFIGURATION."""
    outage = failures.Outage(log, "the delivery process waits for it before it starts")
    while True:
        try:
            schema.ensure_current(app)
            outage.recovered()
            return
        except schema.StoreUnreachable as exc:
            if command_name == "worker":
                _wait_beating(app, outage.failed(exc.problem))
                continue
            if command_name == "prepare":
                log.warning("%s; starting anyway: requests that need the store get 503 until it is back, and the "
                            "delivery process brings the schema up to date then", exc)
                return
            click.echo(f"relay: {exc}", err=True)
            sys.exit(STORE_UNAVAILABLE)
        except schema.SchemaError as exc:
            click.echo(f"relay: {exc}", err=True)
            sys.exit(BAD_CONFIGURATION)


def _wait_beating(app, seconds: float) -> None:
    """Wait, touching the delivery heartbeat file each second: waiting for the store is no stall."""
    heartbeat = app.config["RELAY_DELIVERY_HEARTBEAT_FILE"]
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if heartbeat:
            _touch(heartbeat)
        time.sleep(min(left, 1.0))


WITHOUT_STORE = ("check-config", "preview")  # commands that read the configuration only
for _command in relay_cli.commands.values():
    if _command.name not in WITHOUT_STORE:
        _schema_first(_command)


def init_app(app):
    """Register the relay command group."""
    app.cli.add_command(relay_cli)


def main(args=None):
    """The `relay` console command: the relay commands and `db` (migrations), from any folder."""
    commands = {**relay_cli.commands, "db": db_commands}
    console = click.Group("relay", commands=commands, help=relay_cli.help)
    console.main(args=args, prog_name="relay", obj=ScriptInfo(create_app=app_or_exit))
