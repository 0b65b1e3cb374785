"""The configuration from a shell, with no store: check-config, and the events a webhook payload would produce."""
import json
import sys

import click
from flask import current_app
from marshmallow import ValidationError

from relay import accept
from relay.cli.group import relay_cli
from relay.cli.output import error_json
from relay.delivery import heartbeats
from relay.errors import RelayError
from relay.intake import configure, payload


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
        click.echo(json.dumps(error_json(exc), indent=2, ensure_ascii=False))
        sys.exit(2)
    click.echo(json.dumps({"events": events}, indent=2, ensure_ascii=False))


WITHOUT_STORE = (check_config, preview)  # they read the configuration only: no schema check before them
