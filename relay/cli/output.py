"""What several commands print alike: JSON lines or a table, a table's cells, and the API's error JSON."""
import json
import sys

import click

from relay.errors import RelayError, error_body

json_option = click.option("--json", "as_json", is_flag=True,
                           help="JSON lines even on a terminal (the default elsewhere).")


def echo_entries(entries: list[dict], as_json: bool, table) -> None:
    """Print entries as JSON lines when asked or off a terminal, else as the lines table(entries) lays out."""
    if as_json or not sys.stdout.isatty():
        for entry in entries:
            click.echo(json.dumps(entry, ensure_ascii=False, default=lambda moment: moment.isoformat()))
        return
    for line in table(entries):
        click.echo(line)


def cell(value) -> str:
    """A value as one line of printable text: a summary's control characters must not drive the terminal."""
    return "".join(c if c.isprintable() else " " for c in ("" if value is None else str(value)))


def error_json(exc):
    """The API's error JSON for an exception a payload caused."""
    if isinstance(exc, RelayError):
        return error_body(exc.code, exc.message, exc.fields)
    fields = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
    return error_body("invalid_input", "invalid input", fields)
