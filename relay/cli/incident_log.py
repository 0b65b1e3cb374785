"""The incident log from a shell: `relay log` (its table on a terminal), replay, and prune."""
import json
import shutil

import click
from marshmallow import ValidationError

from relay.cli.group import relay_cli
from relay.cli.output import cell, echo_entries, json_option
from relay.delivery import worker
from relay.store import logquery, models, requeue, retention, states
from relay.store.entry import log_entry
from relay.store.models import IncidentLog, db
from relay.timeutil import parse_duration, parse_since

# The log's table on a terminal: (heading, entry field, widest cell); the summary takes the rest of the line.
LOG_COLUMNS = (("ID", "id", 12), ("CREATED (UTC)", "created_at", 19), ("STATUS", "status", 10),
               ("SOURCE", "source", 12), ("ROUTE", "route", 16), ("ACTION", "event_action", 11),
               ("TRIES", "attempts", 5), ("BY", "superseded_by", 12), ("DEDUP KEY", "dedup_key", 32))


@relay_cli.command("log")
@click.option("--limit", default=20, show_default=True, help="How many of the newest rows to show.")
@click.option("--status", default=None, help=f"Only rows in this state ({', '.join(states.STATUSES)}).")
@click.option("--source", default=None, help="Only rows from this source (alertmanager, grafana, generic, api, cli…).")
@click.option("--route", default=None, help="Only rows sent by this route.")
@click.option("--since", default=None, help="Only rows accepted since: 30m, 2h, 7d or an ISO 8601 time.")
@click.option("--dedup-key", default=None, help="Only rows of this dedup key.")
@json_option
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
    echo_entries(entries, as_json, lambda shown: log_table(shown, shutil.get_terminal_size().columns))


def log_table(entries: list[dict], width: int) -> list[str]:
    """Lay log entries out as a table of LOG_COLUMNS and the summary, the summary cut to the terminal's width."""
    rows = [[cell(entry["created_at"].replace("T", " ")[:19] if field == "created_at" else entry[field])
             for _, field, _ in LOG_COLUMNS] + [cell(_summary_cell(entry))] for entry in entries]
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


def _cut(text: str, size: int) -> str:
    """The text, cut to size with an ellipsis."""
    return text if len(text) <= size else text[:size - 1] + "…"


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
    ids = requeue.requeue(db.session, models.utcnow(), *conditions, statuses=statuses)
    skipped = requeue.superseded(db.session, *conditions, statuses=statuses)
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
