"""The create-incident job from a shell: trigger, run-job, acknowledge and resolve, each printing its JSON answer."""
import json
import sys

import click
from flask import current_app
from marshmallow import ValidationError

from relay import incidents
from relay.cli.group import relay_cli
from relay.cli.output import error_json
from relay.delivery import worker
from relay.pagerduty.client import safe_url


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
        click.echo(json.dumps(error_json(exc)))
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
