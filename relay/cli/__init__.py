"""The relay's commands, as `relay …` (the console command, main) and as `flask --app wsgi relay …`: the
create-incident job from a shell (jobs), the log (incident_log), the configuration (configuration), the processes
(process) and the delivery process's duties (duties). Each module registers its commands on relay_cli."""
import click
from flask.cli import ScriptInfo
from flask_migrate.cli import db as db_commands

from relay.cli import configuration, duties, incident_log, jobs, process  # noqa: F401 (importing registers them)
from relay.cli.group import relay_cli
from relay.startup.process import app_or_exit

for _command in relay_cli.commands.values():
    if _command not in configuration.WITHOUT_STORE:
        process.schema_first(_command)


def init_app(app):
    """Register the relay command group."""
    app.cli.add_command(relay_cli)


def main(args=None):
    """The `relay` console command: the relay commands and `db` (migrations), from any folder."""
    commands = {**relay_cli.commands, "db": db_commands}
    console = click.Group("relay", commands=commands, help=relay_cli.help)
    console.main(args=args, prog_name="relay", obj=ScriptInfo(create_app=app_or_exit))
